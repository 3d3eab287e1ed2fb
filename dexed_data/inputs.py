"""Opening the HDF5 files a command is given, with one clear line for every way they can be wrong.

Missing, a folder, empty, not HDF5, truncated (a copy cut short, a disk that filled up) or
unreadable: each gives one sentence naming the file and what to do, raised as the caller's
error class (``CatalogueError``, ``DatasetError``, ...). Format, version and schema checks stay
with each file kind's reader (:mod:`dexed_data.catalogue`, :mod:`dexed_data.dataset`), which
check their arrays with :func:`check_array`, :func:`check_rows` and :func:`check_raw_values` here.

Example::

    >>> from dexed_data.errors import DatasetError
    >>> from dexed_data.inputs import open_hdf5
    >>> open_hdf5("/nonexistent.h5", "dataset", DatasetError)
    Traceback (most recent call last):
    ...
    dexed_data.errors.DatasetError: /nonexistent.h5: no such dataset file
"""

from __future__ import annotations

import errno
import os
import resource   # here, not when no file descriptor is left: importing it opens a file
import re
from pathlib import Path

import h5py
import numpy as np

from .errors import DexedDataError


def row_numbers(rows, path, error: type[DexedDataError] = DexedDataError) -> np.ndarray:
    """``rows`` as int64 row numbers, refused unless a 1-D sequence of whole numbers (one line naming ``path``)."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise error(f"{path}: rows are a sequence of whole row numbers, got {rows.dtype} of shape {rows.shape}")
    return rows.astype(np.int64)


def check_mel_selection(f: h5py.File, path, rows: np.ndarray, notes, error: type[DexedDataError] = DexedDataError,
                        fix: str = "render it with --store mel (the default)") -> None:
    """Refuse a selection of a dataset's ``/mel`` that is not there: no ``/mel``, a row or note index out of range."""
    if "mel" not in f:
        raise error(f"{path}: no /mel stored; {fix}")
    n, k = f["mel"].shape[:2]
    bad = rows[(rows < 0) | (rows >= n)]
    if bad.size:
        raise error(f"{path}: row {bad[0]} is out of range; this dataset has {n} rows (0–{n - 1})")
    if notes is None:
        return
    index = np.asarray(notes)
    if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):   # (pitch, velocity) pairs are not indices
        raise error(f"{path}: notes {np.asarray(notes).tolist()}: give indices of the file's {k} notes (0–{k - 1}, "
                    "in the order of its `notes` attribute), not (pitch, velocity) pairs")
    if not all(0 <= int(j) < k for j in index):
        raise error(f"{path}: notes {[int(j) for j in index]}: indices of the file's {k} notes are 0–{k - 1}")


def first_line(exc: BaseException) -> str:
    """An exception's text cut to its first line (HDF5's messages run over several)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def no_such(path: str | os.PathLike, what: str = "file") -> str:
    """The message for a missing input: "PATH: no such WHAT", naming the render that has not
    published it yet when ``PATH.parts`` is there (interrupted, or still running)."""
    parts = Path(str(path) + ".parts")
    if parts.is_dir():
        return (f"{path}: no such {what} yet: {parts} holds an unfinished render of it; rerun that render command "
                "to finish it (or wait for it)")
    return f"{path}: no such {what}"


#: Why a path cannot even be looked up, by errno (:func:`unreachable`).
_UNREACHABLE = {
    errno.EACCES: "a folder on its way cannot be entered (permission denied)",
    errno.ENAMETOOLONG: "the name is too long for the file system (255 bytes per name at most)",
    errno.ELOOP: "it is a loop of links (a link that leads back to itself)",
}


def lookup_failure(exc: OSError) -> str:
    """What to say of a path whose lookup raised ``exc``: why, and what to do (by errno)."""
    why = _UNREACHABLE.get(exc.errno, exc.strerror or str(exc)) if exc.errno != errno.EACCES else "Permission denied"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{why}; check the permissions of it and of the folders above it"
    if exc.errno == errno.ENAMETOOLONG:
        return f"{why}; give a shorter name"
    return why


def unreachable(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be looked up at all (a folder on its way that cannot be entered, a name
    too long, a loop of links), or None: it exists, or plainly does not (Python 3.11's
    ``Path.exists()`` raises for these instead of answering)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        return _UNREACHABLE.get(exc.errno, exc.strerror or str(exc))
    except ValueError:   # an embedded NUL
        return "the name holds a NUL character"
    return None


def format_attr(f: h5py.File, error: type[DexedDataError] = DexedDataError) -> str | None:
    """A file's ``format`` attribute as text; None when it has none. A value that is not one
    string (an array, a number, undecodable bytes: another program's file) comes back as a text
    that names no format of this toolkit, so comparisons and messages work on any file.

    Raises:
        ``error``: HDF5 cannot read the file's attributes back (a damaged copy: A9, it was called a
        file "of unknown format '<unreadable: OSError>'").
    """
    def damaged(exc: BaseException) -> DexedDataError:
        return error(f"{f.filename}: damaged HDF5 file, its attributes cannot be read ({first_line(exc)}); it may "
                     "be truncated or overwritten in part: copy or write it again")

    try:
        if "format" not in f.attrs:
            return None
        text = f.attrs.get_id("format").get_type().get_class() == h5py.h5t.STRING
    except OSError as exc:
        raise damaged(exc) from None
    try:
        value = f.attrs.get("format")
    except Exception as exc:  # noqa: BLE001 - h5py cannot read some attribute types at all
        if text and isinstance(exc, OSError):   # a string whose bytes do not read back: damage (A9), not a
            raise damaged(exc) from None        # type h5py cannot convert (another program's file, R13)
        return f"<unreadable: {type(exc).__name__}>"
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value is None or isinstance(value, str):
        return value
    return f"<not text: {type(value).__name__}>"


def open_hdf5(path: str | os.PathLike, what: str, error: type[DexedDataError] = DexedDataError) -> h5py.File:
    """Open ``path`` read-only as HDF5, or raise ``error`` with one line (``what`` names the file kind)."""
    if path is None:
        raise error(f"give the path of a {what} file, not None")
    if not isinstance(path, (str, os.PathLike)):
        raise error(f"{path!r}: give the path of a {what} file (a str or Path)")
    path = Path(path)
    why = unreachable(path)
    if why is not None:
        raise error(f"{path}: cannot be read: {why}")
    if not path.exists():
        raise error(no_such(path, f"{what} file"))
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what} file")
    if not path.is_file():
        raise error(f"{path}: not a regular file (a device or pipe), not a {what} file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise error(f"{path}: empty file (0 bytes), not a {what}; was it written to a full disk?")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: not readable (permissions)")
    try:
        return _open_checked(path, what, error)
    except OSError as exc:
        if not _no_descriptor_left(exc):
            raise
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        raise error(f"{path}: cannot be opened: this command has as many files open as the system allows "
                    f"(`ulimit -n`: {soft}); raise the limit (e.g. `ulimit -n {max(4096, 4 * soft)}`) or give "
                    "fewer files at once, and run it again") from None


def _no_descriptor_left(exc: OSError) -> bool:
    """Whether ``exc`` says the process has as many files open as ``ulimit -n`` allows (HDF5 says it in words)."""
    return exc.errno == errno.EMFILE or "Too many open files" in str(exc)


def _open_checked(path: Path, what: str, error: type[DexedDataError]) -> h5py.File:
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
        if _no_descriptor_left(exc):   # (said by open_hdf5)
            raise
        if hdf5_locked(exc):   # another program writes it
            raise error(f"{path}: open for writing by another program (HDF5 locks it meanwhile); wait until it is "
                        "done, or close it there, then run this again") from None
        raise error(f"{path}: damaged HDF5 file, cannot be opened ({first_line(exc)}); it may be truncated: "
                    "copy or write it again") from None


def hdf5_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is HDF5 refusing a file that another program has open (its file lock)."""
    return isinstance(exc, OSError) and (exc.errno == errno.EAGAIN or "unable to lock file" in str(exc))


def damaged(path, exc: BaseException, error: type[DexedDataError] = DexedDataError) -> DexedDataError:
    """The error for a file that opened but fails while being read (missing or cut-off data)."""
    if isinstance(exc, KeyError):
        return error(f"{path}: malformed file, missing {first_line(exc)}; write it again with this toolkit")
    return error(f"{path}: damaged file, reading failed ({type(exc).__name__}: {first_line(exc)}); "
                 "it may be truncated: copy or write it again")


#: What :func:`check_array` accepts for each ``kind`` of array.
_KINDS = {
    "uint8": ("uint8", lambda dt: dt == np.uint8),
    "int": ("integers", lambda dt: dt.kind in "iu"),
    "float": ("floats", lambda dt: dt.kind == "f"),
    "bool": ("booleans", lambda dt: dt.kind == "b"),
    "bytes": ("fixed-length bytes", lambda dt: dt.kind == "S"),
    "text": ("strings", lambda dt: h5py.check_string_dtype(dt) is not None),
}


def check_array(f: h5py.File, name: str, shape: tuple[int | None, ...], kind: str, path, what: str,
                error: type[DexedDataError], fix: str) -> h5py.Dataset:
    """The dataset ``name`` of ``f``, refused unless it has ``shape`` (``None``: any length) and
    holds ``kind`` (``"uint8"``, ``"int"``, ``"float"``, ``"bool"``, ``"bytes"`` or ``"text"``).

    Looks at the metadata only (no data is read), so it is free for the big arrays too. ``what``
    names the file kind (``"catalogue"``), ``fix`` what to do (``"import the SysEx again"``).
    """
    d = f.get(name)
    if not isinstance(d, h5py.Dataset):
        raise error(f"{path}: malformed {what}, missing /{name}; {fix}")
    if len(d.shape) != len(shape) or any(want is not None and got != want for got, want in zip(d.shape, shape)):
        expected = "(" + ", ".join("n" if x is None else str(x) for x in shape) + ("," if len(shape) == 1 else "") + ")"
        raise error(f"{path}: malformed {what}, /{name} has shape {d.shape}, expected {expected}; {fix}")
    label, ok = _KINDS[kind]
    if not ok(d.dtype):
        raise error(f"{path}: malformed {what}, /{name} holds {d.dtype}, expected {label}; {fix}")
    return d


def check_rows(values: np.ndarray, name: str, lo, hi, path, what: str, error: type[DexedDataError], fix: str,
               meaning: str = "", ids=None) -> None:
    """Refuse ``values`` (one per row of ``/name``) outside ``lo ≤ value < hi``; ``lo``/``hi`` may be
    arrays (per row) and ``meaning`` says what a value is (``"a row of /presets"``)."""
    bad = np.flatnonzero((values < lo) | (values >= hi))
    if len(bad):
        r = int(bad[0])
        who = f"row {r}" + (f" (id {ids[r]})" if ids is not None else "")
        raise error(f"{path}: malformed {what}, /{name} of {who} is {values[r]}"
                    + (f", not {meaning}" if meaning else "")
                    + (f" ({len(bad)} such rows in all)" if len(bad) > 1 else "") + f"; {fix}")


#: A preset id: 16 lowercase hex digits (:func:`dexed_data.ids.preset_ids`).
_ID = re.compile(rb"[0-9a-f]{16}")


def check_ids(ids: np.ndarray, name: str, path, what: str, error: type[DexedDataError], fix: str) -> list[str]:
    """Stored ids (``|S16``) as ``str``, refused unless each is 16 lowercase hex digits."""
    for r, x in enumerate(ids.tolist()):
        if not _ID.fullmatch(x):
            raise error(f"{path}: malformed {what}, /{name} of row {r} is {x!r}, not a preset id "
                        f"(16 hex digits); {fix}")
    return [x.decode("ascii") for x in ids.tolist()]


def check_raw_values(raw: np.ndarray, ids, path, error: type[DexedDataError], fix: str) -> None:
    """Refuse raw values ``(n, 145)`` above their parameter's maximum (:data:`dexed_data.schema.VOICE_MAX`),
    naming the first such preset (row, id) and parameter."""
    from .schema import VOICE_MAX, VOICE_PARAMS

    bad = np.argwhere(raw > VOICE_MAX)
    if len(bad):
        r, k = (int(x) for x in bad[0])
        name = next(p.name for p in VOICE_PARAMS if p.voice_offset == k)
        raise error(f"{path}: preset row {r} (id {ids[r]}) has {name} = {raw[r, k]}, above its max {VOICE_MAX[k]} "
                    f"({len(bad)} such value(s) in all); the file is damaged: {fix}")
