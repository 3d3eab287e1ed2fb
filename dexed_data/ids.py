"""Preset ids: what an id is (a content hash of the raw values) and how commands take them (``--ids``).

A preset's ``id`` is the first 16 hex digits of the SHA-256 of its 145 raw bytes, so the same
voice has the same id in every catalogue and dataset, whatever the input order. Every command
that takes ``--ids`` (``export``, ``export-wav``, ``render``) parses it with :func:`parse_ids`.

Example::

    >>> import numpy as np
    >>> preset_ids(np.zeros((1, 145), np.uint8))
    ['c38f1294a259a7e9']
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from .errors import CatalogueError

__all__ = ["parse_ids", "preset_ids", "read_ids_text"]


def preset_ids(raw: np.ndarray) -> list[str]:
    """Content ids, ``(n, 145) uint8`` → n strings of 16 hex chars (sha256 of the raw bytes)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in raw]


_ID = re.compile(r"[0-9a-f]{16}")


def parse_ids(spec) -> list[str]:
    """Preset ids from an ``--ids`` value (the same syntax for every command).

    ``spec`` is either comma-separated ids (``3f2a…,9b01…``; ids are 16 hex digits, as
    ``dexed-data list`` prints them, in lower case; upper case is taken too) or the path of a text file listing ids (separated by
    whitespace, commas or new lines; ``#`` starts a comment).

    Raises:
        CatalogueError: an unreadable or binary file (e.g. HDF5), something that is neither a file
            nor ids, or no ids.

    Example::

        >>> parse_ids("00d671d7c67dab1f, 3F2A00000000BEEF")
        ['00d671d7c67dab1f', '3f2a00000000beef']
    """
    spec = str(spec)
    listed = os.path.isfile(spec)
    if listed:
        text = read_ids_text(spec)
        ids = []
        for n, line in enumerate(text.splitlines(), 1):
            tokens = line.split("#")[0].replace(",", " ").split()
            bad = [t for t in tokens if not _ID.fullmatch(t.lower())]
            if bad:   # A9: "not in the catalogue" for a token that cannot be an id, with no file or line named
                raise CatalogueError(f"--ids {spec}, line {n}: {bad[0]!r} is not a preset id (16 hex digits, as "
                                     "`dexed-data list` prints them); fix that line (# starts a comment)")
            ids += tokens
    else:
        ids = spec.replace(",", " ").split()
    ids = [t.lower() if _ID.fullmatch(t.lower()) else t for t in ids]   # hex digits in either case
    if not listed:
        bad = [t for t in ids if not _ID.fullmatch(t)]
        if bad:
            file = ("a folder, not a file of ids" if os.path.isdir(spec) else
                    "a pipe or device; write the ids to a file and give that (a render reads it again to resume)"
                    if os.path.exists(spec) else "no such file")
            raise CatalogueError(f"--ids {spec!r}: {file}, and {bad[0]!r} is not a preset id (16 hex digits); "
                                 "give comma-separated ids or a file listing them (`dexed-data list FILE` shows ids)")
    if not ids:
        raise CatalogueError(f"--ids {spec!r}: no ids given")
    return ids


def read_ids_text(path) -> str:
    """The text of an ids file; an HDF5, binary or unreadable file is refused with one line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CatalogueError(f"--ids {path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")   # a byte-order mark (Windows' "UTF-8 with BOM") is not part of an id
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise CatalogueError(f"--ids {path}: not a text file of ids (binary data, e.g. an HDF5 file); give a "
                             "text file with one id per line, or comma-separated ids")
    return text
