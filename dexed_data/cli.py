"""The ``dexed-data`` command line: parses arguments and calls library functions, nothing more.

Each command's work lives in the module named after it; everything here is callable from Python.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .console import cli_file_path, cli_path, one_line
from .errors import DexedDataError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn DX7 SysEx collections into a clean, rendered HDF5 dataset.")

#: The ``--ids`` help shared by every command that takes ids (one syntax: dexed_data.ids.parse_ids).
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Progress on stderr: a bar on a terminal, a line every 30 s in a log.")
IDS_HELP = "Comma-separated preset ids (16 hex digits, see `dexed-data list`), or a file listing ids."


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"dexed-data {__version__}")
        raise typer.Exit()


@app.callback()
def _group(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """Turn DX7 SysEx collections into a clean, rendered HDF5 dataset."""


# --- import-sysex, export, info: owned by dexed_data.importer, .export, .info -----------------------------------


def _plain_errors(fn, *args, **kwargs):
    """Run a library call; a DexedDataError becomes one ``error: ...`` line and exit status 2.

    Done here as well as in :func:`main` so that typer never shows a rich traceback for an
    expected error, also when the app is invoked directly (``CliRunner``, ``app()``).
    """
    try:
        return fn(*args, **kwargs)
    except DexedDataError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str) -> None:
    """One ``error: ...`` line and exit status 2 (a bad option value)."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(2)


def _check_limit(limit: Optional[int]) -> None:
    if limit is not None and limit < 1:
        _fail(f"--limit {limit}: must be ≥ 1")


def _command_line() -> str:
    """The command as typed, quoted for a shell (a path with a space stays one word)."""
    import shlex

    return shlex.join(["dexed-data", *sys.argv[1:]])


def _one_ids(ids: Optional[List[str]]) -> Optional[str]:
    """The one ``--ids`` value: given twice, typer kept only the last and dropped the first's presets."""
    if not ids:
        return None
    if len(ids) > 1:
        _fail(f"--ids was given {len(ids)} times ({', '.join(ids)}); give it once: ids separated by commas, or a "
              "file listing them")
    return ids[0]


def _ids_file(ids) -> list[str]:
    """The ``--ids`` value when it names a file: an input, never replaced (``-o picks.txt --force``
    with ``--ids picks.txt`` wrote a bank over it)."""
    return [str(ids)] if ids is not None and os.path.isfile(str(ids)) else []


@app.command("import-sysex")
def import_sysex_command(
    paths: List[str] = typer.Argument(..., help="SysEx files and/or folders (walked recursively, any extension)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_file_path("presets.h5"), help="Catalogue to write (presets.h5); written atomically."),
    report: Optional[Path] = typer.Option(None, "--report", readable=False, parser=cli_file_path("import.json"), help="Also write the JSON import report here."),
    strict: bool = typer.Option(False, "--strict", help="Reject every voice that needed any repair."),
    progress: bool = PROGRESS,
    force: bool = typer.Option(False, "--force", help="Replace existing output files (never an input)."),
) -> None:
    """Import DX7 SysEx into a deduplicated catalogue; every file is accounted for in the summary."""
    from .importer import import_sysex

    if "" in paths:   # Path("") is the current folder: an empty variable in a script would import it
        _fail("an empty path was given (an unset variable?); give SysEx files or folders, . for this folder")
    result = _plain_errors(import_sysex, [Path(p) for p in paths], output, strict=strict, report=report, progress=progress,
                           command=_command_line(), force=force)
    typer.echo(result.format_summary())
    if report is not None:
        typer.echo(f"{'report':<20}{'':>8}   {report}")


@app.command("export")
def export_command(
    catalogue: Path = typer.Argument(..., readable=False, parser=cli_path, help="A catalogue written by import-sysex (presets.h5)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_file_path("bank.syx"), help="First .syx file; more are named NAME_2.syx, NAME_3.syx..."),
    ids: Optional[List[str]] = typer.Option(None, "--ids", help=IDS_HELP),
    all_: bool = typer.Option(False, "--all", help="Export every preset (in id order)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Export at most this many (with --all: the first N by id)."),
    single: bool = typer.Option(False, "--single", help="One single-voice dump per file instead of 32-voice banks."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files (never an input)."),
    as_rendered: bool = typer.Option(False, "--as-rendered", help="Write each voice with TRANSPOSE 24, as datasets "
                                     "render it, so it plays as its dataset audio (default: as imported)."),
    progress: bool = PROGRESS,
) -> None:
    """Write catalogue presets as DX7 SysEx: 32-voice banks (the last one padded with INIT VOICE).

    Voices are written as they were imported, each with its own TRANSPOSE; a dataset renders them
    all at TRANSPOSE 24 (no transpose), so a voice with another TRANSPOSE plays octaves or
    semitones away from its dataset audio: --as-rendered writes them as rendered.
    """
    from .export import export_sysex, following
    from .ids import parse_ids

    ids = _one_ids(ids)

    if ids is not None and all_:
        typer.echo("error: give either --ids or --all, not both", err=True)
        raise typer.Exit(2)
    if ids is None and not all_ and limit is None:
        typer.echo("error: choose presets with --ids, --all or --limit N", err=True)
        raise typer.Exit(2)
    _check_limit(limit)
    chosen = _plain_errors(parse_ids, ids) if ids is not None else None
    written = _plain_errors(export_sysex, catalogue, output, ids=chosen, limit=limit, single=single, force=force,
                            inputs=_ids_file(ids), as_rendered=as_rendered, progress=progress)
    for path in written:
        typer.echo(str(path))
    if written.own_transpose:
        typer.echo(f"note: {written.own_transpose} of the voices have their own TRANSPOSE (not 24, the value datasets render them "
                   "at), so they play at another pitch than their dataset audio; --as-rendered writes them as "
                   "rendered", err=True)
    left = [p.name for p in following(output, len(written))]
    if left:   # not this export's, and maybe not an export at all: named, never deleted
        typer.echo(f"note: {len(left)} file(s) of the same numbered name follow {Path(written[-1]).name} and are not "
                   f"this export's ({left[0]}{f' … {left[-1]}' if len(left) > 1 else ''}); they were left as they are",
                   err=True)


@app.command("list")
def list_command(
    file: Path = typer.Argument(..., readable=False, parser=cli_path, help="A catalogue (presets.h5) or a dataset (dataset.h5)."),
    name: Optional[str] = typer.Option(None, "--name", help="Only presets whose name contains TEXT (any case)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Print at most N presets."),
) -> None:
    """List presets: row, id, name and the first file it was found in (file:voice, voice from 1;
    "(message M)" after it when that is not the file's first DX7 voice message: M counts the
    banks and single voices decoded in the file, from 1, not other SysEx messages).

    The ids are what --ids takes (export, export-wav, render). "+K more" counts the preset's
    other occurrences (the same sound values found elsewhere).
    """
    from .access import preset_table, printable_name, printable_path

    if limit is not None and limit < 0:
        typer.echo(f"error: --limit {limit}: give a number ≥ 0", err=True)
        raise typer.Exit(2)
    presets = _plain_errors(preset_table, file)
    if name:
        presets = [p for p in presets if name.lower() in p.name.lower()]
    shown = presets if limit is None else presets[:limit]
    for p in shown:
        first = p.sources[0] if p.sources else None
        where = f"{printable_path(first.path)}:{first.voice + 1}" if first else "-"
        if first and first.message:    # a file of several messages: its voice numbers repeat
            where += f" (message {first.message + 1})"
        more = f"  (+{len(p.sources) - 1} more)" if len(p.sources) > 1 else ""
        typer.echo(f"{p.row:>6}  {p.id}  {printable_name(p.name):<10}  {where}{more}")
    typer.echo(f"{len(shown)} of {len(presets)} presets" + (f" named like {name!r}" if name else ""), err=True)
    if _incomplete_dataset(file):   # its preset table is written first, whole; its renders are not all there
        typer.echo(f"note: {file} is an incomplete dataset (its render was interrupted, or still runs): these are "
                   "the presets it selected, not all of them rendered; rerun its render command to finish it", err=True)


def _incomplete_dataset(path: Path) -> bool:
    import h5py

    from .inputs import format_attr

    with h5py.File(path, "r") as f:
        return format_attr(f) == "dexed-dataset" and not bool(f.attrs.get("complete", False))


@app.command("info")
def info_command(file: Path = typer.Argument(..., readable=False, parser=cli_path, help="A catalogue, a dataset, or a SysEx file.")) -> None:
    """Describe a catalogue, a dataset or a SysEx file (its terms: docs/QUALITY.md in the repository)."""
    from .info import describe

    typer.echo(_plain_errors(describe, file))


# --- render, merge, export-wav: owned by dexed_data.render / dexed_data.dataset ------------------


def _warn_empty_mel_bands(config) -> None:
    """One line on stderr when some mel bands hold no FFT bin at this sample rate (n_fft is fixed):
    they read the floor in every frame of every preset."""
    from .features import LEVEL_FLOOR_DB, empty_mel_bands

    empty = empty_mel_bands(config.sample_rate, config.n_fft, config.n_mels)
    if empty:
        fit = next(m for m in range(config.n_mels - 1, 0, -1)
                   if not empty_mel_bands(config.sample_rate, config.n_fft, m))
        typer.echo(f"warning: at {config.sample_rate} Hz, {empty} of the {config.n_mels} mel bands hold no FFT bin "
                   f"(n_fft {config.n_fft}) and will read {LEVEL_FLOOR_DB:g} dB in every frame of every preset; "
                   f"--n-mels {fit} or fewer leaves none empty", err=True)


@app.command("render")
def render_command(
    catalogue: Path = typer.Argument(..., readable=False, parser=cli_path, help="A catalogue written by import-sysex (presets.h5)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_file_path("dataset.h5"), help="Dataset to write (dataset.h5); exists only once complete."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Worker processes, one thread each (at most 4 × the CPU cores; "
                                                         "more than the cores rarely helps)."),
    engine: str = typer.Option("dexed", "--engine", help="dexed (dexed-py, default) or dawdreamer (needs --plugin)."),
    plugin: Optional[str] = typer.Option(None, "--plugin", help="Dexed VST2 .so / VST3 bundle for --engine dawdreamer."),
    notes: str = typer.Option("40:85,50:85,60:42,60:85,60:127,70:85", "--notes",
                              help="pitch:velocity pairs rendered per preset."),
    sample_rate: int = typer.Option(22050, "--sample-rate", help="Hz."),
    hold: float = typer.Option(3.0, "--hold", help="Seconds each note is held."),
    release: float = typer.Option(1.0, "--release", help="Seconds rendered after the note-off."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Render only the first N selected presets (catalogue order)."),
    ids: Optional[List[str]] = typer.Option(None, "--ids", help=IDS_HELP + " Default: all."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: render only shard K (0-based) of N; join with merge."),
    store: str = typer.Option("mel", "--store", help="Big arrays to store: mel (default), audio or audio,mel."),
    compression: str = typer.Option("none", "--compression",
                                    help="none (default, fastest), lzf, or gzip-1 … gzip-9 (about half the size, for sharing)."),
    audio_dtype: Optional[str] = typer.Option(None, "--audio-dtype", help="Stored audio: float16 (default) or float32 (with --store audio)."),
    operators: bool = typer.Option(True, "--operators/--no-operators",
                                   help="Render each operator to measure its audibility (slower)."),
    n_mels: int = typer.Option(257, "--n-mels", help="Mel bands of the stored spectrograms (64 for the CPU-scale path)."),
    hop: int = typer.Option(256, "--hop", help="STFT hop in samples (1024 for the CPU-scale path: 87 frames per 4 s note)."),
    timeout: float = typer.Option(120.0, "--timeout", help="A guard against presets that hang: a worker stuck on one for 1.5 × this + 5 s is ended and the preset recorded as failed."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Dask scheduler address: render the shards there."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", readable=False, parser=cli_path, help="With --cluster: shared folder for the shard files."),
    progress: bool = PROGRESS,
    segment_size: int = typer.Option(64, "--segment-size", hidden=True,
                                     help="Presets per segment (resume and shard unit); keep the default."),
) -> None:
    """Render catalogue presets into a dataset (audio, mel spectrograms, levels); resumable: rerun to continue."""
    from .errors import RenderError
    from .render import RenderConfig, parse_notes, render_dataset

    ids = _one_ids(ids)

    def run():
        stored = tuple(s.strip() for s in store.split(",") if s.strip())
        # float32 was accepted, recorded and ignored (audit A3); float16, the default, stays accepted: every
        # dataset records it in the command that made it, to be run again (R1, R2)
        if audio_dtype not in (None, "float16") and "audio" not in stored:
            raise RenderError(f"--audio-dtype {audio_dtype} is the type of stored audio, and --store {store} stores "
                              "none; add audio to --store (--store audio,mel) or leave --audio-dtype out")
        config = RenderConfig(engine=engine, plugin=plugin,
                              sample_rate=sample_rate, notes=parse_notes(notes), hold=hold, release=release,
                              operators=operators, store=stored,
                              compression=compression, audio_dtype=audio_dtype or "float16", timeout=timeout,
                              n_mels=n_mels, hop=hop)
        if "mel" in config.store:
            _warn_empty_mel_bands(config)
        if cluster is not None:
            if shard is not None:
                raise RenderError("--cluster splits the job into shards itself; leave out --shard")
            if jobs != 1:
                raise RenderError("--jobs is for one machine; with --cluster the cluster's workers render "
                                  "(local:N starts N of them)")
            from .cluster import render_on_cluster

            return render_on_cluster(catalogue, output, config, cluster=cluster, work_dir=work_dir, ids_file=ids,
                                     limit=limit, progress=progress)
        if work_dir is not None:
            raise RenderError("--work-dir is for --cluster only")
        return render_dataset(catalogue, output, config, jobs=jobs, shard=shard, progress=progress,
                              ids_file=ids, limit=limit, segment_size=segment_size)

    try:
        summary = _plain_errors(run)
    finally:
        from .render import shutdown_workers

        shutdown_workers()
    typer.echo(summary.format())


@app.command("merge")
def merge_command(
    shards: List[Path] = typer.Argument(..., readable=False, parser=cli_path, help="The N shard files of one render (--shard K/N)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_file_path("dataset.h5"), help="Dataset to write; equals a single run's file."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files (never an input)."),
) -> None:
    """Join the shard files of one render job into one dataset."""
    from .merge import merge

    path = _plain_errors(merge, shards, output, force=force)
    typer.echo(f"wrote {path}")


@app.command("export-wav")
def export_wav_command(
    dataset: Path = typer.Argument(..., readable=False, parser=cli_path, help="A rendered dataset (dataset.h5); without stored audio its presets are re-rendered."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_path, help="Folder for the wav files (created)."),
    ids: Optional[List[str]] = typer.Option(None, "--ids", help=IDS_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many presets (default with no --ids: 10)."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files (never an input)."),
    progress: bool = PROGRESS,
) -> None:
    """Write presets' audio as 32-bit float wav files, one per note: ID_NAME_PITCH-VELOCITY.wav."""
    from .ids import parse_ids
    from .wav import export_wav

    ids = _one_ids(ids)

    _check_limit(limit)
    chosen = _plain_errors(parse_ids, ids) if ids is not None else None
    written = _plain_errors(export_wav, dataset, output, ids=chosen, limit=limit, force=force, inputs=_ids_file(ids),
                            progress=progress)
    for path in written:
        typer.echo(str(path))


# --- check-plugin: owned by dexed_data.plugin_check -------------------------------------------------


@app.command("check-plugin")
def check_plugin_command(
    plugin: str = typer.Option(..., "--plugin", help="Dexed VST2 .so / VST3 bundle to check."),
    presets: Optional[Path] = typer.Option(None, "--presets", readable=False, parser=cli_path, help="Catalogue to sample (default: the bundled presets/ banks)."),
    n: int = typer.Option(64, "-n", help="Presets to check (spread evenly over the catalogue)."),
    notes: str = typer.Option("40:85,50:85,60:42,60:85,60:127,70:85", "--notes", help="pitch:velocity pairs per preset."),
    hold: float = typer.Option(3.0, "--hold", help="Seconds each note is held."),
    release: float = typer.Option(1.0, "--release", help="Seconds rendered after the note-off."),
    progress: bool = PROGRESS,
) -> None:
    """Compare a Dexed plug-in with the default engine: agreement, repeatability, speed (exit 1 if not OK)."""
    from .plugin_check import check_plugin
    from .render import RenderConfig, parse_notes

    # the notes and their length are checked as render checks them (a bad option is not the plug-in's fault)
    cfg = _plain_errors(lambda: RenderConfig(notes=parse_notes(notes), hold=hold, release=release))
    result = _plain_errors(lambda: check_plugin(plugin, presets, n, notes=cfg.notes, hold=cfg.hold,
                                                release=cfg.release, progress=progress))
    typer.echo(result.format())
    if not result.ok:
        raise typer.Exit(1)


# --- report: owned by dexed_data.report ------------------------------------------------------------


@app.command("report")
def report_command(
    dataset: Path = typer.Argument(..., readable=False, parser=cli_path, help="A rendered dataset (dataset.h5)."),
    output: Path = typer.Option(..., "-o", "--output", readable=False, parser=cli_path, help="Folder for index.html (created); its figures are embedded in it."),
    examples: int = typer.Option(4, "--examples", help="Random usable presets shown as mel spectrograms (0–64)."),
    groups: int = typer.Option(10, "--groups", help="Largest groups of identical-sounding presets listed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the choice of example presets."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files (never an input)."),
) -> None:
    """Write a self-contained HTML report, one file with its figures embedded (counts, parameter histograms, levels, examples, duplicates)."""
    from .report import MAX_EXAMPLES, write_report

    for name, value in (("--examples", examples), ("--groups", groups)):
        if value < 0:
            _fail(f"{name} {value}: must be ≥ 0")
    if examples > MAX_EXAMPLES:
        _fail(f"--examples {examples}: must be at most {MAX_EXAMPLES} (their spectrograms are one figure)")
    if not 0 <= seed < 2**63:
        _fail(f"--seed {seed}: must be between 0 and {2**63 - 1}")
    index = _plain_errors(write_report, dataset, output, examples=examples, groups=groups, seed=seed, force=force)
    typer.echo(str(index))


def main() -> None:
    """Console entry point: expected errors become one line and exit 2; signals, closed streams
    and a deleted current folder are handled as :mod:`dexed_data.console` says."""
    from .console import run

    run(app, (DexedDataError,))


if __name__ == "__main__":
    main()
