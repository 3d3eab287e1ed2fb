"""WAV files out of a dataset: `dexed-data export-wav` (stored audio, or re-rendered exactly when not stored)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .dataset import STATUS_OK
from .errors import DatasetError


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A 32-bit float mono WAV file of ``audio`` ``(T,)`` (not clipped), built in memory so that
    writing it goes through the one atomic, disk-full-safe path (libsndfile's own writes do not).

    The bytes depend on the audio alone: ``fmt `` (IEEE float, 18 bytes), ``fact`` and ``data``
    chunks, and no ``PEAK`` chunk (libsndfile's carries a time stamp, so the same audio gave
    other bytes on every export).
    """
    import struct

    x = np.ascontiguousarray(np.asarray(audio, np.float32).reshape(-1)).astype("<f4")
    rate = int(sample_rate)
    fmt = struct.pack("<HHIIHHH", 3, 1, rate, rate * 4, 4, 32, 0)         # WAVE_FORMAT_IEEE_FLOAT, mono
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, len(x))
            + b"data" + struct.pack("<I", 4 * len(x)) + x.tobytes())
    return b"RIFF" + struct.pack("<I", len(body)) + body


def export_wav(path, out_dir, ids: Sequence[str] | None = None, limit: int | None = None,
               force: bool = False, inputs: Sequence = (), progress: bool = False) -> list[Path]:
    """Write presets' audio as 32-bit float wav files (not clipped), one per note; returns the files.

    Files are named ``ID_NAME_PITCH-VELOCITY.wav`` (name made file-safe). ``ids`` picks presets in
    the order given; without ``ids``, the first ``limit`` (default 10) rendered presets. When the
    file stores no audio (the default), the presets are rendered again from ``/presets/raw`` with
    the file's settings: rendering is deterministic, so this is the audio the dataset was made from.

    Each file is written atomically, and all of them together (:func:`dexed_data.outputs.together`):
    an error or an interrupt half-way leaves none. Existing files of the same names are refused
    unless ``force`` (see :mod:`dexed_data.outputs`), all checked before the first file is written;
    ``inputs`` (an ``--ids`` file) and the dataset are never replaced. ``progress``: a progress bar of
    the presets written (rendered again), on stderr.

    Raises:
        DatasetError: unknown id, a preset that failed to render, no rendered preset at all (without
            ``ids``), or no audio stored and the file's engine cannot be rebuilt here (another
            engine version, a plug-in).
        OutputError: a file exists (without ``force``) or the folder cannot be written.
    """
    from .outputs import check_folder, together, write_bytes

    if limit is not None and limit < 1:
        raise DatasetError(f"--limit {limit}: must be ≥ 1")
    out_dir = Path(out_dir)
    from .errors import OutputError
    from .inputs import unreachable

    why = unreachable(out_dir)     # a folder on its way that cannot be entered, a name too long: one line
    if why is not None:
        raise OutputError(f"cannot write to output folder {out_dir}: {why}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output folder {out_dir} is a file; give a folder")
    from .access import open_dataset

    with open_dataset(path) as ds:
        if "audio" not in ds.file:
            ds.rerender_engine()   # before any file is written: the audio can be made again here
        if ids is None:
            rows = list(np.flatnonzero(ds.status == STATUS_OK)[: 10 if limit is None else limit])
            if not rows:   # as export does when nothing is selected: an error, not a silent success
                if not len(ds):
                    raise DatasetError(f"{path}: nothing to export: the dataset holds no presets")
                reasons = [f"{pid}: {why}" for pid, why in ds.errors.items() if why]
                raise DatasetError(f"{path}: nothing to export: all {len(ds)} presets failed to render"
                                   + (f" (e.g. {reasons[0]})" if reasons else "") + f"; see `dexed-data info {path}`")
        else:
            unknown = list(dict.fromkeys(i for i in ids if not ds.has(i)))
            if unknown:   # all of them in one line, as export says it (A9: the first one only)
                raise DatasetError(f"{path}: {len(unknown)} id(s) not in the dataset: {', '.join(unknown[:10])}"
                                   f"{' ...' if len(unknown) > 10 else ''}; list its ids with `dexed-data list {path}`")
            rows = list(dict.fromkeys(ds.index(i) for i in ids))[:limit]   # an id given twice is written once
            failed = [ds.ids[r] for r in rows if ds.status[r] != STATUS_OK]
            if failed:
                raise DatasetError(f"{path}: preset(s) {', '.join(failed[:5])} failed to render; no audio to export")
        def names(r: int) -> list[str]:
            name = ds.names[r].replace("\x00", " ").strip()          # names may end in NULs, as found
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "unnamed"
            return [f"{ds.ids[r]}_{safe}_{pitch}-{velocity}.wav" for pitch, velocity in ds.info.notes]

        check_folder(out_dir, [n for r in rows for n in names(r)], force=force, inputs=[path, *inputs])
        written = []
        from .console import progress as progress_bar

        with together(last=True), progress_bar(progress and len(rows) > 1, total=len(rows), unit=" presets",
                                               desc="export-wav", leave=False) as bar:   # every file, or none
            for r in rows:                                                               # (nor their folders)
                audio = ds.audio(r)   # stored, or rendered again exactly
                for name, note in zip(names(r), audio):
                    target = out_dir / name
                    write_bytes(target, wav_bytes(note, ds.info.sample_rate), "wav file")
                    written.append(target)
                bar.update()
    return written
