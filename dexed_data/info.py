"""What ``dexed-data info`` prints: a file's kind (catalogue, dataset or SysEx) and its summary.

:func:`describe` tells the kind from the file itself (an HDF5 file by its ``format`` attribute,
anything else is read as SysEx) and returns the text the command prints; its terms are defined in
docs/QUALITY.md. Every summary is also available as data: :func:`dexed_data.catalogue.describe_catalogue`,
:func:`dexed_data.sysex.describe_sysex` and, for a dataset, :func:`dexed_data.report.summarize`.

Example::

    >>> print(describe("presets/toolkit_bank_a.syx").splitlines()[:3])
    ['file: presets/toolkit_bank_a.syx', 'format: sysex', 'messages: 1']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DexedDataError

__all__ = ["describe", "describe_dataset", "file_kind", "format_mapping"]

def file_kind(path) -> str:
    """``"catalogue"``, ``"dataset"`` or ``"sysex"`` (any file that is not HDF5 is read as SysEx).

    Raises:
        DexedDataError: no such file, a damaged HDF5 file, or HDF5 of another format.
    """
    import h5py

    from .catalogue import FORMAT as CATALOGUE_FORMAT
    from .dataset import FORMAT as DATASET_FORMAT
    from .inputs import format_attr, no_such, open_hdf5, unreachable

    path = Path(path)
    why = unreachable(path)
    if why is not None:
        raise DexedDataError(f"{path}: cannot be read: {why}")
    if path.is_dir():
        raise DexedDataError(f"{path} is a folder; give a catalogue, a dataset or a .syx file")
    if not path.is_file():
        if not path.exists():
            raise DexedDataError(no_such(path))
        raise DexedDataError(f"{path}: not a regular file (a device or pipe); give a catalogue, a dataset or a .syx file")
    try:
        with open(path, "rb") as f:
            signature = f.read(8)
    except OSError as exc:
        raise DexedDataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if not signature and path.suffix.lower() in (".h5", ".hdf5"):   # as `list` says it (it read as SysEx)
        raise DexedDataError(f"{path}: empty file (0 bytes), not a catalogue or dataset; was it written to a full disk?")
    if signature != b"\x89HDF\r\n\x1a\n" and not h5py.is_hdf5(path):   # a truncated HDF5 file still starts so
        return "sysex"
    with open_hdf5(path, "HDF5", DexedDataError) as f:
        fmt = format_attr(f)
    kinds = {CATALOGUE_FORMAT: "catalogue", DATASET_FORMAT: "dataset"}
    if fmt is None and Path(path).resolve().parent.name.endswith(".parts"):   # A9: "unknown format None"
        raise DexedDataError(f"{path}: a segment of an unfinished render (its folder {Path(path).parent.name} is the "
                             "render's work), not a dataset; rerun that render command to finish it, then use "
                             "its dataset")
    if fmt not in kinds:
        raise DexedDataError(f"{path}: HDF5 file of unknown format {fmt!r}; expected 'dexed-catalogue' or 'dexed-dataset'")
    return kinds[fmt]


def describe(path) -> str:
    """The summary ``dexed-data info`` prints for a catalogue, a dataset or a SysEx file.

    Raises:
        DexedDataError: the file is missing, damaged, or of a format or version this code cannot read.
    """
    kind = file_kind(path)
    if kind == "catalogue":
        from .catalogue import describe_catalogue

        return format_mapping(describe_catalogue(path))
    if kind == "dataset":
        return describe_dataset(path)
    from .sysex import describe_sysex

    summary = describe_sysex(path)
    if not summary["voices"]:
        problems = summary["problems"]
        more = summary.get("problem_count", len(problems)) - 1
        first = f" ({problems[0]}{f'; and {more:,} more' if more > 0 else ''})" if problems else ""
        raise DexedDataError(f"{path}: no DX7 voice in it{first}; give a catalogue, a dataset or a DX7 .syx file")
    return format_mapping(summary)


def format_mapping(info: dict) -> str:
    """``key: value`` lines; a list value as indented lines below its key (pairs as ``a  b``); control
    characters (a newline in a file name) escaped."""
    from .access import printable_path as shown   # a newline in a file name is shown as \n

    lines = []
    for key, value in info.items():
        if isinstance(value, list):
            lines.append(f"{key}:" if value else f"{key}: none")   # not a heading over nothing
            for item in value:
                lines.append(f"  {shown(str(item[0]))}  {shown(str(item[1]))}"
                             if isinstance(item, (list, tuple)) and len(item) == 2 else f"  {shown(str(item))}")
        else:
            lines.append(f"{key}: {shown(str(value))}")
    return "\n".join(lines)


def describe_dataset(path) -> str:
    """A human summary of a dataset file: render settings, the quality counts of
    :func:`dexed_data.report.summarize`, storage and failures (an incomplete file is described too)."""
    from .dataset import STATUS_FAILED, STATUS_OK, DatasetReader
    from .storage import BIG_ARRAYS
    from .report import NO_MEL_BOUNDS, summarize
    from .schema import format_fixed

    with DatasetReader(path, allow_incomplete=True) as ds:
        h, info = ds.info.header, ds.info
        ok = int(np.sum(ds.status == STATUS_OK))
        failed = int(np.sum(ds.status == STATUS_FAILED))
        silent = int(np.sum(ds.silent & (ds.status == STATUS_OK)))
        lines = [
            f"{path}: dexed dataset, format version {info.format_version}, schema {info.schema_hash}"
            + ("" if info.complete else "  ** INCOMPLETE **") + (f", shard {info.shard}" if info.shard else ""),
            f"  engine        {h.engine_text}, {h.sample_rate} Hz, hold {h.hold:g} s + release {h.release:g} s",
            f"  notes         {', '.join(f'{p}:{v}' for p, v in h.notes)}",
            f"  presets       {len(ds)} ({ok} ok, {failed} failed, {silent} near-silent; {len(ds.usable())} usable)",
            "  mel bounds    " + (f"{info.mel_min_db:.2f} … {info.mel_max_db:.2f} dB"
                                     if np.isfinite([info.mel_min_db, info.mel_max_db]).all()
                                     else NO_MEL_BOUNDS),
            f"  fixed params  {format_fixed(h.fixed_params)}",
        ]
        if not h.operators:
            lines.append("  operators     not measured (--no-operators, or a plug-in's mixed output): /operator_db "
                         "NaN, /audible all true")
        lines += summarize(ds).lines()   # dataset quality: dedup by sound, silence per note
        for name in BIG_ARRAYS:
            if name in ds.file:
                d = ds.file[name]
                stored = d.id.get_storage_size()
                # uncompressed rows are reserved for every preset, failed ones included; compressed
                # chunks are written for the rendered presets only
                rows = len(ds) if d.chunks is None else ok
                lines.append(f"  {name:<13} {d.shape} {d.dtype}, {h.storage.compression}, "
                             f"{stored / max(rows, 1) / 1e6:.3f} MB/preset, {stored / 1e9:.2f} GB")
            else:
                lines.append(f"  {name:<13} not stored")
        lines.append(f"  file size     {os.path.getsize(path) / 1e9:.3f} GB")
        lines.append(f"  command       {h.command}")
        if failed:
            for pid, reason in list(ds.errors.items())[:5]:
                lines.append(f"  failed        {pid}: {reason}")
    return "\n".join(lines)
