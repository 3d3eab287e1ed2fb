"""The ``preset-model`` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Optional

import typer

from dexed_data.console import cli_file_path, cli_path, one_line
from .errors import PresetModelError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train and use the DAFx 2021 VAE-flow preset model on dexed_data datasets.")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"preset-model {__version__}")
        raise typer.Exit()


@app.callback()
def _group(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """Train and use the DAFx 2021 VAE-flow preset model on dexed_data datasets."""


# --- option checks: every value refused here with one line names its allowed range ----------------

#: Largest --batch-size accepted: more presets than any dataset holds.
MAX_BATCH_SIZE = 1 << 24


def _fail(message: str) -> None:
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    # under torchrun every rank says its own line: marked, so that two lines are not two different errors
    typer.echo(f"error: {f'[rank {rank}] ' if rank != '0' else ''}{one_line(message)}", err=True)
    raise typer.Exit(2)


def _plain(fn, *args, **kwargs):
    """Run a library call; an expected error (ours, dexed_data's, a full disk) becomes one line and exit 2."""
    from dexed_data.errors import DexedDataError

    try:
        return fn(*args, **kwargs)
    except (PresetModelError, DexedDataError) as exc:
        # raised in a DataLoader worker, torch gives it the worker's whole traceback: its last line is ours
        text = str(exc)
        if "\nOriginal Traceback (most recent call last):" in text:
            text = text.rstrip().rpartition("\n")[2].partition(": ")[2] or text
        _fail(text)
    except RuntimeError as exc:
        if type(exc).__name__ == "TerminatedWorkerError":   # a render worker killed from outside (R1: evaluate's
            from dexed_data.render import worker_died          # scoring after its searches was a traceback)

            _fail(worker_died(exc) + "; run the same command again (a --refine search resumes from the sounds or "
                  "presets it finished; use fewer --jobs if the system is short of memory)")
        # torch.distributed's own errors (gloo "Connection closed by peer", a rendezvous that failed): another
        # process of this torchrun job stopped, and its own line says why; not a wall of traceback per rank
        import torch.distributed as dist

        lost = isinstance(exc, getattr(dist, "DistError", ())) or "Connection closed by peer" in str(exc) \
            or "gloo" in str(exc).lower()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and lost:
            _fail("another process of this torchrun job stopped (its own error line says why); fix that and rerun "
                  "the same command (with --resume once an epoch is finished)")
        raise
    except OSError as exc:   # the run folder's disk is full or gone: no traceback for that
        _fail(f"{getattr(exc, 'filename', None) or ''}{': ' if getattr(exc, 'filename', None) else ''}"
              f"{exc.strerror or exc}")


def _in_run_folder(out: Path, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an OSError that names no file (torch's, on a full disk) names the run folder."""
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        # how to go on: --resume once a checkpoint exists (a plain rerun is refused then), else the same command
        import errno

        again = "rerun with --resume" if (Path(out) / "last.pt").is_file() else "run the same command again"
        # what to mend first: space for a full disk (torch's write errors carry no errno: taken as one), the
        # permissions for a refusal (A11: "free space" for a metrics.csv that could not be read)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            mend = "check the permissions of the run folder and its files, then "
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT, None):
            mend = "free space and "
        else:
            mend = ""
        if getattr(exc, "filename", None) is None:
            raise OSError(exc.errno, f"{exc.strerror or exc} (writing the run folder; {mend}{again})",
                          str(out)) from None
        raise OSError(exc.errno, f"{exc.strerror or exc}; {mend}{again}", exc.filename) from None


def _check_device(device: str) -> None:
    import re

    import torch

    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device in ("auto", "cpu"):
        return
    if m is None:
        _fail(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        _fail(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
              "use --device cpu or auto")
    if m[1] is not None and int(m[1]) >= torch.cuda.device_count():
        _fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 … "
              f"cuda:{torch.cuda.device_count() - 1}")


def _check_jobs(jobs: int) -> None:
    from dexed_data.render import MAX_JOBS_PER_CORE

    most = MAX_JOBS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= jobs <= most:
        _fail(f"--jobs {jobs}: must be between 1 and {most} ({MAX_JOBS_PER_CORE} × the CPU cores)")


#: What ``fit`` writes in a run folder: no other command may replace these (reports it wrote itself may be).
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "split.json")


def _looked_at(test) -> bool:
    """``test()`` (``path.is_dir``, ``path.is_file``), where a path that cannot be looked at is one line.

    Python 3.11 raises PermissionError for a path inside a folder that cannot be entered (A12: a
    traceback in match when the run or the first file lay in one)."""
    from dexed_data.inputs import lookup_failure

    try:
        return test()
    except OSError as exc:
        _fail(f"{exc.filename if exc.filename is not None else test.__self__}: cannot be read: {lookup_failure(exc)}")


def _run_files(run: Optional[Path]) -> list[Path]:
    """The files of a run that an output may not replace: the training's own files in the run
    folder (:data:`RUN_FILES` and any other checkpoint ``*.pt``), also when RUN is given as one of
    its checkpoints (``RUN/last.pt``: ``-o RUN/best.pt --force`` replaced the best checkpoint)."""
    if run is None:
        return []
    files = [run]
    try:   # a link to a checkpoint: its run is where the link points (A9: --force replaced last.pt)
        real = run.resolve()
    except (OSError, RuntimeError):   # a loop of links (R13: a traceback); loading it says what is wrong
        real = run
    for folder in dict.fromkeys(p if _looked_at(p.is_dir) else p.parent for p in (run, real)):
        files += [*(folder / n for n in RUN_FILES), *(p for p in folder.glob("*.pt") if p.name not in RUN_FILES)]
    return files


def _check_syx_name(output: Path) -> None:
    from dexed_data.outputs import AUDIO_SUFFIXES, not_a_syx_name

    if output.suffix.lower() in AUDIO_SUFFIXES:   # (re-renders go to --wav: said for these)
        _fail(f"-o {output}: -o is the SysEx file of the voices; give it a .syx name (re-rendered audio goes to "
              "--wav DIR in match)")
    why = not_a_syx_name(output)
    if why:
        _fail(f"-o {output}: {why}")


def _outputs(paths: list[Path], inputs: list, force: bool, leftovers=()) -> None:
    from dexed_data.outputs import check_output

    _plain(lambda: [check_output(p, inputs=inputs, force=force, leftovers=leftovers) for p in paths])


#: The largest --refine budget: ~27 renders/s on one core, so about an hour per sound.
MAX_REFINE = 100_000

#: Seeds: 0 … 2^32 − 1. Torch's CPU generator keeps 32 bits of a seed, so larger ones trained the
#: same run as a smaller one (0 and 2^32 gave byte-identical runs).
MAX_SEED = 2**32 - 1


def _check_refine(refine: int) -> None:
    if not 0 <= refine <= MAX_REFINE:
        _fail(f"--refine {refine}: must be 0 (no search) or a number of renders up to {MAX_REFINE:,} "
              "(about an hour per sound on one core)")


def _check_seed(seed: Optional[int]) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        _fail(f"--seed {seed}: must be between 0 and {MAX_SEED}")


FORCE = typer.Option(False, "--force", help="Replace existing output files (never an input).")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Progress on stderr: a bar on a terminal, a line every 30 s in a log.")


@app.command()
def fit(
    data: Path = typer.Option(..., "--data", readable=False, parser=cli_path, help="dataset.h5 written by `dexed-data render`."),
    out: Path = typer.Option(..., "--out", readable=False, parser=cli_path, help="Run folder: checkpoints, metrics.csv, split.json."),
    encoding: Optional[str] = typer.Option(None, help="Preset encoding: numcat++ (default) | numcat | num."),
    head: Optional[str] = typer.Option(None, help="Regression head: flow (default) | mlp."),
    notes: Optional[int] = typer.Option(None, help="Input notes per preset: every note the dataset was rendered on (the default: 6, the paper's, for a dataset rendered on its six notes), or 1 (MIDI 60, vel 85)."),
    size: Optional[str] = typer.Option(None, help="Model size: paper (default) | small | tiny."),
    epochs: Optional[int] = typer.Option(None, help="Total epochs (default 400; a resumed run continues up to this "
                                                    "number, by default its own)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size, split across processes (default 160)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (default 2e-4)."),
    fold: Optional[int] = typer.Option(None, help="Validation fold 0-4 (default 0); 20% of presets are the test set."),
    seed: Optional[int] = typer.Option(None, help="Seed of init, shuffling and latent noise (default 0)."),
    workers: int = typer.Option(2, help="DataLoader worker processes per training process."),
    device: str = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda | cuda:N."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA (ignored on CPU; "
                                       "default on, or the run's own setting with --resume)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop each epoch after this many batches (smoke runs)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    progress: bool = PROGRESS,
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates",
                                         help="Also train on presets that render identically to an earlier one."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes",
                                                help="Stop after this many minutes of training (summed over --resume)."),
    in_memory: Optional[bool] = typer.Option(None, "--in-memory/--from-disk",
                                             help="Hold the spectrograms in RAM (default: when they fit in 1/4 of free RAM)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Adam weight decay (default 1e-4)."),
    warmup_epochs: Optional[int] = typer.Option(None, "--warmup-epochs", help="LR warm-up epochs from 0.1x (default 6)."),
    plateau_patience: Optional[int] = typer.Option(None, "--plateau-patience",
                                                   help="Epochs without improvement before the LR is cut by 5 (default 6)."),
    plateau_cooldown: Optional[int] = typer.Option(None, "--plateau-cooldown",
                                                   help="Epochs after an LR cut before the next can happen (default 6)."),
    beta: Optional[float] = typer.Option(None, "--beta",
                                         help="KL weight β reached after the β warm-up, which starts at β/2 (default 0.2)."),
    anneal: Optional[float] = typer.Option(None, "--anneal",
                                           help="Last fraction of the run (of --max-minutes if given, else of --epochs) "
                                                "over which the LR falls to 0 along a half cosine (default 0: off)."),
    num_loss: Optional[str] = typer.Option(None, "--num-loss",
                                           help="Loss of the numerical parameters: mse (the paper's, default) | l1."),
) -> None:
    """Train the VAE-flow preset model; defaults are the paper's. Run under `torchrun` for several GPUs/nodes."""
    import math
    from dataclasses import replace

    if epochs is not None and epochs < 1:
        _fail(f"--epochs {epochs}: must be ≥ 1")
    if notes is not None and notes < 1:
        _fail(f"--notes {notes}: must be 1 (MIDI 60, vel 85) or the number of notes the dataset was rendered on (6)")
    if batch_size is not None and batch_size < 2:
        _fail(f"--batch-size {batch_size}: must be ≥ 2 (batch normalisation needs two presets in a batch)")
    if batch_size is not None and batch_size > MAX_BATCH_SIZE:   # past sys.maxsize torch's sampler raised
        _fail(f"--batch-size {batch_size}: must be at most {MAX_BATCH_SIZE:,} (a batch larger than the training "
              "set is the training set)")
    if lr is not None and not (math.isfinite(lr) and 0 < lr <= 1):
        _fail(f"--lr {lr}: must be a finite number > 0 and ≤ 1")
    if workers < 0 or workers > 4 * (os.cpu_count() or 1):
        _fail(f"--workers {workers}: must be between 0 and {4 * (os.cpu_count() or 1)} (4 × the CPU cores)")
    if fold is not None and not 0 <= fold <= 4:
        _fail(f"--fold {fold}: must be 0–4")
    if max_steps is not None and max_steps < 1:
        _fail(f"--max-steps {max_steps}: must be ≥ 1")
    if beta is not None and not (math.isfinite(beta) and 0 <= beta <= 10):
        _fail(f"--beta {beta}: must be a number between 0 and 10")
    if anneal is not None and not (math.isfinite(anneal) and 0 <= anneal <= 1):
        _fail(f"--anneal {anneal}: must be a fraction between 0 and 1")
    from .train import NUMERICAL_LOSSES

    if num_loss is not None and num_loss not in NUMERICAL_LOSSES:
        _fail(f"--num-loss {num_loss!r}: choose {' or '.join(NUMERICAL_LOSSES)}")
    _check_device(device)
    _check_seed(seed)
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file; give a run folder")
    from .model import SIZES

    if size is not None and size not in SIZES:   # --resume --size huge was ignored
        _fail(f"--size {size!r}: choose {', '.join(SIZES)}")

    from .model import model_config
    from .train import TrainConfig, fit as fit_model

    model_args = {k: v for k, v in dict(encoding=encoding, head=head, notes=notes).items() if v is not None}
    train_args = {k: v for k, v in dict(batch_size=batch_size, lr=lr, fold=fold, seed=seed, weight_decay=weight_decay,
                                        warmup_epochs=warmup_epochs, plateau_patience=plateau_patience,
                                        plateau_cooldown=plateau_cooldown, anneal_fraction=anneal,
                                        numerical_loss=num_loss).items()
                  if v is not None}
    if beta is not None:
        train_args.update(beta=beta, beta_start=beta / 2)
    if keep_duplicates:
        train_args["keep_duplicates"] = True
    base, model_cfg = TrainConfig(), None
    if resume:  # options not given keep the checkpoint's values; given ones must agree with it (checked in fit)
        from .checkpoint import load_checkpoint, model_config as saved_model_config, train_config
        from .train import settle_run_folder

        # a kill between the renames of an epoch (the first one included): its files first, on every rank alike
        _plain(settle_run_folder, out, int(os.environ.get("RANK", "0")))
        ckpt = _plain(load_checkpoint, out / "last.pt")
        base = _plain(train_config, ckpt, out / "last.pt")
        saved = _plain(saved_model_config, ckpt, out / "last.pt")
        if size:   # a size sets all its fields ("paper" is the defaults; --size paper on a tiny run was ignored)
            sized = model_config(size)
            differ = sorted({k for fields in SIZES.values() for k in fields if getattr(sized, k) != getattr(saved, k)})
            if differ:
                _fail(f"--resume --size {size}: this run's model has another size ({', '.join(differ)} differ); a run "
                      "keeps its size: resume without --size, or train this size in another --out")
        if model_args:
            model_cfg = replace(saved, **model_args)
    else:
        if notes is None:   # a dataset rendered on 60:85 alone trains a one-note model without being told
            from .data import read_info

            model_args["notes"] = len(_plain(read_info, data).notes)
        model_cfg = model_config(size or "paper", **model_args)
    # the run's length and budget: as given, else (on --resume) the checkpoint's (a plain --resume
    # reset --epochs to 400 and dropped --max-minutes and --max-steps); the machine's settings as given
    length = {k: v for k, v in dict(epochs=epochs, max_steps=max_steps, max_minutes=max_minutes).items() if v is not None}
    cfg = _plain(replace, base, workers=workers, device=device, amp=base.amp if amp is None else amp,
                 in_memory=in_memory, **length, **train_args)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:   # one fit per run folder (torchrun: rank 0 holds it for all)
        from dexed_data.render import JobLock

        blocker = next((p for p in out.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            _fail(f"--out {out}: {blocker} is a file, not a folder; choose another --out")
        _plain(lambda: out.parent.mkdir(parents=True, exist_ok=True))
        lock = JobLock(out, what="fit", hint=" (with --resume to continue its run)")
        _plain(lock.__enter__)
        from dexed_data.outputs import remove_stale_temps

        remove_stale_temps(out)   # what a killed fit of this run left half-written
    try:
        result = _plain(_in_run_folder, out, fit_model, data, out, model_cfg, cfg, resume=resume, progress=progress)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    if int(os.environ.get("RANK", "0")) == 0:
        missing = [n for n in ("last.pt", "best.pt", "metrics.csv") if not (out / n).is_file()]
        if missing:   # e.g. a resumed run that had nothing left to do after a failed save
            _fail(f"{out}: training ended but {', '.join(missing)} is missing (a save failed, e.g. on a full "
                  "disk, or no epoch gave a finite validation loss); free space and rerun with --resume and a "
                  "higher --epochs")
        why = ("time budget spent" if result.out_of_time
               else f"{result.epoch + 1} epoch{'s' if result.epoch + 1 != 1 else ''}")
        if resume and result.first_epoch > result.epoch and not result.out_of_time:   # A11: unexplained
            typer.echo(f"note: the run already has {result.epoch + 1} finished epoch(s), as many as --epochs "
                       f"{cfg.epochs} asks or more: nothing was trained; give a higher --epochs to continue it",
                       err=True)
        typer.echo(f"done ({why}): best validation parameter loss {result.best_valid:.4f} (num + 0.2·cat); "
                   f"checkpoints in {result.out}")
        train_n, valid_n, test_n = result.split_sizes
        import h5py

        with h5py.File(data, "r") as h5:
            measured = bool(h5.attrs.get("operators", True))
        if not measured:
            typer.echo("note: the dataset has no operator levels (rendered with --no-operators or through a "
                       "plug-in), so no parameter loss was masked by audibility", err=True)
        if not test_n:
            typer.echo(f"note: the test split is empty ({train_n} training and {valid_n} validation presets): too few "
                       "presets or near-copy groups for one; `preset-model evaluate` needs --split valid", err=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the ``folders`` (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


#: Suffix of the file beside ``evaluate``'s output that keeps its refined presets until it is done.
REFINE_JOURNAL = ".refine-partial.jsonl"


def _leftovers(out: Path) -> list[Path]:
    """The journal and lock of a run of evaluate or match on ``out``: a rerun that finds that run's
    files put in place (it was killed between them) removes them, as that run would have."""
    from dexed_data.render import JobLock

    return [out.with_name(out.name + REFINE_JOURNAL), JobLock(out).path]


@app.command()
def evaluate(
    run: Path = typer.Argument(..., readable=False, parser=cli_path, help="Run folder written by `preset-model fit` (or a checkpoint .pt)."),
    data: Optional[Path] = typer.Option(None, "--data", readable=False, parser=cli_path, help="Dataset (default: the one the run was trained on, at "
                                        "its recorded path or beside the run folder)."),
    split: str = typer.Option("test", "--split", help="test | valid | train: the run's saved split."),
    baseline: Optional[str] = typer.Option(None, "--baseline",
                                           help="Evaluate a baseline instead of the model: knn | mean | median "
                                                "(numerical parameters at their training mean or median, "
                                                "categorical ones at their mode)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Processes re-rendering presets."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N presets of the split."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="best.pt (the default) | last.pt: which of "
                                             "the run folder's checkpoints (RUN given as a .pt file is that one)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          readable=False, parser=cli_file_path("eval"), help="Report path without extension (default RUN/eval-SPLIT[-CKPT][-BASELINE][-refineN]; -CKPT names a checkpoint other than best.pt: -last for last.pt)."),
    refine: int = typer.Option(0, "--refine", help="Refine each inferred preset by a search of N renders against the "
                                                   "true sound (candidates: it, the nearest training presets)."),
    progress: bool = PROGRESS,
    force: bool = FORCE,
) -> None:
    """Parameter and audio metrics on a split; writes OUTPUT.json and OUTPUT.md."""
    from .evaluate import evaluate as run_evaluation, report_notes, write_report

    if limit is not None and limit < 1:
        _fail(f"--limit {limit}: must be ≥ 1")
    _check_refine(refine)
    _check_jobs(jobs)
    if checkpoint is not None and run.is_file():   # it was ignored: the .pt given was scored, labelled as the option
        _fail(f"--checkpoint {checkpoint} picks a checkpoint of a run folder, and {run} is a checkpoint file: give "
              f"the folder with --checkpoint, or the checkpoint file alone")
    if checkpoint == "":   # an empty value (an unset shell variable) ran as best.pt
        _fail('--checkpoint "": give best.pt or last.pt')
    checkpoint = checkpoint or "best.pt"
    if checkpoint not in ("best.pt", "last.pt"):   # a path would be unpickled as a checkpoint
        _fail(f"--checkpoint {checkpoint!r}: use best.pt or last.pt (the run's own checkpoints); to evaluate "
              "another checkpoint file, give its path as RUN")
    folder = run if run.is_dir() else run.parent
    if output is not None and (output.name in ("", ".", "..") or output.is_dir()):
        _fail(f"-o {output} is a folder; give a file name without extension (OUT.json and OUT.md are written), "
              f"e.g. -o {output / 'eval'}")
    # a checkpoint other than best.pt is named in the report's (audit Y9, R4: it replaced best.pt's report)
    scored = run.name if run.is_file() else checkpoint
    tag = "" if scored == "best.pt" else f"-{Path(scored).stem}"
    out = output or folder / (f"eval-{split}" + tag + (f"-{baseline}" if baseline else "")
                              + (f"-refine{refine}" if refine else ""))
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    js, md = out.with_name(out.name + ".json"), out.with_name(out.name + ".md")
    _outputs([js, md], [*_run_files(run), data], force, _leftovers(out))   # before the (long) evaluation
    # the refined presets as they are done: an interrupted --refine evaluation resumes from them
    journal = out.with_name(out.name + REFINE_JOURNAL) if refine else None
    from dexed_data.render import JobLock

    # one evaluation per output from start to end: a second one started while the first scores its
    # presets (after its journal is closed) found the journal, then lost it when the first removed it
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]   # removed again if nothing is written
    _plain(lambda: out.parent.mkdir(parents=True, exist_ok=True))
    lock = JobLock(out, what="evaluation", hint="")
    try:
        _plain(lock.__enter__)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        _outputs([js, md], [*_run_files(run), data], force)   # again, now that no other evaluation can write them
        report = _plain(run_evaluation, run, data, split, baseline, jobs, limit, checkpoint, refine=refine,
                        progress=progress, journal=journal)
        _plain(write_report, report, out, last=True)   # both, or neither; a signal after them changes nothing
        if journal is not None:
            journal.unlink(missing_ok=True)
    finally:
        lock.__exit__(None, None, None)
        _remove_empty(made)   # a failed evaluation leaves no folder it made (a journal in it keeps it)
    typer.echo(f"{report['method']} on {report['presets']} {split} presets: "
               f"num MAE {report['params']['num_mae']:.4f}, cat acc {report['params']['cat_accuracy']:.4f}, "
               + ", ".join(f"{k} {v['mean']:.4f}" for k, v in report["audio"].items())
               + f"; {report['silent_fraction']:.0%} of inferred presets silent")
    for note in report_notes(report):
        typer.echo(note, err=True)
    typer.echo(f"wrote {js} and {md}")


@app.command()
def match(
    paths: list[Path] = typer.Argument(..., metavar="[RUN] FILES...",
                                       readable=False, parser=cli_path, help="Run folder (or checkpoint .pt), unless --data alone is given; then "
                                            "audio files (WAV/FLAC/OGG/AIFF; any rate, length, channels)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_file_path("voice.syx"), help=".syx to write: one voice → single-voice dump, more → bank."),
    wav: Optional[Path] = typer.Option(None, "--wav", readable=False, parser=cli_path, help="Write each file's re-rendered note to DIR/STEM.rerender.wav."),
    each: bool = typer.Option(False, "--each", help="Every file is its own sound (its note from its name, else 60:85)."),
    gain_db: str = typer.Option("0", "--gain-db", help="Gain in dB applied to the inputs (they should be at Dexed's "
                                "output level), or 'auto': each sound's loudest file brought to a typical voice's "
                                "peak (-14.5 dBFS), for normalised recordings."),
    data: Optional[Path] = typer.Option(None, "--data", readable=False, parser=cli_path, help="Without RUN: the dataset whose training presets are "
                                        "matched. With RUN: not needed (the run holds its render settings; older "
                                        "runs: the dataset they were trained on, if it moved)."),
    refine: int = typer.Option(0, "--refine", help="Search N renders for a better voice from the model's voice, the "
                                                   "nearest training presets and samples around them (0: no search)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Processes rendering the search's voices."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search (same seed, same voice)."),
    noise_floor: bool = typer.Option(False, "--noise-floor", help="With --refine: compare sounds above the "
                                     "recording's own noise floor (hiss, 8-bit), so the search does not try to "
                                     "reproduce the noise (match suggests it when it hears one)."),
    progress: bool = PROGRESS,
    force: bool = FORCE,
) -> None:
    """Infer DX7 voices from recordings, write them as .syx, re-render and score each file.

    Files are mixed to mono, resampled and trimmed/zero-padded to the model's note length.
    Needs only the run folder (its checkpoint holds the render settings).

    A 1-note model makes one voice per file; a file named by a note (bass_40-85.wav) is that
    note, pitch-shifted to the model's note. A K-note model (notes printed first) takes, per sound:

    - files named by note, e.g. piano_40-85.wav (as `dexed-data export-wav` names them): any of the K notes, any order
    (a note that is not the model's stands for the nearest of them, pitch-shifted to it);

    - or K files not named by note, in the model's note order;

    - or one file, taken as note 60:85 (shifted to the model's nearest note if 60:85 is not one).

    Missing notes are filled by pitch-shifting the given note nearest in pitch.

    Scores per file (re-render on the file's note vs the file): similarity = 1 - spectral
    convergence of the magnitude spectrograms (1 = identical, 0 = an error as large as the input;
    never below 0); log-spectral MAE = mean |dB difference| of the spectrograms (0 = identical);
    pitch offset = re-render vs input, cents, measured within ±600 (where the partials line up best; a
    voice whole octaves off can read near 0, since its partials overlap the input's); level = re-render RMS relative to the input's, dB
    (a warning when it is more than 20 dB quieter: the scores then compare with near-silence).

    Without RUN, --data DATASET matches from the dataset's training presets: the nearest one by spectrogram,
    or with --refine N a search from the nearest ones (distance: preset_model/refine.py).
    """
    from math import isinf, isnan

    from dexed_data.features import SILENT_THRESHOLD_DB
    from dexed_data.outputs import check_folder, together

    from .inference import load_run
    from .match import (AUTO_PEAK_DB, LOUD_PEAK_DB, PITCH_RANGE_CENTS, channels_cancel, match_files, named_note,
                        not_a_note, parse_gain, rerender_names, write_syx, write_wavs)
    from .refine import MOVED, NOISE_HINT_DB

    # a folder first is the run, unless --data is given and it holds no checkpoint (a folder of recordings)
    run = paths[0] if paths and (paths[0].suffix == ".pt" or _looked_at(paths[0].is_dir) and (
        data is None or any(_looked_at((paths[0] / c).is_file) for c in ("best.pt", "last.pt")))) else None
    files = paths[1:] if run is not None else paths
    if not files:
        _fail("give the audio files to match (after RUN, if any)")
    if run is None and data is None:
        _fail(f"{paths[0]} is not a run folder or checkpoint: give RUN first, or --data DATASET "
              f"to match from a dataset's presets alone")
    _check_refine(refine)
    if noise_floor and refine <= 0:
        _fail("--noise-floor applies to the search: give --refine N too (e.g. --refine 300)")
    _check_jobs(jobs)
    gain = _plain(parse_gain, gain_db)
    _check_seed(seed)
    _outputs([output], [*files, *_run_files(run), data], force, _leftovers(output))
    if wav is not None:
        if wav.resolve() == output.resolve():
            _fail(f"--wav {wav} is the -o file; give --wav a folder of its own")
        _plain(check_folder, wav, rerender_names(files), force=force, inputs=[*files, output, *_run_files(run), data])
    for f in files:
        why = not_a_note(f)
        if why:
            typer.echo(f"note: {f} {why}; the file is taken as not named by a note", err=True)
    loaded = _plain(load_run, run, data=data) if run is not None else None
    if loaded is not None and loaded.dataset is not None:   # the dataset the run found itself is read too
        _outputs([output], [loaded.dataset], force)
    _check_syx_name(output)   # after the inputs: "is also an input" says more
    if loaded is not None:
        typer.echo("model notes (pitch:velocity, in order): " + ", ".join(f"{p}:{v}" for p, v in loaded.input_notes))
        if refine > 0 and loaded.dataset is None:
            typer.echo(f"note: {loaded.dataset_error or 'the run’s dataset was not found'}; so --refine starts from "
                       "the model's voice alone, without the nearest training presets (the better half of its "
                       "candidates): pass --data DATASET", err=True)
    # with --refine, each sound's search is kept as it is done: an interrupted match resumes from them,
    # and one match per output holds a lock from its first search until its files are written
    journal = output.with_name(output.name + REFINE_JOURNAL) if refine > 0 else None
    made = [p for p in [output.parent, *output.parent.parents] if not p.exists()] if journal is not None else []
    if journal is not None:
        _plain(lambda: output.parent.mkdir(parents=True, exist_ok=True))
    from dexed_data.render import JobLock

    lock = JobLock(output, what="match", hint="") if journal is not None else contextlib.nullcontext()
    try:
        _plain(lock.__enter__)
        try:
            _outputs([output], [*files, *_run_files(run), data], force)   # again, now that no other match writes it
            result = _plain(match_files, loaded, files, each=each, gain_db=gain, data=data, refine=refine, jobs=jobs,
                            seed=seed, progress=progress and refine > 0, journal=journal, noise_floor=noise_floor)
            notes = loaded.input_notes if loaded is not None else tuple(tuple(n) for n in result.notes)
            if loaded is None:
                typer.echo("dataset notes (pitch:velocity, in order): " + ", ".join(f"{p}:{v}" for p, v in notes))
            with together(last=True):   # the voice and its re-renders, all or none; a signal after them changes nothing
                _plain(write_syx, output, [v.raw for v in result.voices], [v.name for v in result.voices])
                paths = _plain(write_wavs, result, wav) if wav is not None else []
            if journal is not None:
                journal.unlink(missing_ok=True)
        finally:
            lock.__exit__(None, None, None)
    finally:
        _remove_empty(made)   # a failed match leaves no folder it made (a journal in it keeps it)
    for v in result.voices:
        given = {tuple(s.model_note) for s in v.scores}   # a file played on 62:85 gives the model's 60:85
        filled = [f"{p}:{q}" for p, q in notes if (p, q) not in given]
        if loaded is None or len(notes) == 1:
            filled = []   # a 1-note model's input is its file, shifted if named by another note
        note = f" (notes {', '.join(filled)} filled by pitch-shifting)" if filled else ""
        typer.echo(f"voice {v.name.strip()!r}{note}")
        if v.embedded:
            typer.echo("  note: this voice has a sample-and-hold LFO that can be heard, which the plug-in cannot "
                       "reset; it was re-rendered by the embedded dexed engine (the plug-in's sound from a clean "
                       "state; in Dexed its LFO's random steps differ each time it is played)", err=True)
        if gain == "auto" and v.peak_db < SILENT_THRESHOLD_DB:
            typer.echo(f"  gain {v.gain_db:+.1f} dB (auto: near-silent input, left at its level)")
        elif gain == "auto":
            typer.echo(f"  gain {v.gain_db:+.1f} dB (auto: the loudest file's peak brought to {AUTO_PEAK_DB:g} dBFS)")
        elif v.peak_db > LOUD_PEAK_DB:
            typer.echo(f"  note: its input peaks at {v.peak_db:.1f} dBFS, louder than almost any DX7 voice "
                       f"(a typical one peaks near {AUTO_PEAK_DB:g}); for a normalised recording, --gain-db auto "
                       "matches at a voice's level", err=True)
        if v.search is not None and not noise_floor and v.noise_floor_db > NOISE_HINT_DB:
            typer.echo(f"  note: its input has a noise floor near {v.noise_floor_db:.0f} dB (hiss, or few bits), which "
                       "the search tried to reproduce; --noise-floor compares sounds above it", err=True)
        if v.search is not None:
            r = v.search
            parts = [f"{what} {_distance(d)}" for what, d in (("model", r.candidate("model")),
                                                               ("nearest preset", r.candidate("nearest-1")))
                     if d is not None]
            moved = min(((d, k) for k, d in r.candidates if MOVED in k), default=None)
            if moved and moved[0] < min(d for k, d in r.candidates if MOVED not in k):
                parts.append(f"moved onto the input's pitch {moved[0]:.2f} ({moved[1]})")   # the search began there
            typer.echo("  distance (lower is better): " + ", ".join(parts + [f"refined {r.distance:.2f}"])
                       + f"; {r.renders} renders in {r.seconds:.1f} s")
        for s in v.scores:
            if s.shift_semitones:
                how = "from its name" if named_note(s.file) else "taken as played"
                owner = "model's" if loaded is not None else "dataset's"
                typer.echo(f"  {s.file}: note {s.note[0]}:{s.note[1]} {how}, pitch-shifted {s.shift_semitones:+d} "
                           f"semitones to the {owner} note {s.model_note[0]}:{s.model_note[1]}"
                           + (" for the search" if v.search is not None else ""))
            pitch = f"pitch offset {s.pitch_offset_cents:+.1f} cents"
            if abs(s.pitch_offset_cents) >= PITCH_RANGE_CENTS:   # the edge of the range searched
                pitch = f"pitch offset {'above +' if s.pitch_offset_cents > 0 else 'below -'}{PITCH_RANGE_CENTS:g} cents"
            if isnan(s.pitch_offset_cents):   # a click or a noise burst has no pitch either (A12: "input near-silent")
                pitch = "pitch offset n/a (" + ("re-render near-silent" if s.rerender_silent else "input near-silent"
                                                if s.input_silent else "no pitch to measure") + ")"
            silent_input = isnan(s.level_db) or (isinf(s.level_db) and s.level_db > 0)
            level = "level silent" if isinf(s.level_db) and s.level_db < 0 else f"level {s.level_db:+.1f} dB"
            if silent_input:
                level = "level n/a (silent input)"
            typer.echo(f"  {s.file}  note {s.note[0]}:{s.note[1]}  similarity {s.similarity:.3f}  "
                       f"log-spectral MAE {s.log_spectral_mae:.2f} dB  {pitch}  {level}")
            if silent_input:
                cancel = channels_cancel(s.file)
                typer.echo(f"  note: {s.file} is silent (all zeros) on this note" + (
                    " once its channels are mixed to mono: they are of opposite polarity and cancel; give one "
                    "channel of it" if cancel else ": any voice matches it as well as another; give a recording of "
                    "the sound"), err=True)
            elif s.input_silent:   # noise, dither, or stereo channels that cancel in the mono mix (audit Z17)
                typer.echo(f"  note: {s.file} is near-silent on this note (its peak is below {SILENT_THRESHOLD_DB:g} "
                           "dBFS): the voice is matched to noise; give a recording of the sound (a stereo file is "
                           "mixed to mono: channels of opposite polarity cancel)", err=True)
            if s.much_quieter:
                how = "silent (all zeros)" if isinf(s.level_db) else f"{-s.level_db:.1f} dB quieter than the input (RMS)"
                # the level hint only for a loud input (as the note above); a quiet one points elsewhere
                hint = (" (for a recording normalised near 0 dBFS, try --gain-db auto)"
                        if gain != "auto" and v.peak_db > LOUD_PEAK_DB else "")
                typer.echo(f"  warning: the re-render of {s.file} is {how}; the inferred voice barely sounds on "
                           f"this note, so its scores compare the input with near-silence{hint}", err=True)
    typer.echo("(similarity: 1 − spectral convergence, 1 = same spectrogram, 0 = error as large as the input; "
               "log-spectral MAE: mean |dB difference|, 0 = same; level: re-render RMS re the input's; "
               "see `preset-model match --help`)")
    kind = "single voice" if len(result.voices) == 1 else f"bank of {len(result.voices)} voices"
    typer.echo(f"wrote {output} ({kind})")
    if wav is not None:
        typer.echo(f"wrote {len(paths)} re-render(s) to {wav}/")


@app.command()
def interpolate(
    run: Path = typer.Argument(..., readable=False, parser=cli_path, help="Run folder (or checkpoint .pt) with the flow head."),
    a: str = typer.Argument(..., help="First voice, FILE.syx:N (N from 1, counted across the file's "
                                         "messages; a single-voice file needs no :N)."),
    b: str = typer.Argument(..., help="Last voice, FILE.syx:N (N from 1, counted across the file's "
                                         "messages; a single-voice file needs no :N)."),
    steps: int = typer.Option(8, "--steps", help="Voices in the bank, both ends included (2-32)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_file_path("path.syx"), help="Bank .syx to write."),
    data: Optional[Path] = typer.Option(None, "--data", readable=False, parser=cli_path, help="Not needed: the run holds its render settings "
                                        "(older runs: the dataset they were trained on, if it moved)."),
    force: bool = FORCE,
) -> None:
    """Voices on the straight latent path from A to B (inverse regression flow), written as a bank."""
    from .interpolate import interpolate as morph, read_voice
    from .match import write_syx

    if not 2 <= steps <= 32:
        _fail(f"--steps {steps}: must be between 2 and 32 (one DX7 bank)")
    _outputs([output], [a.rpartition(":")[0] or a, a, b.rpartition(":")[0] or b, b, *_run_files(run), data], force)
    _check_syx_name(output)
    va, vb = _plain(read_voice, a), _plain(read_voice, b)
    m = _plain(morph, run, va, vb, steps, data)
    _plain(write_syx, output, m.raw, m.names)
    from dexed_data.access import printable_name

    # a name's control bytes as `list` shows them (audit A4: a newline and ESC went to the terminal)
    typer.echo(f"{va.source} ({printable_name(va.name).strip()}) → {vb.source} ({printable_name(vb.name).strip()}): "
               f"{steps} voices in {output}")
    from dexed_data.schema import FIXED_TRANSPOSE

    said: set[str] = set()   # both voices from one damaged file: its notes once
    for label, voice, missed in (("first", va, m.endpoint_errors[0]), ("last", vb, m.endpoint_errors[1])):
        moved = voice.transpose - FIXED_TRANSPOSE
        for repair in voice.repairs:
            if repair not in said:
                typer.echo(f"  note: {repair}", err=True)
                said.add(repair)
        read = " as read (see the notes above)" if voice.repairs else ""
        if missed == 0 and not moved:
            typer.echo(f"  the {label} voice reproduces {voice.source}{read} exactly")
            continue
        typer.echo(f"  the {label} voice reproduces the 144 learnable parameters of {voice.source}{read} exactly"
                   if missed == 0 else
                   f"  the {label} voice differs from {voice.source} in {missed} of its 144 learnable parameters "
                   f"(the latent round trip is not exact for it)")
        if moved:
            typer.echo(f"    its TRANSPOSE is {FIXED_TRANSPOSE} (the model's fixed value, every voice of the bank has "
                       f"it) where {voice.source} has {voice.transpose}: it plays {abs(moved)} semitones "
                       f"{'lower' if moved > 0 else 'higher'} than {voice.source}")


def _distance(d: float) -> str:
    """A search distance as ``match`` prints it: a silent voice (or one the engine refused) has none."""
    return f"{d:.2f}" if math.isfinite(d) else "silent (no distance)"


def main() -> None:
    """Console entry point: expected errors become one line and exit 2; signals, closed streams
    and a deleted current folder are handled as :mod:`dexed_data.console` says."""
    from dexed_data.console import run
    from dexed_data.errors import DexedDataError

    run(app, (PresetModelError, DexedDataError))


if __name__ == "__main__":
    main()
