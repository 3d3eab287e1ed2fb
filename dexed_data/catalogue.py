"""The preset catalogue file (``presets.h5``): rows unique by raw values, with provenance.

A catalogue is what ``dexed-data import-sysex`` writes (:mod:`dexed_data.importer`) and what
``render`` and ``export`` read: one row per distinct vector of 145 raw values, the name of its
first occurrence, its sound-equivalence group (:mod:`dexed_data.sound_key`), its near-copy group
(:mod:`dexed_data.nearcopy`) and every place it was found.

Determinism: a preset's ``id`` is the first 16 hex digits of the SHA-256 of its 145 raw bytes
(:func:`dexed_data.ids.preset_ids`); rows are sorted by id; occurrences are sorted by (path,
message, voice). The same input files in any order or folder walk order give byte-identical
arrays and ids.

Layout of ``presets.h5`` (plain h5py; ``format_version`` 1)::

    /                      attrs: format="dexed-catalogue", format_version=1, schema_hash,
                                  command, sound_key_version, created_by
    /presets/raw           (N, 145) uint8   raw values, voice order (OP6 first), sorted by id
    /presets/id            (N,) |S16        16 hex chars of sha256(raw bytes)
    /presets/name          (N,) |S10        name of the first occurrence
    /presets/sound_group   (N,) int32       row of the representative of its sound class
    /presets/near_group    (N,) int32       row of the first preset of its near-copy group
                                            (same name or ≤ 3 learnable parameters apart, dexed_data.nearcopy)
    /occurrences/preset    (M,) int32       row in /presets
    /occurrences/path      (M,) str (UTF-8) relative path of the source file
    /occurrences/message   (M,) int32       DX7 message index in the file (0-based)
    /occurrences/voice     (M,) int32       voice index in the message (0–31; 0 for a single voice)
    /occurrences/name      (M,) |S10        the name this occurrence carried
    /schema                attrs: table (JSON of dexed_data.schema.schema_table())

Files are written by the policy of :mod:`dexed_data.outputs`: a temporary file beside the output,
fsync'd and renamed into place, so a crash or a full disk never leaves a half-written file under
the output name; the command line refuses an existing output unless ``--force``, and an output
that is one of the inputs always.

Example::

    >>> import numpy as np
    >>> from dexed_data.catalogue import write_catalogue, read_catalogue
    >>> raw = np.zeros((2, 145), np.uint8); raw[1, 16] = 99      # OP6 output level
    >>> write_catalogue("/tmp/doc_presets.h5", raw, ["SILENCE", "SINE"])
    >>> cat = read_catalogue("/tmp/doc_presets.h5")
    >>> len(cat.ids), cat.names
    (2, ['SINE      ', 'SILENCE   '])
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from . import __version__
from .errors import CatalogueError
from .ids import preset_ids
from .rows import unique_rows
from .schema import SCHEMA_HASH, SOUND_BYTES, VOICE_MAX, decode_names, encode_names, pad_name, schema_table
from .sound_key import SOUND_KEY_VERSION, sound_groups

FORMAT = "dexed-catalogue"
FORMAT_VERSION = 1


@dataclass
class Catalogue:
    """A preset catalogue in memory (what :func:`read_catalogue` returns).

    Attributes:
        raw: ``(N, 145) uint8`` raw values, voice order, rows sorted by id.
        ids: N ids, 16 hex chars each.
        names: N names, 10 chars each (name of the first occurrence).
        sound_group: ``(N,) int32`` row of the representative of each row's sound class.
        near_group: ``(N,) int32`` row of the first preset of each row's near-copy group
            (:func:`dexed_data.nearcopy.near_copy_groups` over the whole catalogue).
        occurrences: ``preset`` (M,) int32, ``path`` (M,) str objects, ``message`` (M,) int32,
            ``voice`` (M,) int32, ``name`` (M,) str objects.
        command: the command line that wrote the file.

    Example::

        >>> cat = read_catalogue("/tmp/doc_presets.h5")   # written by the module example
        >>> cat.raw[cat.index(cat.ids[0])].shape
        (145,)
    """

    raw: np.ndarray
    ids: list[str]
    names: list[str]
    sound_group: np.ndarray
    occurrences: dict[str, np.ndarray]
    command: str = ""
    near_group: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.near_group is None:   # a catalogue written before near-copy groups: group it now
            from .nearcopy import near_copy_groups

            self.near_group = near_copy_groups(self.raw, self.names).astype(np.int32)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, preset_id: str) -> int:
        """Row of ``preset_id``; raises :class:`CatalogueError` for an unknown id."""
        return self.rows([preset_id])[0]

    def rows(self, ids: Sequence[str]) -> list[int]:
        """Rows of several ids (in the given order); unknown ids raise one error listing them all."""
        where = {i: r for r, i in enumerate(self.ids)}
        missing = list(dict.fromkeys(i for i in ids if i not in where))   # each unknown id once
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise CatalogueError(f"{len(missing)} id(s) not in the catalogue: {shown}; "
                                 "list ids with `dexed-data list`")
        return [where[i] for i in ids]


def _empty_occurrences() -> dict[str, np.ndarray]:
    return {"preset": np.zeros(0, np.int32), "path": np.zeros(0, object), "message": np.zeros(0, np.int32),
            "voice": np.zeros(0, np.int32), "name": np.zeros(0, object)}


def write_catalogue(path, raw, names, occurrences=None, command: str = "") -> None:
    """Write ``presets.h5`` from raw values, names and optional provenance (atomically).

    Args:
        path: output file; replaced atomically if it exists.
        raw: ``(n, 145)`` raw values (voice order, each within its schema range). Duplicate rows
            are merged (the first one's name is kept); rows are sorted by id.
        names: n names (str, truncated/padded to 10 chars).
        occurrences: optional dict of equal-length sequences ``preset`` (index into ``raw``),
            ``path`` (str), ``message``, ``voice`` (int) and ``name`` (str). ``None``: no
            provenance (M = 0).
        command: the command line, stored as an attribute.

    Raises:
        CatalogueError: shapes or values out of range, or the file cannot be written.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != SOUND_BYTES:
        raise CatalogueError(f"raw values must have shape (n, {SOUND_BYTES}), got {raw.shape}")
    if raw.size and (raw.min() < 0 or (raw > VOICE_MAX).any()):
        bad_row, bad_col = np.argwhere((raw < 0) | (raw > VOICE_MAX))[0]
        raise CatalogueError(f"raw value out of range at row {bad_row}, byte {bad_col}: "
                             f"{raw[bad_row, bad_col]} > {VOICE_MAX[bad_col]}; repair or drop that voice first")
    raw = raw.astype(np.uint8)
    names = list(names)
    if len(names) != raw.shape[0]:
        raise CatalogueError(f"{len(names)} names for {raw.shape[0]} presets")

    first, inverse = unique_rows(raw)
    unique = raw[first]
    ids = preset_ids(unique)
    order = np.argsort(np.array(ids, dtype="S16"), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    rows_raw = unique[order]
    rows_ids = [ids[i] for i in order]
    if len(set(rows_ids)) != len(rows_ids):  # 64-bit prefix collision: astronomically unlikely
        raise CatalogueError("two different presets share an id prefix; report this input")
    rows_names = [names[first[i]] for i in order]

    if occurrences is None:
        occ = _empty_occurrences()
    else:
        occ = _sorted_occurrences(occurrences, rank[inverse] if raw.shape[0] else np.zeros(0, np.int64))
    from .nearcopy import near_copy_groups

    _write_file(Path(path), rows_raw, rows_ids, rows_names, sound_groups(rows_raw), occ, command,
                near_copy_groups(rows_raw, rows_names))


def _sorted_occurrences(occurrences: dict, row_of_input: np.ndarray) -> dict[str, np.ndarray]:
    """Map occurrence presets to final rows and sort by (path, message, voice, row)."""
    try:
        preset = np.asarray(occurrences["preset"], dtype=np.int64)
        paths = np.asarray([str(p) for p in occurrences["path"]], dtype=object)
        message = np.asarray(occurrences["message"], dtype=np.int64)
        voice = np.asarray(occurrences["voice"], dtype=np.int64)
        onames = [pad_name(n) for n in occurrences["name"]]
    except KeyError as exc:
        raise CatalogueError(f"occurrences need keys preset, path, message, voice, name; missing {exc}") from None
    m = preset.size
    if not (len(paths) == message.size == voice.size == len(onames) == m):
        raise CatalogueError("occurrence arrays have different lengths")
    if m and (preset.min() < 0 or preset.max() >= row_of_input.size):
        raise CatalogueError("an occurrence refers to a preset index outside raw")
    row = row_of_input[preset] if m else preset
    if m:
        # ranked among the distinct paths: as one fixed-width array, every path took the longest's room
        # (523,264 voices under a 3,769-character folder: 7.4 GB, audit A6)
        texts = paths.tolist()
        rank = {q: i for i, q in enumerate(sorted(set(texts)))}
        path_rank = np.fromiter((rank[q] for q in texts), np.int64, len(texts))
        order = np.lexsort((row, voice, message, path_rank))
    else:
        order = np.zeros(0, np.intp)
    return {"preset": row[order].astype(np.int32), "path": paths[order],
            "message": message[order].astype(np.int32), "voice": voice[order].astype(np.int32),
            "name": np.asarray(onames, dtype=object)[order] if m else np.zeros(0, object)}


def _write_file(path: Path, raw, ids, names, sound_group, occ, command, near_group) -> None:
    from .outputs import h5_text, write_bytes

    # Built in memory, then written as bytes: a full disk then fails in a plain write (old file
    # kept, clean error) instead of inside HDF5, whose half-closed file can crash the interpreter.
    with h5py.File(f"catalogue-{os.getpid()}", "w", driver="core", backing_store=False) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["schema_hash"] = SCHEMA_HASH
        f.attrs["sound_key_version"] = SOUND_KEY_VERSION
        f.attrs["command"] = h5_text(command)
        f.attrs["created_by"] = f"dexed_data {__version__}"
        p = f.create_group("presets")
        p.create_dataset("raw", data=np.asarray(raw, np.uint8).reshape(-1, SOUND_BYTES))
        p.create_dataset("id", data=np.array(ids, dtype="S16").reshape(-1))
        p.create_dataset("name", data=encode_names(names).reshape(-1))
        p.create_dataset("sound_group", data=np.asarray(sound_group, np.int32))
        p.create_dataset("near_group", data=np.asarray(near_group, np.int32))
        o = f.create_group("occurrences")
        o.create_dataset("preset", data=occ["preset"])
        o.create_dataset("path", data=np.asarray([h5_text(str(q)) for q in occ["path"]], dtype=object).reshape(-1),
                         dtype=h5py.string_dtype())
        o.create_dataset("message", data=occ["message"])
        o.create_dataset("voice", data=occ["voice"])
        o.create_dataset("name", data=encode_names(occ["name"]).reshape(-1))
        f.create_group("schema").attrs["table"] = json.dumps(schema_table())
        f.flush()
        image = f.id.get_file_image()
    write_bytes(path, image, "catalogue")


#: What to do about a catalogue that cannot be read.
_FIX = "import the SysEx again (`dexed-data import-sysex`)"


def check_catalogue(f: h5py.File, path, values: bool = True) -> None:
    """Refuse an open file that is not a catalogue this code reads, or whose arrays are damaged.

    Checked once, where a catalogue is opened (:func:`read_catalogue`, ``dexed-data list``): the
    format, version and schema attributes; every array's shape and dtype; row counts; the
    groups' and occurrences' rows in range; and (``values``) raw values within their parameters'
    maxima (a render leaves that to the engine, which fails such a preset alone and says why).

    Raises:
        CatalogueError: one line naming the file, the array or preset (row, id) and what to do.
    """
    from .inputs import check_array, check_ids, check_raw_values, check_rows, damaged, format_attr

    try:
        fmt = format_attr(f, CatalogueError)
        version = f.attrs.get("format_version")
        schema = f.attrs.get("schema_hash")
        if fmt != FORMAT:
            what = ("has no format attribute: not a file of this toolkit" if fmt is None
                    else f"format is {fmt!r}, expected {FORMAT!r} (is it a dataset? use `dexed-data info`)")
            raise CatalogueError(f"{path}: {what}; give a catalogue written by `dexed-data import-sysex`")
        if version != FORMAT_VERSION:
            raise CatalogueError(f"{path}: catalogue format version {version} (format_version) is not supported: "
                                 f"this reader knows {FORMAT_VERSION}; re-import the SysEx")
        if schema != SCHEMA_HASH:
            raise CatalogueError(f"{path}: schema_hash {schema} differs from this code's {SCHEMA_HASH}: written with "
                                 "another parameter schema; re-import the SysEx with this version")

        def array(name, shape, kind):
            return check_array(f, name, shape, kind, path, "catalogue", CatalogueError, _FIX)

        n = array("presets/id", (None,), "bytes").shape[0]
        ids = check_ids(f["presets/id"][()], "presets/id", path, "catalogue", CatalogueError, _FIX)
        raw = array("presets/raw", (n, SOUND_BYTES), "uint8")[()]
        array("presets/name", (n,), "bytes")
        below = np.arange(n) + 1   # a group's row is its first preset's: at most the row itself
        for name in ("sound_group", "near_group"):
            if name != "near_group" or name in f["presets"]:   # near_group: catalogues written before it have none
                group = array(f"presets/{name}", (n,), "int")[()]
                check_rows(group, f"presets/{name}", 0, below, path, "catalogue", CatalogueError, _FIX,
                           "a row of /presets at or before its own", ids)
        m = array("occurrences/preset", (None,), "int").shape[0]
        for name, kind in (("path", "text"), ("message", "int"), ("voice", "int"), ("name", "bytes")):
            array(f"occurrences/{name}", (m,), kind)
        check_rows(f["occurrences/preset"][()], "occurrences/preset", 0, n, path, "catalogue", CatalogueError, _FIX,
                   f"a row of /presets (0–{n - 1})")
        if values:
            check_raw_values(raw, ids, path, CatalogueError, _FIX)
    except (KeyError, OSError, ValueError, TypeError) as exc:   # data cut off, an array where a value was
        raise damaged(path, exc, CatalogueError) from None


def _open_checked(path, values: bool = True) -> h5py.File:
    from .inputs import open_hdf5

    path = Path(path)
    if not path.exists():
        raise CatalogueError(f"{path}: no such catalogue file; create one with `dexed-data import-sysex`")
    f = open_hdf5(path, "catalogue", CatalogueError)
    try:
        check_catalogue(f, path, values)
    except BaseException:
        f.close()
        raise
    return f


def read_catalogue(path, *, check_values: bool = True) -> Catalogue:
    """Read ``presets.h5`` into memory, refusing other formats, versions or schema hashes.

    ``check_values=False`` lets raw values above their maxima through (a render, whose engine
    fails those presets alone); the arrays' shapes and indices are checked either way.

    Raises:
        CatalogueError: missing file, not HDF5, wrong format/version/schema, or missing or
            malformed arrays or raw values out of range (see :func:`check_catalogue`).
    """
    with _open_checked(path, check_values) as f:
        try:
            p, o = f["presets"], f["occurrences"]
            cat = Catalogue(
                raw=p["raw"][()].astype(np.uint8),
                ids=[i.decode() for i in p["id"][()]],
                names=decode_names(p["name"][()]),
                sound_group=p["sound_group"][()].astype(np.int32),
                near_group=p["near_group"][()].astype(np.int32) if "near_group" in p else None,
                occurrences={
                    "preset": o["preset"][()].astype(np.int32),
                    "path": np.asarray(o["path"].asstr()[()], dtype=object),
                    "message": o["message"][()].astype(np.int32),
                    "voice": o["voice"][()].astype(np.int32),
                    "name": np.asarray(decode_names(o["name"][()]), dtype=object),
                },
                command=str(f.attrs.get("command", "")),
            )
        except (KeyError, OSError, ValueError, TypeError) as exc:   # data cut off
            from .inputs import damaged

            raise damaged(path, exc, CatalogueError) from None
    return cat


def describe_catalogue(path, top: int = 10) -> dict:
    """Summary of a catalogue for ``dexed-data info``: version, schema match, counts, top sources."""
    cat = read_catalogue(path)  # refuses (clearly) a damaged file or a version or schema this code cannot read
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    out: dict = {
        "file": str(path),
        "format": attrs.get("format"),
        "format_version": int(attrs.get("format_version", -1)),
        "schema_hash": attrs.get("schema_hash"),
        "schema_matches": attrs.get("schema_hash") == SCHEMA_HASH,
        "command": attrs.get("command", ""),
    }
    occ = cat.occurrences
    top_dirs = Counter(p.split("/", 1)[0] if "/" in p else p for p in occ["path"])
    per_file = Counter(occ["path"])
    out.update(
        presets=len(cat),
        occurrences=int(occ["preset"].size),
        sound_groups=int(np.unique(cat.sound_group).size),
        source_files=len(per_file),
        top_sources=[[k, int(v)] for k, v in top_dirs.most_common(top)],
    )
    return out
