"""The paper's experiment matrix: 3 encodings × flow/MLP head × 1/6 input notes, plus the baselines.

Steps (each skipped when its output already exists, so an interrupted run continues)::

    OUT/presets.h5            dexed-data import-sysex CORPUS
    OUT/full.h5               render the first --presets presets (paper settings: 6 notes, 3 s + 1 s)
    OUT/data.h5               (--small) the same dataset with reduced spectrograms, from its audio
    OUT/runs/ENC-HEAD-Kn/     preset-model fit, one per cell of the matrix
    OUT/runs/.../eval-test.*  preset-model evaluate on the test split
    OUT/baselines/...         evaluate --baseline knn|mean on a run's split and input notes
    OUT/results.json          every number of the table
    --results FILE            the Markdown table and how it was made (docs/RESULTS-matrix.md)

``--small`` is the CPU preset (2 cores, under an hour on an idle machine): 2,500 presets, mel
spectrograms of 64 bands × 87 frames (hop 1024) instead of 257 × 345, the ``small`` model size,
a few epochs. It shows whether the pipeline works end to end and how the variants rank after
very little training; it cannot reproduce the paper's converged numbers.

Example::

    python tools/experiments.py --small --out /tmp/exp --results docs/RESULTS-matrix.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dexed_data.features import MelConfig, mel_db  # noqa: E402

ENCODINGS = ("num", "numcat", "numcat++")
HEADS = ("flow", "mlp")
NOTES = (1, 6)


@dataclass(frozen=True)
class Plan:
    """One experiment configuration (``--small`` or the paper's, with command-line overrides)."""

    presets: int | None = None            # first N presets of the catalogue; None = all
    reduce_mel: MelConfig | None = None   # derive a dataset with these spectrograms (CPU runs)
    size: str = "paper"
    epochs: int = 400
    batch_size: int = 160
    lr: float = 2e-4
    max_steps: int | None = None          # batches per epoch (None = the whole training set)
    eval_limit: int | None = None         # presets of the test split scored (None = all)
    jobs: int = 2
    encodings: tuple[str, ...] = ENCODINGS
    heads: tuple[str, ...] = HEADS
    notes: tuple[int, ...] = NOTES


SMALL = Plan(presets=2500, reduce_mel=MelConfig(n_mels=64, hop=1024), size="small", epochs=6, batch_size=32,
             lr=5e-4, eval_limit=250)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_cmd(args: list[str]) -> None:
    log("$ " + " ".join(args))
    subprocess.run(args, check=True)


def derive_dataset(src: Path, dst: Path, mel: MelConfig) -> None:
    """Copy dataset ``src`` to ``dst`` with ``/mel`` recomputed from its ``/audio`` with ``mel`` (no audio kept).

    Everything else (presets, status, audibility, ...) is copied; the attributes describe the
    new spectrograms (``mel_config``, ``shapes``, bounds), so models and inference read them as
    from any dataset.
    """
    tmp = dst.with_name(dst.name + ".partial")
    with h5py.File(src, "r") as s, h5py.File(tmp, "w") as d:
        if "audio" not in s:
            raise SystemExit(f"{src} has no /audio to derive spectrograms from; render with --store audio")
        for key in s:
            if key not in ("audio", "mel"):
                s.copy(s[key], d, key)
        audio = s["audio"]
        n, k, t = audio.shape
        frames = 1 + t // mel.hop
        out = d.create_dataset("mel", (n, k, mel.n_mels, frames), np.float16, chunks=(1, k, mel.n_mels, frames))
        usable = (s["status"][:] == 1) & ~s["silent"][:].astype(bool)
        lo, hi = np.inf, -np.inf
        for i in range(n):
            m = mel_db(audio[i].astype(np.float32), mel).astype(np.float16)
            out[i] = m
            if usable[i]:
                lo, hi = min(lo, float(m.min())), max(hi, float(m.max()))
        a = dict(s.attrs)
        shapes = json.loads(a["shapes"])
        shapes.update(mels=mel.n_mels, frames=frames)
        a.update(mel_config=json.dumps(asdict(mel), sort_keys=True), shapes=json.dumps(shapes, sort_keys=True),
                 stored="mel", mel_min_db=lo, mel_max_db=hi,
                 command=str(a.get("command", "")) + f" | tools/experiments.py derive mel {asdict(mel)}")
        d.attrs.update(a)
    os.replace(tmp, dst)


def prepare(args, plan: Plan) -> Path:
    """Catalogue, rendered dataset, and (for --small) the reduced dataset; returns the training dataset."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cat = out / "presets.h5"
    if not cat.exists():
        run_cmd(["dexed-data", "import-sysex", str(args.corpus), "-o", str(cat), "--no-progress"])
    full = out / "full.h5"
    if not full.exists():
        from dexed_data.render import RenderConfig, render_dataset

        store = ("audio",) if plan.reduce_mel else ("audio", "mel")
        log(f"render {plan.presets or 'all'} presets → {full}")
        summary = render_dataset(cat, full, RenderConfig(store=store), jobs=plan.jobs, limit=plan.presets,
                                 progress=False)
        log(summary.format())
    if plan.reduce_mel is None:
        return full
    data = out / "data.h5"
    if not data.exists():
        log(f"derive {data}: mel {plan.reduce_mel}")
        derive_dataset(full, data, plan.reduce_mel)
    return data


def fit_run(data: Path, run: Path, plan: Plan, encoding: str, head: str, notes: int) -> None:
    from preset_model.model import model_config
    from preset_model.train import TrainConfig, fit

    if (run / "last.pt").exists():
        from preset_model.checkpoint import load_checkpoint

        if load_checkpoint(run / "last.pt")["epoch"] + 1 >= plan.epochs:
            return
        resume = True
    else:
        resume = False
    log(f"fit {run.name}")
    cfg = model_config(plan.size, encoding=encoding, head=head, notes=notes)
    fit(data, run, None if resume else cfg,
        TrainConfig(epochs=plan.epochs, batch_size=plan.batch_size, lr=plan.lr, workers=0, device="cpu",
                    max_steps=plan.max_steps),
        resume=resume, progress=False)


def evaluate_to(run: Path, out: Path, plan: Plan, baseline: str | None = None) -> dict:
    from preset_model.evaluate import evaluate, write_report

    js = out.with_name(out.name + ".json")
    if js.exists():
        return json.loads(js.read_text())
    log(f"evaluate {run.name} {baseline or 'model'}")
    report = evaluate(run, baseline=baseline, jobs=plan.jobs, limit=plan.eval_limit)
    write_report(report, out)
    return report


def row_of(report: dict, label: str, fit_s: float | None = None) -> dict:
    return {"label": label, "method": report["method"], **(report["model"] or {}), "presets": report["presets"],
            "num_mae": report["params"]["num_mae"], "cat_accuracy": report["params"]["cat_accuracy"],
            **{k: v["mean"] for k, v in report["audio"].items()}, "fit_s": fit_s,
            "eval_s": report["seconds"]["total"], "silent": report.get("silent_fraction")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="CPU preset: 2,500 presets, reduced spectrograms, small model.")
    p.add_argument("--out", type=Path, default=Path("experiments"), help="Work folder (datasets, runs, reports).")
    p.add_argument("--corpus", type=Path, default=Path(os.environ.get("DEXED_CORPUS", REPO.parent / "shared/corpus/dx7-cc0")))
    p.add_argument("--results", type=Path, default=None, help="Write the Markdown results here (e.g. docs/RESULTS-matrix.md; a file that "
                   "tools/cpu_experiment.py writes, such as docs/RESULTS.md, is refused).")
    p.add_argument("--presets", type=int, help="Override: presets rendered (first N of the catalogue).")
    p.add_argument("--epochs", type=int, help="Override: training epochs per run.")
    p.add_argument("--max-steps", type=int, help="Override: batches per epoch (default: all).")
    p.add_argument("--eval-limit", type=int, help="Override: test presets scored per evaluation.")
    p.add_argument("--jobs", type=int, help="Override: render processes.")
    p.add_argument("--encodings", help="Override: comma-separated subset of num,numcat,numcat++.")
    p.add_argument("--heads", help="Override: comma-separated subset of flow,mlp.")
    p.add_argument("--notes", help="Override: comma-separated subset of 1,6.")
    args = p.parse_args(argv)
    keep = "<!-- end of tools/cpu_experiment.py output"   # that script's file: its kept sections would be lost
    if args.results and args.results.is_file() and keep in args.results.read_text(errors="replace"):
        p.error(f"--results {args.results} is written by tools/cpu_experiment.py (its sections below the marker "
                "would be lost); write this table elsewhere, e.g. docs/RESULTS-matrix.md")
    plan = SMALL if args.small else Plan()
    over = dict(presets=args.presets, epochs=args.epochs, max_steps=args.max_steps, eval_limit=args.eval_limit, jobs=args.jobs,
                encodings=tuple(args.encodings.split(",")) if args.encodings else None,
                heads=tuple(args.heads.split(",")) if args.heads else None,
                notes=tuple(int(x) for x in args.notes.split(",")) if args.notes else None)
    plan = replace(plan, **{k: v for k, v in over.items() if v is not None})
    import torch

    torch.set_num_threads(max(1, plan.jobs))
    t0 = time.time()
    data = prepare(args, plan)
    rows, failures = [], []
    for notes in plan.notes:
        first_run = None
        for encoding in plan.encodings:
            for head in plan.heads:
                name = f"{encoding}-{head}-{notes}n"
                run = args.out / "runs" / name
                t = time.time()
                try:
                    fit_run(data, run, plan, encoding, head, notes)
                    fit_s = _fit_seconds(run)
                    rows.append(row_of(evaluate_to(run, run / "eval-test", plan), name, fit_s))
                    first_run = first_run or run
                except Exception as exc:  # noqa: BLE001 - one failed cell must not lose the others
                    failures.append({"label": name, "error": f"{type(exc).__name__}: {exc}"})
                    log(f"FAILED {name}: {exc}\n{traceback.format_exc()}")
                log(f"{name}: {time.time() - t:.0f} s")
        if first_run is not None:  # baselines use a run's split and input notes (same for all runs)
            for baseline in ("knn", "mean"):
                rep = evaluate_to(first_run, args.out / "baselines" / f"{baseline}-{notes}n", plan, baseline)
                rows.append(row_of(rep, f"{baseline}-{notes}n"))
    results = {"plan": {k: (asdict(v) if isinstance(v, MelConfig) else v) for k, v in asdict(plan).items()},
               "dataset": _dataset_summary(data), "rows": rows, "failures": failures,
               "seconds": time.time() - t0, "hardware": _hardware(), "command": " ".join(sys.argv)}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    log(f"done in {time.time() - t0:.0f} s: {args.out / 'results.json'}")
    if args.results:
        args.results.write_text(markdown(results))   # (checked before the runs: see main's start)
        log(f"wrote {args.results}")


def _fit_seconds(run: Path) -> float | None:
    import csv

    path = run / "metrics.csv"
    if not path.exists():
        return None
    with open(path) as f:
        return float(sum(float(r["time_s"]) for r in csv.DictReader(f)))


def _dataset_summary(data: Path) -> dict:
    from preset_model.data import read_info, read_usable

    info = read_info(data)
    ids, usable, _ = read_usable(data)
    with h5py.File(data, "r") as h5:
        cmd = str(h5.attrs.get("command", ""))
    return {"path": str(data), "presets": info.n_presets, "usable": int(len(usable)), "notes": info.notes,
            "n_mels": info.n_mels, "frames": info.frames, "mel_bounds": info.mel_bounds, "command": cmd}


def _hardware() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def _holds(a: float | None, b: float | None, lower_better: bool = True) -> str:
    if a is None or b is None:
        return "n/a"
    return "yes" if (a < b if lower_better else a > b) else "no"


def markdown(results: dict) -> str:
    """The results table, the orderings checked, and how the numbers were made."""
    rows = results["rows"]
    by = {r["label"]: r for r in rows}
    cols = ("num_mae", "cat_accuracy", "log_spectral_mae", "spectral_convergence", "mfcc13_mae", "mfcc40_mae")
    head = ("run", "num MAE ↓", "cat acc ↑", "log-spec MAE (dB) ↓", "spec. conv. ↓", "MFCC-13 MAE ↓",
            "MFCC-40 MAE ↓", "silent ↓", "fit time (s)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        fit = f"{r['fit_s']:.0f}" if r.get("fit_s") else "—"
        silent = "—" if r.get("silent") is None else f"{r['silent']:.0%}"
        lines.append(f"| {r['label']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + f" | {silent} | {fit} |")
    metrics = ("mfcc40_mae", "log_spectral_mae", "num_mae")
    plan = results["plan"]

    def mean_of(labels, metric):
        vals = [by[l][metric] for l in labels if l in by]
        return float(np.mean(vals)) if len(vals) == len(labels) and vals else None

    def claims(metric):
        """[(claim, values, holds)] of the paper's orderings on ``metric`` (lower is better)."""
        out = []
        for notes in plan["notes"]:
            for head_ in plan["heads"]:
                a, b, c = (by.get(f"{e}-{head_}-{notes}n", {}).get(metric) for e in ENCODINGS)
                ok = "n/a" if None in (a, b, c) else ("yes" if c < b < a else "no")
                out.append((f"NumCat++ < NumCat < Num ({head_}, {notes} note(s))", f"{_fmt(c)} < {_fmt(b)} < {_fmt(a)}", ok))
        for notes in plan["notes"]:
            f = mean_of([f"{e}-flow-{notes}n" for e in plan["encodings"]], metric)
            m = mean_of([f"{e}-mlp-{notes}n" for e in plan["encodings"]], metric)
            out.append((f"flow < MLP ({notes} note(s), mean over encodings)", f"{_fmt(f)} < {_fmt(m)}", _holds(f, m)))
        if 1 in plan["notes"] and 6 in plan["notes"]:
            six = mean_of([f"{e}-{h}-6n" for e in plan["encodings"] for h in plan["heads"]], metric)
            one = mean_of([f"{e}-{h}-1n" for e in plan["encodings"] for h in plan["heads"]], metric)
            out.append(("6 notes < 1 note (mean over encodings and heads)", f"{_fmt(six)} < {_fmt(one)}", _holds(six, one)))
        for notes in plan["notes"]:
            models = [by[l] for l in by if l.endswith(f"-{notes}n") and by[l]["method"] == "model"]
            knn = by.get(f"knn-{notes}n", {}).get(metric)
            if models and knn is not None:
                best = min(models, key=lambda r: r[metric])
                out.append((f"best model < nearest neighbour ({notes} note(s))",
                            f"{best['label']} {_fmt(best[metric])} < {_fmt(knn)}", _holds(best[metric], knn)))
        return out

    table = [claims(m) for m in metrics]
    checks = ["| claim | " + " | ".join(f"{m} | holds" for m in ("MFCC-40 MAE", "log-spectral MAE (dB)", "num MAE")) + " |",
              "|---|" + "---|---|" * len(metrics)]
    for i, (claim, _, _) in enumerate(table[0]):
        checks.append(f"| {claim} | " + " | ".join(f"{t[i][1]} | {t[i][2]}" for t in table) + " |")
    d, hw = results["dataset"], results["hardware"]
    out = ["# Experiment results", "",
           "Generated by `tools/experiments.py`; every number below comes from its `results.json`.", "",
           "## Table", "", f"Test split, first {plan['eval_limit'] or 'all'} presets per row "
           f"({rows[0]['presets'] if rows else 0} scored). Parameter metrics: numerical MAE as a fraction of each "
           "parameter's range after quantization; categorical accuracy. Audio metrics: true and inferred presets "
           f"re-rendered on all {len(d['notes'])} dataset notes (see `preset_model/metrics.py`). "
           "Baselines use the same split and input notes as the model rows with the same note count. "
           "\"silent\": inferred presets near-silent on every note (their spectral convergence is 1).", "",
           *lines, "", "## The paper's orderings at this scale (lower is better on each metric)", "",
           "MFCC-40 MAE is the paper's headline audio metric; log-spectral MAE and the numerical-parameter MAE "
           "are shown beside it because a silent inferred preset still gets a middling MFCC error.", "",
           *checks, "",
           "## What this scale can and cannot show", "",
           f"Each cell trained for {plan['epochs']} epochs on the training folds of {d['usable']} usable presets "
           f"with the `{plan['size']}` model on {d['n_mels']} × {d['frames']} spectrograms; the paper trains "
           "the full model for 400 epochs on ~30k presets with 257 × 347 spectrograms on a GPU. So this table "
           "shows that every cell of the matrix and both baselines run end to end on the same split and are "
           "scored the same way, and where such short training stands against retrieval. Differences between "
           "cells of a few percent are within what another seed or fold could change; an ordering marked \"no\" "
           "here says nothing about the paper's converged result, and one marked \"yes\" is not a replication. "
           "Spectral convergence near 1 and a high silent share mean the inferred presets barely resemble the "
           "targets yet; the nearest-neighbour baseline, which copies a real training preset, is the bar to beat.", "",
           "## How it was made", "",
           f"- command: `{results['command']}`",
           f"- compute: training {sum(r['fit_s'] or 0 for r in rows) / 60:.1f} min (training loops only, summed over "
           f"runs), evaluation {sum(r['eval_s'] for r in rows) / 60:.1f} min (inference + re-rendering, summed); "
           f"this invocation {results['seconds'] / 60:.1f} min wall clock (steps already done by an earlier, "
           "interrupted invocation of the same command are reused, not counted)",
           f"- dataset: `{d['path']}`, {d['presets']} presets ({d['usable']} usable: rendered, not silent), "
           f"notes {list(d['notes'])}, spectrograms {d['n_mels']} × {d['frames']}, bounds "
           f"{d['mel_bounds'][0]:.1f} … {d['mel_bounds'][1]:.1f} dB",
           f"- dataset command: `{d['command']}`",
           f"- plan: {json.dumps(plan)}",
           f"- hardware: {hw['cpu']}, {hw['cores_visible']} cores visible, torch {hw['torch']} "
           f"({hw['torch_threads']} threads), Python {hw['python']}, {hw['platform']}"]
    if results["failures"]:
        out += ["", "## Failed cells", ""] + [f"- {f['label']}: {f['error']}" for f in results["failures"]]
    return "\n".join(out) + "\n"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
