"""Opening the HDF5 files a command is given, with one clear line for every way they can be wrong.

Missing, a folder, empty, not HDF5, truncated (a copy cut short, a disk that filled up) or
unreadable: each gives one sentence naming the file and what to do, raised as the caller's
error class (``CatalogueError``, ``DatasetError``, ...). Format, version and schema checks stay
with each file kind's reader (:mod:`dexed_data.catalogue`, :mod:`dexed_data.dataset`).

Example::

    >>> from dexed_data.errors import DatasetError
    >>> from dexed_data.inputs import open_hdf5
    >>> open_hdf5("/nonexistent.h5", "dataset", DatasetError)
    Traceback (most recent call last):
    ...
    dexed_data.errors.DatasetError: /nonexistent.h5: no such dataset file
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from .errors import DexedDataError


def first_line(exc: BaseException) -> str:
    """An exception's text cut to its first line (HDF5's messages run over several)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_hdf5(path: str | os.PathLike, what: str, error: type[DexedDataError] = DexedDataError) -> h5py.File:
    """Open ``path`` read-only as HDF5, or raise ``error`` with one line (``what`` names the file kind)."""
    if path is None:
        raise error(f"give the path of a {what} file, not None")
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such {what} file")
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what} file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise error(f"{path}: empty file (0 bytes), not a {what}; was it written to a full disk?")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: not readable (permissions)")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as f:
            sysex = f.read(1) == b"\xf0" or path.suffix.lower() in (".syx", ".mid", ".midi")
        if sysex:
            first = "import it first: `dexed-data import-sysex " + str(path) + " -o presets.h5`"
            if what != "catalogue":
                first += ", then `dexed-data render presets.h5 -o dataset.h5`"
            raise error(f"{path}: DX7 SysEx, not a {what}; {first}")
        raise error(f"{path}: not an HDF5 file, so not a {what} (text, SysEx or another format?)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise error(f"{path}: damaged HDF5 file, cannot be opened ({first_line(exc)}); it may be truncated: "
                    "copy or write it again") from None


def damaged(path, exc: BaseException, error: type[DexedDataError] = DexedDataError) -> DexedDataError:
    """The error for a file that opened but fails while being read (missing or cut-off data)."""
    if isinstance(exc, KeyError):
        return error(f"{path}: malformed file, missing {first_line(exc)}; write it again with this toolkit")
    return error(f"{path}: damaged file, reading failed ({type(exc).__name__}: {first_line(exc)}); "
                 "it may be truncated: copy or write it again")
