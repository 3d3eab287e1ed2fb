"""The render job: catalogue presets → rendered dataset, in parallel, resumable, shardable.

``presets.h5`` ──► selection (``--ids``, ``--limit``) ──► segments of up to 64 presets (equal sizes) ──► workers
(loky processes, one thread each: each renders a whole segment, analyses it, writes its rows
and publishes its segment file) ──► ``OUT.parts/dataset.h5`` finished and renamed to ``OUT``.
The main process only hands out segments and counts the finished ones: nothing it does grows
with the number of presets or workers (see :mod:`dexed_data.writer` for the file's making).

Uncompressed (the default), the workers ``pwrite`` their rows straight into their place in
``OUT.parts/dataset.h5``, whose space is reserved when the job starts: every byte is written once
and the disk never holds more than the final file. Compressed (``--compression lzf|gzip-N``),
rows have no fixed size; the workers put the compressed chunks into their segment files, which
are copied into the file at the end (written twice; the disk peaks at twice the final file).

Crash safety: a segment file is built in memory and published (temporary file, fsync, rename)
only after its rows are durable (fdatasync), so it is the job's journal: killing the job at any
moment (Ctrl-C or ``kill -9``) loses at most the segments in progress, and rerunning the same
command skips the finished ones and gives the same file. ``OUT`` exists only complete.
A full disk ends the job with one error line and keeps the finished segments for the rerun.

One job per output: a render holds an exclusive lock (``.OUT.lock`` beside it) for its whole
run, so a second job on the same output stops at once with a clear message. Workers exit when
the main process dies (``kill -9``). A resumed job reuses segments only when the engine and
package versions recorded in ``OUT.parts/job.json`` are this run's.

A preset whose render raises is recorded as failed with the exception. When a worker dies (a
segfault, or a preset that hangs: its watchdog ends the worker), the segments it took down are
re-run one preset per task, which records the culprit as failed (or timed out after
``RenderConfig.timeout`` seconds). The job goes on.

Example::

    >>> from dexed_data.render import RenderConfig, render_dataset
    >>> cfg = RenderConfig(notes=((60, 85),), hold=0.5, release=0.5)
    >>> summary = render_dataset("presets.h5", "dataset.h5", cfg, jobs=2)   # doctest: +SKIP
    >>> summary.ok, summary.failed                                          # doctest: +SKIP
    (32, 0)
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import dataset as ds
from . import storage, writer
from .errors import DexedDataError, EngineError, OutputError, RenderError
from .inputs import hdf5_locked
from .outputs import OutputClash
from .schema import FIXED_PARAMS, SCHEMA_HASH, SOUND_BYTES, apply_fixed

#: The paper's six (MIDI pitch, velocity) pairs.
DEFAULT_NOTES: tuple[tuple[int, int], ...] = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))
#: Presets per segment file: the unit of crash recovery and of shard assignment.
SEGMENT_SIZE = 64
#: Longest ``hold`` or ``release`` (s). A note of 2 × 60 s at 192 kHz is 88 MB of float32 audio,
#: and a worker holds ~12–20 times its notes' audio while it renders (:func:`worker_memory`).
MAX_SECONDS = 60.0
#: A render worker's memory before any preset (Python, torch, the engine), bytes (measured ~235 MB).
WORKER_BASE_BYTES = 300 << 20
#: The longest ``RenderConfig.timeout``: a day per preset (the watchdog's clock overflows near 6e9 s,
#: and presets rendered under a larger value failed with an OverflowError).
MAX_TIMEOUT = 86400.0

#: ``jobs`` may be at most this many times ``os.cpu_count()`` (more only adds memory and start-up).
MAX_JOBS_PER_CORE = 4
_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}


@dataclass(frozen=True)
class RenderConfig:
    """How presets are rendered and stored; the defaults are the paper's settings.

    Attributes:
        engine: ``"dexed"`` (dexed-py, default) or ``"dawdreamer"`` (needs ``plugin``).
        plugin: path of a Dexed VST2/VST3 plug-in for ``"dawdreamer"``.
        sample_rate: Hz.
        notes: ``(midi_pitch, velocity)`` pairs rendered per preset.
        hold, release: seconds the note is held, then released.
        operators: also render the six operators' signals to measure their audibility
            (per-operator levels); ``False`` is faster but stores NaN levels and "all audible".
            Always ``False`` with ``"dawdreamer"``: a plug-in gives only its mixed output.
        store: big arrays to store, among ``("audio", "mel")``; default the spectrograms only
            (what training reads; rendering is deterministic, so audio can be re-created from the
            stored parameters: ``export-wav`` does). Add ``"audio"`` to share the sounds.
        compression: ``"none"`` (default: no cost in the workers, byte-reproducible), ``"lzf"``
            or ``"gzip-N"`` (about half the size, for sharing); see docs/FORMAT.md.
        audio_dtype: ``"float16"`` or ``"float32"``.
        timeout: a guard against presets that hang inside the engine: a worker stuck on one for
            1.5 × ``timeout`` + 5 s is ended, and the preset is recorded as failed (a slow preset
            that finishes within that is kept).
        n_mels, hop, n_fft: the stored mel spectrograms' bands, STFT hop and size (the paper's
            257, 256, 1024; ``n_mels=64, hop=1024`` gives the reduced 64 × 87 spectrograms that
            the CPU-scale training path uses, 16× smaller).
    """

    engine: str = "dexed"
    plugin: str | None = None
    sample_rate: int = 22050
    notes: tuple[tuple[int, int], ...] = DEFAULT_NOTES
    hold: float = 3.0
    release: float = 1.0
    operators: bool = True
    store: tuple[str, ...] = ("mel",)
    compression: str = "none"
    audio_dtype: str = "float16"
    timeout: float = 120.0
    n_mels: int = 257
    hop: int = 256
    n_fft: int = 1024

    def __post_init__(self) -> None:
        try:
            notes = [(p, v) for p, v in self.notes]
            whole = all(float(x) == int(x) for n in notes for x in n)
        except (TypeError, ValueError, OverflowError):
            whole = False
        if not whole:
            raise RenderError(f"notes {self.notes!r}: give (pitch, velocity) pairs of whole numbers")
        object.__setattr__(self, "notes", tuple((int(p), int(v)) for p, v in notes))
        for name in ("hold", "release", "timeout"):
            if not isinstance(getattr(self, name), (int, float, np.number)):
                raise RenderError(f"{name} {getattr(self, name)!r}: give a number of seconds")
        object.__setattr__(self, "store", tuple(self.store))
        if self.engine == "dawdreamer":   # a plug-in gives only its mixed output: no operator to measure
            object.__setattr__(self, "operators", False)
        self.storage  # validates store/compression/dtype  # noqa: B018
        if not (math.isfinite(self.timeout) and 0 < self.timeout <= MAX_TIMEOUT):
            raise RenderError(f"--timeout {self.timeout}: must be a number of seconds > 0 and at most "
                              f"{MAX_TIMEOUT:.0f} (a day)")
        if not (math.isfinite(self.hold) and 0 < self.hold <= MAX_SECONDS):
            raise RenderError(f"--hold {self.hold}: must be > 0 and ≤ {MAX_SECONDS:g} s")
        if not (math.isfinite(self.release) and 0 <= self.release <= MAX_SECONDS):
            raise RenderError(f"--release {self.release}: must be ≥ 0 and ≤ {MAX_SECONDS:g} s")
        from .engines import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

        for name in ("sample_rate", "n_mels", "hop", "n_fft"):   # '44100', None, 22050.9: refused, not half-used
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value) or value != int(value):
                raise RenderError(f"{name} {value!r}: give a whole number")
            object.__setattr__(self, name, int(value))
        if not MIN_SAMPLE_RATE <= int(self.sample_rate) <= MAX_SAMPLE_RATE:
            raise RenderError(f"--sample-rate {self.sample_rate}: must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz "
                              "(dexed-py renders silence below about 12,800 Hz)")
        if self.engine not in ("dexed", "dawdreamer"):
            raise RenderError(f"--engine {self.engine}: unknown engine; use dexed (dexed-py, the default) or "
                              "dawdreamer (with --plugin PATH)")
        if self.plugin is not None and self.engine != "dawdreamer":
            raise RenderError(f"--plugin is for --engine dawdreamer; the {self.engine} engine uses no plug-in "
                              "(add --engine dawdreamer, or leave out --plugin)")
        if int((self.hold + self.release) * self.sample_rate) < self.n_fft:
            raise RenderError(f"--hold {self.hold:g} + --release {self.release:g} s is shorter than one spectrogram frame "
                              f"({self.n_fft} samples, {1000 * self.n_fft / self.sample_rate:.0f} ms at "
                              f"{self.sample_rate} Hz); give the notes more time")
        bad = [f"{p}:{v}" for p, v in self.notes if not (0 <= p <= 127 and 1 <= v <= 127)]
        if bad:
            raise RenderError(f"--notes {', '.join(bad)}: pitch must be 0–127 and velocity 1–127")
        if not 8 <= self.n_fft <= 16384:
            raise RenderError(f"mel settings: n_fft {self.n_fft} must be 8 … 16384")
        if not 1 <= self.hop <= self.n_fft:
            raise RenderError(f"--hop {self.hop}: must be 1 … {self.n_fft} (the STFT size, n_fft)")
        if not 1 <= self.n_mels <= self.n_fft // 2 + 1:
            raise RenderError(f"--n-mels {self.n_mels}: must be 1 … {self.n_fft // 2 + 1} (the STFT's bins, n_fft/2 + 1)")

    @property
    def engine_spec(self):
        from .engines import EngineSpec

        return EngineSpec(self.engine, int(self.sample_rate), self.plugin)

    @property
    def mel_config(self):
        from .features import MelConfig

        return MelConfig(sample_rate=int(self.sample_rate), n_fft=int(self.n_fft), hop=int(self.hop),
                         n_mels=int(self.n_mels))

    @property
    def storage(self) -> storage.StorageConfig:
        return storage.StorageConfig(self.store, self.compression, self.audio_dtype)

    def job_key(self) -> dict:
        """What must not change between a run and its resumption (everything but the timeout)."""
        d = asdict(self)
        d.pop("timeout")
        d["store"] = list(self.storage.arrays)
        d["notes"] = [list(n) for n in self.notes]
        d["plugin"] = str(Path(self.plugin).resolve()) if self.plugin else None   # however it is spelled
        return d


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the segments ``s`` with ``s % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise RenderError(f"shard {self.index}/{self.count}: need 0 ≤ K < N (K is 0-based)")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"K/N"`` → Shard(K, N)."""
        try:
            k, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise RenderError(f"--shard {text!r}: write K/N, e.g. 0/4 for the first of four shards") from None
        return cls(k, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class RenderSummary:
    """What a render job did."""

    path: Path
    presets: int                 # rows in the output file
    rendered: int                # presets rendered by this run (the rest came from an earlier run)
    ok: int
    failed: int
    silent: int
    seconds: float
    bytes: int
    failures: list[tuple[str, str]] = field(default_factory=list)   # (id, reason), first few
    startup: float = 0.0         # seconds until the workers were ready (imports, engine): a fixed cost

    @property
    def presets_per_s(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else float("nan")

    def format(self) -> str:
        lines = [f"{self.path}: {self.presets} presets ({self.ok} ok, {self.failed} failed, "
                 f"{self.silent} near-silent), {self.bytes / 1e6:.1f} MB",
                 f"rendered {self.rendered} in {self.seconds:.1f} s ({self.presets_per_s:.1f} presets/s"
                 + (f"; workers ready after {self.startup:.1f} s)" if self.startup else ")")
                 + (f"; {self.presets - self.rendered} from an earlier run" if self.rendered < self.presets else "")]
        lines += [f"failed {pid}: {reason}" for pid, reason in self.failures]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# selection
# ------------------------------------------------------------------------------------------------


def parse_notes(text: str) -> tuple[tuple[int, int], ...]:
    """``"40:85,60:127"`` → ``((40, 85), (60, 127))``."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        if any(not re.fullmatch(r"\s*[+-]?\d+\s*", x) for pair in pairs for x in pair):
            raise ValueError(text)   # int() takes "60_0" as 600, which the messages below then showed
        notes = tuple((int(p), int(v)) for p, v in pairs)
    except ValueError:
        raise RenderError(f"--notes {text!r}: write pitch:velocity pairs, e.g. 40:85,60:127") from None
    if not notes:
        raise RenderError("--notes is empty")
    twice = sorted({f"{p}:{v}" for p, v in notes if notes.count((p, v)) > 1})
    if twice:   # the same note twice is the same audio twice, and export-wav's files would overwrite each other
        raise RenderError(f"--notes {text!r}: {', '.join(twice)} given more than once; give each note once")
    return notes


def read_ids_file(path) -> list[str]:
    """Ids of ``--ids``: comma-separated ids or a file listing them (:func:`dexed_data.ids.parse_ids`)."""
    from .ids import parse_ids

    return parse_ids(path)


def select_rows(catalogue, ids: Sequence[str] | None = None, limit: int | None = None) -> np.ndarray:
    """Catalogue rows to render, ascending (catalogue order): ``ids`` if given, then the first ``limit``."""
    rows = np.arange(len(catalogue)) if ids is None else np.unique(np.asarray(catalogue.rows(list(ids)), np.int64))
    if limit is not None:
        if limit < 1:
            raise RenderError(f"--limit {limit}: must be ≥ 1")
        rows = rows[:limit]
    return rows.astype(np.int64)


def _selection_hash(cat, sel: np.ndarray, raw: np.ndarray, occ: dict[str, np.ndarray]) -> str:
    """What was selected from the catalogue ``cat`` (its rows ``sel``): the presets' raw values
    (``raw``, fixed parameters applied) and ids, and everything the dataset copies from the
    catalogue about them (names, catalogue rows, groups, their occurrences ``occ``), so that shards
    or a resumed job read from two imports of one collection (the same presets, other files) are
    never joined."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(raw, np.uint8).tobytes())
    h.update("\n".join(cat.ids[i] for i in sel).encode())
    for part in (np.asarray(sel, np.int64), cat.sound_group[sel].astype(np.int64), cat.near_group[sel].astype(np.int64),
                 *(np.asarray(occ[k], np.int64) for k in ("preset", "message", "voice"))):
        h.update(part.tobytes())
    for texts in ([cat.names[i] for i in sel], occ["path"], occ["name"]):
        h.update("\0".join(map(str, texts)).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def canonical_command(catalogue_path, config: RenderConfig, ids_file=None, limit=None) -> str:
    """The creation command stored in the file: what made the data (no output path, no shard, no jobs).

    Rebuilt from the options rather than copied from ``sys.argv`` so a resumed run, a run with
    another ``--jobs`` and a merge of shards all store the same value.
    """
    parts = ["dexed-data", "render", str(catalogue_path), "--engine", config.engine]
    if config.plugin:
        parts += ["--plugin", str(config.plugin)]
    parts += ["--notes", ",".join(f"{p}:{v}" for p, v in config.notes), "--sample-rate", str(config.sample_rate),
              "--hold", f"{config.hold:g}", "--release", f"{config.release:g}",
              "--store", ",".join(config.storage.arrays), "--compression", config.compression,
              "--audio-dtype", config.audio_dtype]   # (float16, the default, is accepted without stored audio)
    if not config.operators:
        parts.append("--no-operators")
    defaults = RenderConfig()
    if (config.n_mels, config.hop) != (defaults.n_mels, defaults.hop):   # (left out at the defaults: files
        parts += ["--n-mels", str(config.n_mels), "--hop", str(config.hop)]   # made before keep their command)
    if ids_file is not None:
        parts += ["--ids", str(ids_file)]
    if limit is not None:
        parts += ["--limit", str(limit)]
    from .outputs import h5_text

    return h5_text(shlex.join(parts))   # quoted for a shell: a catalogue path with a space stays one word


# ------------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------------

_WORKER: dict = {}


def exit_with_parent(parent: int | None = None, interval: float = 1.0) -> None:
    """End this worker when the process that started it dies (``kill -9`` of the render command;
    also part of :func:`helper_pool`'s initializer).

    A daemon thread polls the parent's pid: once the worker is re-parented (to init or a
    subreaper) it exits at once instead of rendering on for minutes. Polling rather than
    ``PR_SET_PDEATHSIG``, which fires when the *thread* that forked the worker ends (loky starts
    workers from its manager thread), not the process. ``parent`` is the pid that started the
    worker, as the pool passes it: a worker whose parent died while it was still starting (its
    imports take seconds on a busy machine) is already re-parented when this runs, and would
    otherwise take init for its parent and never end; it ends at once instead.
    """
    import threading

    if _WORKER.get("watchdog"):
        return
    if parent is None:
        parent = os.getppid()
    elif os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    _WORKER["watchdog"] = True


def _init_worker(config: RenderConfig, in_worker: bool = True) -> None:
    """Per worker process: one thread for torch/BLAS, own engine, own chunk encoder."""
    if in_worker:
        exit_with_parent()
    for k, v in _THREAD_ENV.items():
        os.environ[k] = v
    from .engines import make_engine
    from .features import limit_threads

    limit_threads()
    if not _RELEASE_AT_EXIT:
        # a worker that ends normally (loky retires one it thinks leaks memory, or an idle one)
        # drops its engine before the interpreter's teardown: a DawDreamer engine still alive then
        # makes nanobind print ~25 lines of "leaked instances" warnings per worker
        import atexit

        atexit.register(_release_engine)
        _RELEASE_AT_EXIT.append(True)
    watchdog = _WORKER.get("watchdog", False)
    _WORKER.clear()
    _WORKER.update(watchdog=watchdog, config=config, engine=make_engine(config.engine_spec), encoder=storage.ChunkEncoder(config.storage))
    # Warm up on a silent voice: every lazy import (torch) and buffer is in place before
    # loky measures the worker's reference memory after its first task. Otherwise the first real
    # presets add >300 MB over that reference, loky takes it for a leak and restarts the worker
    # (seconds of imports again, mid-job).
    render_one(-1, apply_fixed(np.zeros(SOUND_BYTES, np.uint8)))


_RELEASE_AT_EXIT: list = []
#: The watchdog's and the crash handler's output in a worker (opened once).
_DEVNULL: list = []


def _devnull():
    """/dev/null, opened once per process (where faulthandler writes what no user should read)."""
    if not _DEVNULL:
        _DEVNULL.append(open(os.devnull, "w"))
    return _DEVNULL[0]


def _release_engine() -> None:
    import gc

    _WORKER.pop("engine", None)
    gc.collect()


def render_one(row: int, raw: np.ndarray, config: RenderConfig | None = None) -> writer.RowResult:
    """Render and analyse one preset (raw values with the fixed bytes applied) → encoded :class:`RowResult`.

    Runs in a worker; an exception from the engine or the features becomes a failed result.
    """
    from .features import compute_features
    from .fingerprint import exact_fingerprint, near_fingerprint

    if config is not None and _WORKER.get("config") != config:
        _init_worker(config, in_worker=False)
    cfg: RenderConfig = _WORKER["config"]
    try:
        render = _WORKER["engine"].render(raw, cfg.notes, cfg.hold, cfg.release, operators=cfg.operators)
        feats = compute_features(render, cfg.mel_config)
        if not (np.isfinite(feats.peak).all() and np.isfinite(feats.rms).all()):   # NaN propagates into the peak
            raise EngineError("the engine returned NaN or infinite samples (a damaged or incompatible plug-in build?)")
        silent = bool(np.all(feats.silent))
        mel16 = storage.as_dtype(feats.mel, np.float16)
        chunks = {}
        enc: storage.ChunkEncoder = _WORKER["encoder"]
        if "audio" in cfg.storage.arrays:
            chunks["audio"] = enc.encode("audio", render.audio)
        if "mel" in cfg.storage.arrays:
            chunks["mel"] = enc.encode("mel", mel16)
        return writer.RowResult(row, ds.STATUS_OK, "", chunks, feats.operator_db.astype(np.float32),
                            feats.audible.astype(bool), feats.peak.astype(np.float32), feats.rms.astype(np.float32),
                            silent, float(np.float16(feats.mel.min())), float(np.float16(feats.mel.max())),
                            fingerprint=exact_fingerprint(render.audio),
                            near_fingerprint=near_fingerprint(render.audio, cfg.sample_rate))
    except Exception as exc:  # noqa: BLE001 - any failure of one preset is recorded, the job goes on
        return writer.RowResult(row, ds.STATUS_FAILED, f"{type(exc).__name__}: {exc}")


def _render_guarded(row: int, raw: np.ndarray, config: RenderConfig) -> writer.RowResult:
    # A render stuck inside native code cannot be interrupted from Python; this watchdog thread
    # ends the whole worker instead, which the parent sees as a dead worker and handles.
    if _WORKER.get("config") != config:
        _init_worker(config)
    # its stack dump is no message for a user (the parent reports the preset as timed out): to /dev/null
    faulthandler.dump_traceback_later(config.timeout * 1.5 + 5, exit=True, file=_devnull())
    try:
        return render_one(row, raw)
    finally:
        faulthandler.cancel_dump_traceback_later()


class _SegmentOutput:
    """Where a segment's rows go: its segment file (small arrays; big ones too when compressed)
    and, for an in-place layout, the rows of the dataset file itself (:class:`~dexed_data.dataset.RowSink`).

    Used by a worker for a whole segment, and by the main process when it re-runs a segment
    whose worker died, one preset per task.
    """

    def __init__(self, seg_path: str, start: int, stop: int, out_rows: np.ndarray, header: ds.DatasetHeader,
                 partial: tuple[str, dict] | None):
        self.start, self.out_rows = start, out_rows
        self.segment = writer.SegmentWriter(Path(seg_path), start, stop, header.storage, header.shapes,
                                            big=partial is None)
        self.sink = writer.RowSink(Path(partial[0]), header, partial[1]) if partial else None

    def add(self, result: writer.RowResult) -> None:
        if self.sink is not None:
            self.sink.write(int(self.out_rows[result.row - self.start]), result)
        self.segment.add(result)

    @property
    def full(self) -> bool:
        return self.segment.full

    def finish(self) -> None:
        """Rows durable first, then the segment file that says they are there."""
        if self.sink is not None:
            self.sink.sync()
            self.sink.close()
        self.segment.finish()

    def abandon(self) -> None:
        if self.sink is not None:
            self.sink.close()
        self.segment.abandon()


def _render_segment(start: int, raws: np.ndarray, out_rows: np.ndarray, config: RenderConfig, seg_path: str,
                    header: ds.DatasetHeader, partial: tuple[str, dict] | None) -> tuple[int, int]:
    """In a worker: render the presets of one segment (selection positions ``start`` …), write
    their rows and publish the segment file. Returns (ok, failed) counts.

    The main process only counts finished segments: no per-preset work in it, whatever the
    number of workers. A preset that hangs ends the worker (the watchdog of
    :func:`_render_guarded`); the main process then re-runs the segment one preset at a time.
    """
    out = _SegmentOutput(seg_path, start, start + len(raws), out_rows, header, partial)
    counts = [0, 0]
    try:
        for i, raw in enumerate(raws):
            result = _render_guarded(start + i, raw, config)
            out.add(result)
            counts[result.status != ds.STATUS_OK] += 1
        out.finish()
    except BaseException:
        out.abandon()
        raise
    return counts[0], counts[1]


# ------------------------------------------------------------------------------------------------
# the job: a small public API that the local path (render_dataset) and dexed_data.cluster share
# ------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One render job's plan: what it renders (all of a selection, or one shard of it), in which
    segments, and what its output file's preset table and creation command are (:func:`plan_job`)."""

    catalogue_path: str
    config: RenderConfig
    shard: Shard | None
    rows: np.ndarray             # selection positions this job covers (all, or the shard's)
    segments: list[tuple[int, int, int]]   # (segment index, start, stop) in selection positions
    table: ds.PresetTable        # presets of the output file (this job's rows)
    selection_hash: str
    selection_size: int
    command: str
    segment_size: int


#: Jobs of at least this many segments end in quarter segments (:func:`segment_bounds`).
TAPER_MIN_SEGMENTS = 8


def segment_bounds(n: int, segment_size: int) -> list[tuple[int, int]]:
    """The segments of a selection of ``n`` presets, as ``(start, stop)`` selection positions:
    ⌈n / segment_size⌉ segments of equal sizes ±1 (none larger than ``segment_size``), of which the
    last eighth (at least two) is cut in quarters when there are at least
    :data:`TAPER_MIN_SEGMENTS` segments of at least 16 presets.

    So that the workers run out of work together: with a short last segment, or whole segments to
    the end, one worker renders its last segment while the others wait (up to one segment's time;
    at 1,000 presets on 2 cores, ~5 % of the job). Quarter segments at the end cut that wait to a
    quarter; the job's other segments keep the full size, so there are few segment files.

    Example::

        >>> segment_bounds(10, 4)
        [(0, 3), (3, 6), (6, 10)]
        >>> [b - a for a, b in segment_bounds(1000, 64)]
        [62, 63, 62, 63, 62, 63, 62, 63, 62, 63, 62, 63, 62, 63, 15, 16, 15, 16, 16, 15, 16, 16]
    """
    count = -(-n // segment_size)
    edges = [s * n // count for s in range(count + 1)]
    if count >= TAPER_MIN_SEGMENTS and segment_size >= 16:
        first = count - max(2, count // 8)
        edges = edges[:first] + [edges[first] + q * (n - edges[first]) // (4 * (count - first))
                                 for q in range(4 * (count - first) + 1)]
    return list(zip(edges[:-1], edges[1:]))


def plan_job(catalogue_path, config: RenderConfig, ids_file, limit, shard: Shard | None, segment_size: int,
             command: str | None = None) -> Job:
    """Read the catalogue and plan the job: the selection (``ids_file``, ``limit``), its segments
    of ``segment_size`` presets (only shard ``shard``'s, if given) and the output's preset table;
    ``command`` is the creation command to record (default: :func:`canonical_command`)."""
    from .catalogue import read_catalogue

    # a raw value out of range fails its preset alone (the engine refuses it; /error says why), as documented
    cat = read_catalogue(catalogue_path, check_values=False)
    ids = read_ids_file(ids_file) if ids_file is not None else None
    sel = select_rows(cat, ids, limit)
    if len(sel) == 0:
        raise RenderError(f"{catalogue_path}: nothing to render (empty selection)")
    raw = apply_fixed(cat.raw[sel])
    bounds = segment_bounds(len(sel), segment_size)
    n_seg = len(bounds)
    segs = [(s, a, b) for s, (a, b) in enumerate(bounds) if shard is None or s % shard.count == shard.index]
    if shard is not None and shard.count > n_seg:   # every shard refused, not only the empty ones
        raise RenderError(f"{shard.count} shards of a {len(sel)}-preset selection leave some empty "
                          f"({n_seg} segment(s) of up to {segment_size} presets: shards share out whole segments); "
                          f"use at most "
                          f"{n_seg} shard(s)")
    rows = np.concatenate([np.arange(a, b) for _, a, b in segs])
    cat_rows = sel[rows]
    occ = ds.select_occurrences(cat.occurrences, sel)   # the selection's (a shard's: its own rows' below)
    table = ds.PresetTable(raw[rows], np.asarray([cat.ids[i] for i in cat_rows], "S16"),
                           np.asarray([cat.names[i].encode("ascii", "replace") for i in cat_rows], "S10"),
                           cat.sound_group[cat_rows].astype(np.int32), cat_rows.astype(np.int32),
                           occ if shard is None else ds.select_occurrences(cat.occurrences, cat_rows),
                           np.asarray([cat.ids[i] for i in cat.near_group[cat_rows]], "S16"))
    return Job(str(catalogue_path), config, shard, rows, segs, table, _selection_hash(cat, sel, raw, occ), len(sel),
                command or canonical_command(catalogue_path, config, ids_file, limit), segment_size)


def job_record(job: Job, engine_version: str | None = None) -> dict:
    """What identifies a job in ``job.json``: a resumed or concurrent job must have the same record."""
    record = {"format": "dexed-render-job", "format_version": ds.FORMAT_VERSION, "schema_hash": SCHEMA_HASH,
              "config": job.config.job_key(), "selection_hash": job.selection_hash,
              "selection_size": job.selection_size, "shard": str(job.shard) if job.shard else None,
              "segment_size": job.segment_size,
              # the segments' bounds: an unfinished job of another segmenting rule is not resumed
              "segments_hash": hashlib.sha256(json.dumps(job.segments).encode()).hexdigest()[:16]}
    if engine_version is not None:   # segments of another engine or package version are not resumed
        from . import __version__

        record.update(engine_version=engine_version, package_version=f"dexed_data {__version__}")
    return record


def _probe(config: RenderConfig, raw: np.ndarray) -> tuple[str, ds.Shapes, dict]:
    """Build the engine once (in a worker): fails early on a bad plug-in; gives its version, the
    array shapes and the mel settings (as stored in the file).

    Run as the first task of the job's workers, so the parent never imports torch or the engine
    and the workers' start-up (imports, engine) overlaps the parent's own.
    """
    from .features import n_frames

    if _WORKER.get("config") != config:
        _init_worker(config)
    engine = _WORKER["engine"]
    r = engine.render(raw, config.notes[:1], config.hold, config.release)
    t = int(r.audio.shape[-1])
    mel = config.mel_config
    return engine.version, ds.Shapes(len(config.notes), t, mel.n_mels, n_frames(t, mel)), asdict(mel)


def _header(job: Job, engine_version: str, shapes: ds.Shapes, mel_config: dict | None = None) -> ds.DatasetHeader:
    c = job.config
    mel_config = asdict(c.mel_config) if mel_config is None else mel_config   # from the probe: no torch here
    return ds.DatasetHeader(c.engine, engine_version, int(c.sample_rate), c.notes, float(c.hold), float(c.release),
                            dict(FIXED_PARAMS), mel_config, c.operators, c.storage, shapes, job.command,
                            job.selection_hash, job.selection_size,
                            str(Path(c.plugin).resolve()) if c.plugin else "")   # evaluate and match re-render


def render_dataset(catalogue_path, out_path, config: RenderConfig = RenderConfig(), jobs: int = 1,
                   shard: Shard | str | None = None, progress: bool = True, *, ids_file=None,
                   limit: int | None = None, segment_size: int = SEGMENT_SIZE, command: str | None = None) -> RenderSummary:
    """Render a catalogue's presets into a dataset file (resumable; see the module docstring).

    Args:
        catalogue_path: ``presets.h5`` written by ``import-sysex``.
        out_path: dataset to write; with ``shard``, this shard's file (join them with :func:`merge`).
        config: rendering and storage settings.
        jobs: worker processes (one thread each).
        shard: ``Shard`` or ``"K/N"``: render only the deterministic subset K of N.
        progress: show a progress bar (presets/s, ETA) on stderr.
        ids_file: text file of preset ids to render (default: all).
        limit: render only the first N selected presets (catalogue order).
        segment_size: presets per segment file (crash-recovery unit); keep the default in practice.
        command: the creation command to record (default: rebuilt from the options with the
            catalogue path as given; a cluster's workers get the client's, so its file equals a
            single machine's).

    Returns:
        A :class:`RenderSummary`. Rerunning a finished job returns at once.

    Raises:
        RenderError: bad options, or ``out_path`` / its ``.parts`` folder belongs to another job.
        CatalogueError, EngineError: unreadable catalogue, engine or plug-in cannot be loaded.
    """
    t0 = time.perf_counter()
    check_jobs(jobs)
    check_memory(config, jobs)
    if limit is not None and limit < 1:   # before any worker starts
        raise RenderError(f"--limit {limit}: must be ≥ 1")
    if segment_size < 1:
        raise RenderError(f"--segment-size {segment_size}: must be ≥ 1")
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    out = Path(out_path)
    from .outputs import check_output, make_parents

    # Not the catalogue or the ids file, not a folder, a writable place; an existing file is
    # handled by the resume rules below (force=True here only skips the "exists" refusal).
    check_output(out, inputs=[catalogue_path, ids_file], force=True, rendering_ok=True)   # JobLock says it
    make_parents(out)   # its lock file goes beside it
    with JobLock(out):
        return _render_locked(catalogue_path, out, config, jobs, shard, progress, ids_file, limit, segment_size, t0,
                              command)


def worker_memory(config: RenderConfig) -> int:
    """Bytes a render worker needs for one preset beyond :data:`WORKER_BASE_BYTES`: its notes'
    audio (float32) 20 times with the operators' signals (six more channels, and their levels), 12
    times without (engine buffers, the output stage in float64, fingerprints), plus its mel
    spectrograms 4 times. Peaks measured over a worker's start (MiB) against this estimate: the
    paper's settings 53 (48); six 20-s notes at 48 kHz with / without operators 466 / 272 (528 / 352);
    ``--hop 1 --n-mels 64`` 520 (557)."""
    from .engines import n_samples
    from .features import n_frames

    t = n_samples(config.hold, config.release, config.sample_rate)
    audio = 4 * len(config.notes) * t
    mel = 4 * len(config.notes) * config.n_mels * n_frames(t, config.mel_config)
    return audio * (20 if config.operators else 12) + 4 * mel


def _available_memory() -> int | None:
    """Memory this machine (or its container's limit) can still give, bytes; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    try:   # a cgroup v2 limit (a container, a batch job) is lower than the machine's memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            # memory.current counts the file cache, which the kernel gives back: its inactive part is free
            stat = dict(line.split()[:2] for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines()
                        if len(line.split()) >= 2)
            used -= int(stat.get("inactive_file", 0))
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def check_memory(config: RenderConfig, jobs: int) -> None:
    """Refuse settings whose ``jobs`` workers need more memory than is available, before any
    worker starts: one preset of 2 × 60-s notes at 192 kHz needs ~13 GB per worker, and the machine
    would swap or kill the job mid-way. Every worker needs it, however few presets there are: each
    renders a silent voice with these settings as it starts (:func:`_init_worker`'s warm-up)."""
    per = WORKER_BASE_BYTES + worker_memory(config)
    need = jobs * per
    free = _available_memory()
    if free is None or need <= free:
        return
    ways = ["fewer --jobs"] if jobs > 1 else []
    ways += ["shorter --hold/--release", "a lower --sample-rate"]
    if config.operators:
        ways.append("--no-operators (about 40 % less)")
    if config.hop < 64:
        ways.append("a larger --hop")
    with_ops = ", with the operators' signals" if config.operators else ""
    raise RenderError(f"these settings need about {per / 1e9:.1f} GB per render worker ({len(config.notes)} notes of "
                      f"{config.hold + config.release:g} s at {config.sample_rate} Hz"
                      f"{with_ops}), {need / 1e9:.1f} GB for "
                      f"--jobs {jobs}, but only {free / 1e9:.1f} GB of memory is available; use "
                      + ", ".join(ways))


def check_jobs(jobs: int) -> None:
    """Refuse a worker count below 1 or above :data:`MAX_JOBS_PER_CORE` × the CPU cores."""
    most = MAX_JOBS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= jobs <= most:
        raise RenderError(f"--jobs {jobs}: must be between 1 and {most} ({MAX_JOBS_PER_CORE} × the "
                          f"{os.cpu_count() or 1} CPU cores); use about one per core")


class JobLock:
    """An exclusive lock on a render's output: ``.NAME.lock`` beside it, held with ``fcntl.flock``.

    A second job on the same output fails at once with a clear message instead of writing the
    same segment files (the lock dies with its process, so a killed job never leaves a stale
    lock). The lock file is removed on release; a job that locked a file just removed by the
    previous holder notices (the path no longer names its file) and locks the new one.
    """

    def __init__(self, out: Path, what: str = "render job", hint: str = " to reuse its work", where: str = "output"):
        out = Path(os.path.realpath(out))     # one lock per file or folder, whatever link names it
        self.path = out.with_name(f".{out.name}.lock")
        self.fd: int | None = None
        self.what, self.hint, self.where = what, hint, where

    def __enter__(self) -> "JobLock":
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RenderError(f"cannot create the lock file {self.path}: {exc.strerror}; choose another {self.where}"
                                  + (" (a shorter name)" if exc.errno == errno.ENAMETOOLONG else "")) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # "PID WHAT": the holder's own kind (an evaluation holds a match's output too)
                owner, _, what = os.pread(fd, 64, 0).decode(errors="replace").strip().partition(" ")
                os.close(fd)
                raise RenderError(f"another {what or self.what}{f' (pid {owner})' if owner else ''} is writing "
                                  f"{self.path.name[1:-5]} in {self.path.parent}; wait for it to finish "
                                  f"(or stop it) and rerun this command{self.hint}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)   # the previous holder removed the file while we waited for it: retry
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.what}".encode(), 0)
        except OSError as exc:   # a full disk: a traceback before
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise RenderError(f"cannot write the lock file {self.path}: {exc.strerror}; free space (or choose "
                              "another -o) and rerun") from None
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(self.fd)
                self.fd = None


def _render_locked(catalogue_path, out: Path, config: RenderConfig, jobs: int, shard: Shard | None,
                   progress: bool, ids_file, limit, segment_size: int, t0: float, command: str | None) -> RenderSummary:
    parts = out.with_name(out.name + ".parts")
    if out.exists():   # finished already (or another job's file): no workers needed
        job = plan_job(catalogue_path, config, ids_file, limit, shard, segment_size, command)
        try:
            check_finished(out, job)
        except DexedDataError:
            if not parts.is_dir():
                raise
            raise RenderError(f"{out} already exists and is not this render's output, while {parts} holds render "
                              f"work for it (another command wrote {out} during a render?): move {out} away and rerun "
                              f"to finish that work, or delete {parts} and choose another -o") from None
        # a job killed between publishing OUT and removing OUT.parts leaves the latter behind
        shutil.rmtree(parts, ignore_errors=True)
        return summarize_output(out, 0, time.perf_counter() - t0)

    # Workers start first: their imports (torch: a second) overlap reading the catalogue.
    executor = _new_executor(jobs)
    # Probe before anything is written, so that a bad plug-in leaves nothing behind; with a plain
    # all-zero voice, as the selection's first preset may be one that fails.
    probe = executor.submit(_probe, config, apply_fixed(np.zeros(SOUND_BYTES, np.uint8)))
    warm = [executor.submit(_init_worker, config) for _ in range(jobs - 1)]   # the other workers too
    try:
        job = plan_job(catalogue_path, config, ids_file, limit, shard, segment_size, command)
        engine_version, shapes, mel_config = _first_result(probe, jobs, executor)
    except BaseException as exc:
        # leave the (reusable) workers idle for the next job, but not for ever: under a memory limit a
        # worker that could not start a thread never answered, and render waited here for good
        wait([probe, *warm], timeout=10)
        if isinstance(exc, (ImportError, MemoryError)):   # a worker out of memory while loading its libraries
            raise RenderError(f"a worker process could not load the engine ({type(exc).__name__}: {exc}); the "
                              f"system's limits may be too low ({_limits()}): raise them, or use fewer --jobs") from None
        if type(exc).__name__ == "TerminatedWorkerError" and config.engine == "dawdreamer" \
                and _killing_signal(exc) != "SIGKILL":   # killed from outside (R1: the plug-in was blamed)
            # a damaged plug-in binary kills the worker that loads it (SIGBUS): not a traceback of loky's
            from .engines import crashed_while_loading

            raise RenderError(crashed_while_loading(str(config.plugin), _killing_signal(exc) or "it died")
                              + "; `dexed-data check-plugin --plugin PATH` tests a build") from None
        if type(exc).__name__ == "TerminatedWorkerError":   # killed from outside (the out-of-memory killer)
            raise RenderError(worker_died(exc) + "; nothing was written: run the same command again "
                              "(or with fewer --jobs if the system is short of memory)") from None
        raise
    record = job_record(job, engine_version)
    startup = time.perf_counter() - t0

    header = _header(job, engine_version, shapes, mel_config)
    extra = {"shard": str(shard), "segment_size": segment_size} if shard is not None else None
    partial = parts / "dataset.h5"
    try:
        parts.mkdir(parents=True, exist_ok=True)
        earlier = _recorded_command(partial)
        if earlier == job.command:   # "rerun that command" would be this one again
            other = (f"{parts} holds an unfinished render of this same command that cannot be resumed: what it read "
                     f"from the catalogue, or the engine or package version, changed since it started (an earlier "
                     f"dexed-data records less of the catalogue); delete {parts} to render again")
        else:
            other = (f"{parts} holds an unfinished render of another job (other options, selection, catalogue, "
                     f"engine or package version); rerun that command{f' ({earlier} -o {shlex.quote(str(out))})' if earlier else ''} to finish "
                     f"it, or delete {parts} to start over")
        claim_job_file(parts / "job.json", record, other)
        for leftover in parts.glob("*.tmp"):
            leftover.unlink()
        seg_path = {s: parts / f"seg-{s:06d}.h5" for s, _, _ in job.segments}
        if not _layout_matches(partial, header, extra, len(job.table)):
            # none yet, or one this job cannot vouch for: the segments' rows live in it, so they go too
            for stale in parts.glob("seg-*.h5"):
                stale.unlink()
            partial.unlink(missing_ok=True)
            writer.create_layout(partial, header, job.table, extra)
        elif earlier != job.command:
            # the same job (job.json) typed another way (the catalogue's path spelled otherwise): its
            # rows stay; the file records the command that finishes it
            import h5py

            with h5py.File(partial, "r+") as f:
                f.attrs["command"] = job.command
        import h5py

        with h5py.File(partial, "r+"):   # open in another program: said now, not after rendering (audit A1)
            pass
        todo_segments = [(s, a, b) for s, a, b in job.segments if not seg_path[s].exists()]
        rendered = sum(b - a for _, a, b in todo_segments)
        if todo_segments:
            # in place: the file and its rows' addresses ((offset, bytes per row) of each big array)
            target = (str(partial), writer.row_slots(partial, header)) if writer.in_place(header.storage) else None
            _run(job, todo_segments, seg_path, header, jobs, progress, executor, target)
        # finish: the small arrays from the segment files (and compressed chunks), then publish
        files, blocks = [], []
        try:
            for s, a, b in job.segments:
                try:
                    f = h5py.File(seg_path[s], "r")
                except OSError as exc:
                    if hdf5_locked(exc):   # one of the segments, named (R1: the unfinished file was)
                        raise _open_elsewhere_error(seg_path[s]) from None
                    raise
                files.append(f)
                blocks.append(writer.Block(f, np.arange(b - a), _out_rows(job, a, b),
                                       (float(f.attrs["mel_min_db"]), float(f.attrs["mel_max_db"]))))
            writer.finish_layout(partial, header, blocks)
        finally:
            for f in files:
                f.close()
        from .console import interrupts_deferred, outputs_published
        from .outputs import publish

        with interrupts_deferred():   # published: a signal changes nothing now (the work folder goes next)
            publish(partial, out)
            outputs_published()
    except OutputClash:
        raise RenderError(f"{out} was written by another command while this render ran; that file is kept, and this "
                          f"render's finished work stays in {parts}: move {out} away and rerun the same command to "
                          f"publish it, or delete {parts}") from None
    except (OSError, OutputError) as exc:   # a full disk: finished segments are kept for the rerun
        from .outputs import failure_reason

        for leftover in parts.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        if not any(parts.glob("seg-*.h5")):   # nothing rendered yet: no half-made file to keep either
            partial.unlink(missing_ok=True)
        where = "" if isinstance(exc, OutputError) else f"writing {getattr(exc, 'filename', None) or parts}: "
        said = failure_reason(exc)
        if hdf5_locked(exc):
            raise _open_elsewhere_error(partial) from None
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or \
            any(w in said.lower() for w in ("no space left", "quota", "free space"))
        # not every failure is a full disk: a folder deleted or made read-only while the job ran
        todo = "free space" if full else "fix that"
        raise RenderError(f"{where}{said}; {todo} and rerun the same command to continue") from None
    shutil.rmtree(parts, ignore_errors=True)
    summary = summarize_output(out, rendered, time.perf_counter() - t0)
    summary.startup = startup
    return summary


def _out_rows(job: Job, start: int, stop: int) -> np.ndarray:
    """Rows of the output file of selection positions ``[start, stop)`` (a shard's file holds its segments only)."""
    return np.searchsorted(job.rows, np.arange(start, stop))


def _recorded_command(partial: Path) -> str | None:
    """The creation command an unfinished dataset file records (None if there is none to read)."""
    import h5py

    try:
        with h5py.File(partial, "r") as f:
            command = f.attrs.get("command")
    except Exception:  # noqa: BLE001 - missing or damaged: nothing to show
        return None
    return command.decode() if isinstance(command, bytes) else (str(command) if command is not None else None)


def _layout_matches(partial: Path, header: ds.DatasetHeader, extra: dict | None, n: int) -> bool:
    """Whether ``partial`` is this job's unfinished dataset file (same attributes, rows and layout).

    Its creation command may differ: the job record (``job.json``) already says it is this job,
    and the same job typed another way (``cat.h5`` and ``/data/cat.h5``) threw its rows away."""
    if not partial.exists():
        return False
    import h5py

    want = {k: v for k, v in {**header.attrs(), **(extra or {})}.items() if k != "command"}
    try:
        with h5py.File(partial, "r") as f:
            same = all(np.array_equal(np.asarray(f.attrs.get(k)), np.asarray(v)) for k, v in want.items())
            same = same and f["presets/id"].shape[0] == n
        if same and writer.in_place(header.storage):
            writer.row_slots(partial, header)   # its arrays are where rows can be written
        return same
    except Exception as exc:  # noqa: BLE001 - unreadable or damaged: made again
        if hdf5_locked(exc):   # not damaged: its finished segments were thrown away (R1)
            raise _open_elsewhere_error(partial) from None
        return False


def _open_elsewhere_error(path: Path) -> RenderError:
    return RenderError(f"{path} is open in another program (HDF5 locks a file while a program has it open); close "
                       "it there, then rerun the same command to continue")


def _differences(there: dict, here: dict, prefix: str = "") -> list[str]:
    """What differs between two job records, one phrase per key (nested keys joined by dots):
    ``"config.engine (dexed there, dawdreamer here)"``."""
    def show(v) -> str:
        return "none" if v is None else (repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "...")

    out = []
    for k in sorted(set(there) | set(here)):
        a, b = there.get(k), here.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k} ({show(a)} there, {show(b)} here)")
    return out


def claim_job_file(job_file: Path, record: dict, other_job: str) -> bool:
    """Record a job in ``job_file`` (atomically), or check that the job recorded there is this one.

    Returns whether the file existed already (a resumed job). Raises :class:`RenderError` with the
    message ``other_job`` when it holds another job (or cannot be read).
    """
    if job_file.exists():
        try:
            previous = json.loads(job_file.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != record:
            if isinstance(previous, dict):
                other_job += f" (differs in: {'; '.join(_differences(previous, record))})"
            raise RenderError(other_job)
        return True
    from .outputs import write_text

    write_text(job_file, json.dumps(record, indent=1, sort_keys=True), "job record")
    return False


def _same_command(recorded, command: str) -> bool:
    """Whether the creation command ``recorded`` in a file is ``command`` with its paths (the
    catalogue, ``--plugin``, ``--ids``) spelled the same or otherwise (``./x``, a trailing slash, an
    absolute path): a resume takes them as the same job, so a rerun of the finished file does too."""
    if recorded == command:
        return True
    try:
        a, b = shlex.split(str(recorded)), shlex.split(command)
    except ValueError:
        return False
    if len(a) != len(b) or len(a) < 3:
        return False
    paths = {2} | {i + 1 for i, w in enumerate(b[:-1]) if w in ("--plugin", "--ids")}
    return all(x == y or (i in paths and os.path.realpath(x) == os.path.realpath(y)) for i, (x, y) in enumerate(zip(a, b)))


def check_finished(out: Path, job: Job) -> None:
    """``out`` exists: accept it only when it is the complete output of this very job."""
    import h5py

    try:
        with h5py.File(out, "r") as f:
            ds.check_file(f, out)
            same_command = _same_command(f.attrs.get("command"), job.command) and \
                str(f.attrs.get("shard", "None")) == str(job.shard)
            same = same_command and f.attrs.get("selection_hash") == job.selection_hash
            made_with = str(f.attrs.get("engine_version", ""))
    except OSError:
        same = same_command = False
    if same_command and not same:
        raise RenderError(f"{out} was rendered by this command from other catalogue content (the catalogue was written "
                          "again since, or an earlier dexed-data recorded less of it), so it is not this render's "
                          "output; delete it (or choose another -o) to render again")
    if not same:
        raise RenderError(f"{out} already exists and was not made by this command; choose another -o or delete it")
    from .engines import make_engine

    now = make_engine(job.config.engine_spec).version
    if made_with != now:
        raise RenderError(f"{out} was rendered by this command with another engine version ({made_with}; now {now}), "
                          "so its audio may differ; delete it (or choose another -o) to render it again")


def summarize_output(out: Path, rendered: int, seconds: float) -> RenderSummary:
    """The :class:`RenderSummary` of a finished output file (``rendered`` presets by this run)."""
    with ds.DatasetReader(out) as r:
        ok = r.status == ds.STATUS_OK
        failures = list(r.errors.items())[:10]
        return RenderSummary(out, len(r), rendered, int(ok.sum()), int((r.status == ds.STATUS_FAILED).sum()),
                             int((r.silent & ok).sum()), seconds, out.stat().st_size, failures)


def _new_executor(jobs: int):
    # Reusable: a second job in the same process (tests, notebooks) skips the workers' start-up
    # (importing torch takes a second); workers re-initialise when the config changes.
    # The main process stops the workers (it kills them on any exception, an interrupt included);
    # what they leave is what kill -9 leaves, which a rerun resumes from.
    return _start_pool(jobs, _THREAD_ENV, 300)


def _start_pool(jobs: int, env: dict, timeout: int):
    """The reusable loky executor of every pool here: its workers (and loky's resource tracker)
    start now, with the group's signals held, so one that lands while they import (before the
    initializer) neither kills them mid-message nor makes each print its own traceback, and still
    reaches this process; then they ignore those signals (:func:`worker_signals`)."""
    import warnings

    from joblib.externals.loky import get_reusable_executor

    # loky's manager thread warns when a worker stops with work pending: here that is a worker the
    # job kills (an interrupt, a timeout) or one that crashed, which the job itself reports per
    # preset; the warning only printed a second, alarming line after an interrupt's one line
    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor",
                            category=UserWarning)
    _watch_manager_thread()
    with _held(_GROUP_SIGNALS):
        try:
            _start_trackers()
            ex = get_reusable_executor(max_workers=jobs, env=env, timeout=timeout, initializer=worker_signals,
                                        initargs=(os.getpid(),))
            if not any(e is ex for e in _EXECUTORS):
                _EXECUTORS.append(ex)
            ex.submit(int)
        except Exception as exc:   # noqa: BLE001 - out of descriptors, processes or memory: loky fails in many ways
            raise RenderError(f"cannot start {jobs} worker process(es) ({type(exc).__name__}: {exc}); the system's "
                              f"limits may be too low ({_limits()}): raise them, or use fewer --jobs") from None
    return ex


def _limits() -> str:
    """This process's limits that starting workers needs, as ``ulimit`` shows them."""
    import resource

    def show(which, unit: int = 1, suffix: str = "") -> str:
        soft = resource.getrlimit(which)[0]
        return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // unit}{suffix}"

    return (f"open files (ulimit -n) {show(resource.RLIMIT_NOFILE)}, processes (ulimit -u) "
            f"{show(resource.RLIMIT_NPROC)}, memory (ulimit -v) {show(resource.RLIMIT_AS, 1024, ' kB')}")


def _start_trackers() -> None:
    """Start loky's and multiprocessing's resource trackers (each once per process), then hold
    the group's signals again: Python 3.11's tracker unblocks SIGINT and SIGTERM in the thread
    that started it, and the workers started next would inherit that."""
    import signal
    from multiprocessing import resource_tracker as stdlib_tracker

    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    with _TRACKER_LOCK:   # the environment variable is set only while the tracker first starts
        with _quiet_tracker() if not _TRACKER_STARTED else contextlib.nullcontext():
            loky_tracker.ensure_running()
        _TRACKER_STARTED.append(True)
    stdlib_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {getattr(signal, n) for n in _GROUP_SIGNALS})


@contextlib.contextmanager
def _held(names):
    """Hold back (block) these signals in this thread while it starts processes: a new program
    inherits the mask, so workers start with them blocked (their initializer then ignores them)
    and loky's resource tracker never sees SIGHUP. Here they are only delayed: one that arrives
    meanwhile is delivered when the block ends (ignoring them instead lost a Ctrl-C pressed
    while the workers started)."""
    import signal

    held = {getattr(signal, n) for n in names}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def group_signals_held():
    """:func:`_held` for the signals a process group gets (Ctrl-C, SIGTERM, SIGHUP): for processes
    started by others (``fit``'s data-loading workers), whose own start then sets their handlers and
    unblocks them."""
    return _held(_GROUP_SIGNALS)


_TRACKER_LOCK = threading.Lock()
_TRACKER_STARTED: list = []


@contextlib.contextmanager
def _quiet_tracker():
    """Start loky's resource tracker (if this is where it starts) without its warnings. At exit it
    sometimes warns of a "leaked semlock" that it then fails to remove because it is already gone
    (FileNotFoundError; seen once in ~45 ``match --refine --jobs 2``): the semaphore was removed and
    only the tracker's notice of it was lost as the interpreter shut down. Nothing is left behind,
    and a user would take the two warnings for a fault."""
    quiet = "ignore::UserWarning:joblib.externals.loky.backend.resource_tracker"
    found = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = quiet if not found else f"{found},{quiet}"
    try:
        yield
    finally:
        if found is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = found


_EXECUTORS: list = []
#: (thread, exception) that ended a loky manager thread (:func:`_watch_manager_thread`).
_MANAGER_FAILED: list[tuple[threading.Thread, BaseException]] = []


def _watch_manager_thread() -> None:
    """Record, instead of printing, an exception that ends loky's manager thread, which hands the
    work to the workers: under a low memory limit (``ulimit -v``) it could not start its queue's
    feeder thread, printed a traceback and died, and the job waited for ever for a result that
    nothing would deliver. :func:`_first_result` turns it into one line."""
    previous = threading.excepthook
    if getattr(previous, "watches_loky", False):
        return

    def hook(args) -> None:
        if args.thread is not None and args.thread.name == "ExecutorManagerThread":
            _MANAGER_FAILED.append((args.thread, args.exc_value))
            return
        previous(args)
    hook.watches_loky = True
    threading.excepthook = hook


def _first_result(future, jobs: int, executor):
    """The result of the first task the workers run, or a :class:`RenderError` naming the system's
    limits when ``executor``'s manager thread died and could not deliver it (:func:`_watch_manager_thread`).

    Only that executor's thread counts: the manager thread of a pool shut down from another thread
    (:func:`shutdown_workers` while a job ran) can end later with loky's own ``KeyError``, and the next
    job, in a new pool, refused to start for it (seen once in CI)."""
    from concurrent.futures import TimeoutError as Pending

    while True:
        try:
            return future.result(timeout=1.0)
        except Pending:
            manager = getattr(executor, "_executor_manager_thread", None)
            failed = [exc for thread, exc in _MANAGER_FAILED if manager is None or thread is manager]
            if failed:
                exc = failed[-1]
                raise RenderError(f"cannot run {jobs} worker process(es) ({type(exc).__name__}: {exc}); the "
                                  f"system's limits may be too low ({_limits()}): raise them, or use fewer "
                                  "--jobs") from None


#: What a terminal, ``timeout`` or a batch system sends to a whole process group.
_GROUP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def worker_signals(parent: int | None = None) -> None:
    """Initializer of every loky worker this module starts (render's and :func:`helper_pool`'s):
    end with the parent, and leave the group's signals to it.

    Ctrl-C (and ``timeout``, a batch system, a closed terminal) signals the whole process group.
    A worker that dies or is interrupted while it sends a result leaves half a message in the
    pipe the workers share, and loky's reader in the parent then waits for the rest for ever
    (seen about once in 30 Ctrl-C, and 2 in 23 SIGTERM, of ``match --refine --jobs 2``); a
    worker interrupted while it starts prints its own traceback (2 in 24 Ctrl-C of ``render
    --jobs 2`` in its first 3 s). The parent stops its workers itself (it kills them, which
    closes the pipe), and :func:`exit_with_parent` ends them if it dies.
    """
    import signal

    group = {getattr(signal, name) for name in _GROUP_SIGNALS}
    for signum in group:
        signal.signal(signum, signal.SIG_IGN)
    if "PYTHONFAULTHANDLER" not in os.environ:
        # loky would print ~40 lines of "Fatal Python error" for a worker that crashes (a damaged plug-in):
        # the parent says what happened in one line (PYTHONFAULTHANDLER=1 shows them again)
        faulthandler.enable(file=_devnull())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, group)   # started blocked (_held): pending ones are dropped
    exit_with_parent(parent)


def _killing_signal(exc: BaseException) -> str | None:
    """The signal loky's ``TerminatedWorkerError`` names (``"SIGKILL"``), if any."""
    how = re.search(r"\{(SIG\w+)", str(exc))
    return how[1] if how else None


def worker_died(exc: BaseException) -> str:
    """What loky's ``TerminatedWorkerError`` means, in one line: a worker process was killed (its signal)."""
    how = _killing_signal(exc)
    return f"a worker process was killed{f' ({how})' if how else ''} while it was needed"


def helper_pool(jobs: int, env: dict | None = None, timeout: int = 120):
    """A reusable loky executor of ``jobs`` workers for ``preset-model``'s renders (evaluate, match):
    one thread each (``env``, default the render workers' settings), they end with this process,
    ignore the signals a process group gets (the parent handles them) and are stopped by
    :func:`shutdown_workers`."""
    return _start_pool(jobs, _THREAD_ENV if env is None else env, timeout)


def shutdown_workers() -> None:
    """End this process's render workers now. A command line exits ~1 s sooner this way than
    through loky's exit handler, which waits for idle workers to notice; library users keep the
    reusable workers for their next job instead."""
    import signal

    while _EXECUTORS:
        ex = _EXECUTORS.pop()
        ex.shutdown(wait=True, kill_workers=True)
        for p in list(getattr(ex, "_processes", {}).values()):   # loky's manager thread, which kills them,
            if p.is_alive():                                     # may have died (_watch_manager_thread), and
                with contextlib.suppress(OSError):               # multiprocessing's exit handler would then
                    os.kill(p.pid, signal.SIGKILL)               # wait for these for ever
                p.join(5)


def _stopped_errors() -> tuple[type[BaseException], ...]:
    """What a task's result raises when its executor was shut down from outside the job."""
    from concurrent.futures import CancelledError

    from joblib.externals.loky.process_executor import ShutdownExecutorError

    return ShutdownExecutorError, CancelledError


class WorkersStopped(RenderError):
    """The job's worker processes were shut down from outside it (see :func:`_workers_stopped`)."""


def _workers_stopped(exc: BaseException) -> RenderError:
    """The job's workers were shut down from outside the job (its process is closing: a Dask worker
    stopped gracefully, a ``--cluster local:N`` client interrupted): the job stops as if
    interrupted. Its unfinished segments are not finished with "failed" presets, which a resume
    would then have kept for good."""
    return WorkersStopped(f"the render workers were stopped while the job ran ({type(exc).__name__}); its finished "
                          "segments are kept: rerun the same command to resume")


def _submit(executor, fn, *args):
    try:
        return executor.submit(fn, *args)
    except _stopped_errors() as exc:   # shut down between two tasks
        raise _workers_stopped(exc) from None


def _run(job: Job, segments, seg_path, header: ds.DatasetHeader, jobs: int, progress: bool, executor,
         partial: tuple[str, dict] | None) -> None:
    """Render ``segments`` with ``jobs`` workers, one segment per task: each worker writes its rows
    and publishes its segment file, and this process only counts finished segments.

    When a worker dies (a crash, or a preset hung past the timeout), every segment it took down is
    re-run one preset per task (:func:`_run_isolated`), which finds and records the culprit.
    """
    from joblib.externals.loky.process_executor import BrokenProcessPool
    from dexed_data.console import progress as progress_bar

    config = job.config
    pending: deque = deque(segments)
    inflight: dict = {}                       # future → segment
    bar = progress_bar(progress, total=sum(b - a for _, a, b in segments), unit=" presets", smoothing=0.05,
                       dynamic_ncols=True)
    failed = 0
    try:
        while pending or inflight:
            while pending and len(inflight) < 2 * jobs:
                seg = pending.popleft()
                _, a, b = seg
                rows = _out_rows(job, a, b)   # the output's rows are job.table's
                fut = _submit(executor, _render_segment, a, job.table.raw[rows], rows, config,
                              str(seg_path[seg[0]]), header, partial)
                inflight[fut] = seg
            done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
            lost = []
            for fut in done:
                seg = inflight.pop(fut)
                try:
                    ok, bad = fut.result()
                except BrokenProcessPool:
                    lost.append(seg)
                    continue
                except DexedDataError:   # a full disk (OutputError) ends the job cleanly
                    raise
                except _stopped_errors() as exc:
                    raise _workers_stopped(exc) from None
                except OSError as exc:
                    raise OutputError(f"cannot write {seg_path[seg[0]].parent}: {exc.strerror or exc}") from None
                except Exception:  # noqa: BLE001 - e.g. a result that cannot be unpickled: isolate the segment
                    lost.append(seg)
                    continue
                failed += bad
                bar.update(ok + bad)
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)
            if lost:   # a worker died: every segment in flight went down with the pool
                lost += list(inflight.values())
                inflight.clear()
                executor.shutdown(wait=False, kill_workers=True)
                executor = _new_executor(jobs)
                executor = _run_isolated(job, sorted(lost), seg_path, header, jobs, bar, executor, partial)
    except BaseException:
        executor.shutdown(wait=False, kill_workers=True)
        bar.close()
        raise
    bar.close()


def _run_isolated(job: Job, segments, seg_path, header: ds.DatasetHeader, jobs: int, bar, executor,
                  partial: tuple[str, dict] | None):
    """Re-run ``segments`` one preset per task; this process writes their rows and segment files.

    A preset whose worker dies is run alone to be sure it is the culprit, then recorded as failed;
    one that runs past ``timeout`` seconds has its worker killed and is recorded as timed out.
    Returns the executor (a new one when workers were restarted).
    """
    from joblib.externals.loky.process_executor import BrokenProcessPool

    config = job.config
    seg_of: dict[int, tuple[int, int, int]] = {}
    for seg in segments:
        for r in range(seg[1], seg[2]):
            seg_of[r] = seg
    pending: deque[int] = deque(r for _, a, b in segments for r in range(a, b))
    outputs: dict[int, _SegmentOutput] = {}
    inflight: OrderedDict = OrderedDict()     # future → [row, started_at or None]
    solo: set[int] = set()                    # rows to run alone (a worker died while they ran)
    window = 2 * jobs
    failed = [0]

    def store(result: writer.RowResult) -> None:
        s, a, b = seg_of[result.row]
        out = outputs.get(s)
        if out is None:
            out = outputs[s] = _SegmentOutput(str(seg_path[s]), a, b, _out_rows(job, a, b), header, partial)
        out.add(result)
        if out.full:
            out.finish()
            del outputs[s]
        failed[0] += result.status != ds.STATUS_OK
        bar.update(1)
        if failed[0]:
            bar.set_postfix(failed=failed[0], refresh=False)

    def restart() -> None:
        nonlocal executor
        executor.shutdown(wait=False, kill_workers=True)
        executor = _new_executor(jobs)

    try:
        while pending or inflight:
            isolate = bool(solo) and (any(r in solo for r, _ in inflight.values()) or pending[0] in solo)
            limit = 1 if isolate else window
            while pending and len(inflight) < limit and not (inflight and pending[0] in solo):
                row = pending.popleft()
                fut = _submit(executor, _render_guarded, row, job.table.raw[_out_rows(job, row, row + 1)[0]], config)
                inflight[fut] = [row, None]
            now = time.monotonic()
            # loky hands tasks out in order: the oldest `jobs` unfinished ones are the running ones
            for entry in list(inflight.values())[:jobs]:
                if entry[1] is None:
                    entry[1] = now
            done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
            broken = False
            for fut in [f for f in inflight if f in done]:
                row, _ = inflight.pop(fut)
                try:
                    result = fut.result()
                    solo.discard(row)
                except BrokenProcessPool:
                    broken = True
                    inflight[fut] = [row, None]     # handled below with the others
                    continue
                except DexedDataError:
                    raise
                except _stopped_errors() as exc:             # not the preset's fault: never recorded as failed
                    raise _workers_stopped(exc) from None
                except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                    result = writer.RowResult(row, ds.STATUS_FAILED, f"{type(exc).__name__}: {exc}")
                store(result)   # outside the handlers: a write error (full disk) ends the job cleanly
            if broken:
                rows = [r for r, _ in inflight.values()]
                inflight.clear()
                if len(rows) == 1:
                    solo.discard(rows[0])
                    store(writer.RowResult(rows[0], ds.STATUS_FAILED,
                                       f"the worker process died while rendering this preset "
                                       f"(crash, or hung for more than {config.timeout:g} s)"))
                else:
                    solo.update(rows)
                    pending.extendleft(reversed(rows))
                restart()
                continue
            now = time.monotonic()
            expired = [f for f, (_, t) in inflight.items() if t is not None and now - t > config.timeout]
            if expired:
                rows = [r for r, _ in inflight.values()]
                late = {inflight[f][0] for f in expired}
                inflight.clear()
                for r in late:
                    store(writer.RowResult(r, ds.STATUS_FAILED, f"timed out: rendering took more than {config.timeout:g} s"))
                pending.extendleft(reversed([r for r in rows if r not in late]))
                restart()
    except BaseException:
        for out in outputs.values():
            out.abandon()
        raise
    if outputs:  # cannot happen: every row of every segment was stored
        raise RenderError(f"internal error: segments {sorted(outputs)} incomplete")
    return executor


class _CallableModule(type(os)):
    """This module, callable: ``dexed_data.render(voice, notes=...)`` renders one voice
    (:func:`dexed_data.voice.render_voice`), while ``dexed_data.render.render_dataset`` and the
    rest of the render job stay where they are."""

    def __call__(self, voice, notes=None, hold: float = 3.0, release: float = 1.0, **kwargs):
        from .voice import DEFAULT_NOTES, render_voice

        return render_voice(voice, DEFAULT_NOTES if notes is None else notes, hold, release, **kwargs)

    def __reduce__(self):
        # pickled by name, as plain modules are (cloudpickle and Dask ship closures that refer to it)
        import importlib

        return importlib.import_module, (self.__name__,)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
