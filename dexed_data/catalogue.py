"""SysEx collections → a deduplicated, provenance-keeping preset catalogue (``presets.h5``).

Importing walks files and folders, decodes every file with :mod:`dexed_data.sysex` (any extension:
``.syx``, ``.SYX``, ``.mid``, no extension, text files...) and accounts for every file and every
message: each ends up *imported*, *repaired*, *duplicate* or *rejected with a reason*. Nothing in
the input can make the import crash; a decoder bug on one file rejects that file
(``decoder_error``) and the import goes on.

Dedup levels (all counted in the report; rows of the catalogue are level 3):

1. ``packed_as_found``: the 118 packed sound bytes exactly as they are in the file (bit 7
   included; packed bytes 118–127, the name, ignored). Single-voice messages carry unpacked
   bytes; their packed form is computed from the decoded values.
2. ``packed_masked``: the same bytes with bit 7 masked (Yamaha: "don't care").
3. ``raw_values``: the 145 unpacked sound values after repair, i.e. what a synth sees (the
   "don't care" bits of packed bytes dropped). **One catalogue row per unique raw vector.**
4. ``sound_equivalent``: raw values canonicalised by :func:`sound_key`, which sets parameters
   that provably cannot change the rendered sound to 0. Rows of one class share
   ``/presets/sound_group`` (the row of the class member with the smallest id); rows are
   kept, so a dataset can choose to render one per group.

Determinism: a preset's ``id`` is the first 16 hex digits of the SHA-256 of its 145 raw bytes;
rows are sorted by id; occurrences are sorted by (path, message, voice). The same input files in
any order or folder walk order give byte-identical arrays and ids.

Paths in provenance are POSIX paths relative to the import root: with one PATH argument that is
a folder, relative to that folder; with one PATH that is a file, its file name; with several PATH
arguments, relative to each argument's parent folder (so the argument's own name is kept, e.g.
``dx7-cc0/Original Yamaha/DX7 ROM1/ROM1A.syx``). A file reached twice (same resolved path) is
read once.

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

import bisect
import hashlib
import json
import os
import re
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from . import __version__, sysex
from .errors import CatalogueError
from .schema import (
    N_OPERATORS,
    NAME_LENGTH,
    OP_BLOCK,
    PACKED_SOUND_BYTES,
    SCHEMA_HASH,
    SOUND_BYTES,
    VOICE_MAX,
    schema_table,
)

FORMAT = "dexed-catalogue"
FORMAT_VERSION = 1
#: Version of the :func:`sound_key` definition; stored in the file (``sound_key_version``).
SOUND_KEY_VERSION = 1
REPORT_FORMAT = "dexed-import-report"

DEDUP_LEVELS: dict[str, str] = {
    "packed_as_found": "118 packed sound bytes exactly as found in the file (bit 7 included, name ignored)",
    "packed_masked": "118 packed sound bytes with bit 7 masked (Yamaha: don't care)",
    "raw_values": "145 unpacked sound values after repair (what a synth sees); one catalogue row each",
    "sound_equivalent": "raw values with provably inaudible parameters canonicalised (sound_key); "
                        "classes are /presets/sound_group",
}

# --- sound-equivalence key --------------------------------------------------------------------

# Offsets inside an unpacked operator block (DX7.md §2).
_EG_RATES = slice(0, 4)
_BREAK_POINT, _L_DEPTH, _R_DEPTH, _L_CURVE, _R_CURVE = 8, 9, 10, 11, 12
_AMS, _OUTPUT_LEVEL = 14, 16
# Global voice offsets.
_PEG_RATES, _PEG_LEVELS = slice(126, 130), slice(130, 134)
_ALGORITHM, _FEEDBACK = 134, 135
_LFO_SPEED, _LFO_DELAY, _LFO_PMD, _LFO_AMD, _LFO_SYNC, _LFO_WAVE, _PMS = 137, 138, 139, 140, 141, 142, 143
_OPS_END = N_OPERATORS * OP_BLOCK  # 126


def _algorithm_tables() -> tuple[np.ndarray, np.ndarray]:
    """Relevant-operator masks for every (algorithm, silent mask), and each algorithm's feedback ops.

    Returns ``relevant (32, 64) uint8``: bit i set when operator i (0 = OP1) can reach the output
    given that the operators in the 6-bit silent mask are silent; and ``feedback (32, 2) int``:
    the two operators of the algorithm's feedback edge (the same one twice for self-feedback).
    """
    import dexed  # the engine's own algorithm graphs, so the key follows what the renders compute

    relevant = np.zeros((32, 64), dtype=np.uint8)
    feedback = np.zeros((32, 2), dtype=np.int64)
    for a in range(32):
        alg = dexed.algorithms[a]
        mod = np.asarray(alg.mod_matrix, dtype=bool)  # mod[i, j]: op j modulates op i
        src, dst = alg.feedback_edge
        feedback[a] = (src, dst)
        # Feedback is a modulation edge too; for every DX7 algorithm it closes a loop that the
        # ordinary edges already make relevant, but including it keeps the rule obviously safe.
        mod = mod.copy()
        mod[dst, src] = mod[src, dst] = True if src != dst else mod[src, dst]
        for silent_mask in range(64):
            silent = [(silent_mask >> i) & 1 == 1 for i in range(N_OPERATORS)]
            rel = [False] * N_OPERATORS
            for c in alg.carriers:
                rel[c] = not silent[c]
            changed = True
            while changed:
                changed = False
                for j in range(N_OPERATORS):
                    if not rel[j] and not silent[j] and any(rel[i] and mod[i, j] for i in range(N_OPERATORS)):
                        rel[j] = changed = True
            relevant[a, silent_mask] = sum(1 << i for i in range(N_OPERATORS) if rel[i])
    return relevant, feedback


_TABLES: tuple[np.ndarray, np.ndarray] | None = None


def _tables() -> tuple[np.ndarray, np.ndarray]:
    global _TABLES
    if _TABLES is None:
        _TABLES = _algorithm_tables()
    return _TABLES


def silent_operators(raw: np.ndarray) -> np.ndarray:
    """Operators that provably output nothing, ``(..., 145) uint8`` → ``(..., 6) bool``, OP1 first.

    An operator is silent when its OUTPUT LEVEL is 0 and keyboard level scaling cannot raise it:
    each side's scale depth is 0 or its curve is negative (-LIN, -EXP). In Dexed's engine the
    operator's total level is then at most ``0 + velocity bonus`` (≤ 224 of 4256 units), so the
    envelope level clamps to the floor (16), below the engine's compute threshold: the operator
    is not computed and outputs exact zeros, whatever its envelope, frequency, velocity or
    modulation input. Amplitude modulation only lowers levels further. (dexed-py computes it
    anyway at that floor level, about -84 dB: see :func:`sound_key`.)
    """
    raw = np.asarray(raw)
    ops = raw[..., :_OPS_END].reshape(raw.shape[:-1] + (N_OPERATORS, OP_BLOCK))[..., ::-1, :]
    no_left = (ops[..., _L_DEPTH] == 0) | (ops[..., _L_CURVE] < 2)
    no_right = (ops[..., _R_DEPTH] == 0) | (ops[..., _R_CURVE] < 2)
    return (ops[..., _OUTPUT_LEVEL] == 0) & no_left & no_right


def relevant_operators(raw: np.ndarray) -> np.ndarray:
    """Operators whose output can reach the audio, ``(..., 145)`` → ``(..., 6) bool``, OP1 first.

    An operator is relevant when it is not silent (:func:`silent_operators`) and it is a carrier
    of the voice's algorithm or modulates (directly or through feedback) a relevant operator.
    """
    raw = np.asarray(raw)
    relevant_table, _ = _tables()
    silent = silent_operators(raw)
    mask = (silent.astype(np.uint8) << np.arange(N_OPERATORS, dtype=np.uint8)).sum(-1)
    alg = np.minimum(raw[..., _ALGORITHM], 31).astype(np.intp)
    bits = relevant_table[alg, mask.astype(np.intp)]
    return ((bits[..., None] >> np.arange(N_OPERATORS, dtype=np.uint8)) & 1).astype(bool)


def sound_key(raw: np.ndarray) -> np.ndarray:
    """Canonical raw values: parameters that cannot change the rendered sound set to 0.

    ``raw``: ``(145,)`` or ``(n, 145)`` uint8, voice order. Returns an array of the same shape.
    Two voices with equal keys render the same audio under this project's renders (notes with
    velocities, no mod wheel, breath, foot, aftertouch or pitch bend): bit-identical in an engine
    that skips operators below its level threshold (Dexed's FM core), and in dexed-py equal up to
    the leak of "silent" operators, which dexed-py still computes at the envelope floor
    (≈ -84 dB; measured on random voices: usually ≤ 1 output LSB = 2^-12, at most 1.3e-3 of
    full scale when such an operator modulates a loud carrier). Rules, applied in order:

    1. **Irrelevant operators** (not :func:`relevant_operators`: silent, or modulating only
       irrelevant operators, transitively): all 21 of their parameters → 0. The result stays
       silent (output level 0, depths 0), so the key is a fixed point.
    2. **FEEDBACK** → 0 when an operator of the algorithm's feedback edge is irrelevant.
    3. **Keyboard level scaling** of a relevant operator: L (R) KEY SCALE curve → 0 when L (R)
       SCALE DEPTH is 0; BREAK POINT → 0 when both depths are 0.
    4. **LFO pitch path**: LFO PM DEPTH and P MODE SENS. → 0 unless both are > 0 (PMS also
       scales the mod wheel, which these renders never move).
    5. **LFO amplitude path**: LFO AM DEPTH → 0 unless some relevant operator has
       A MOD SENS. > 0. A MOD SENS. itself is kept: Dexed lowers an operator's level slightly
       (about 1 %) whenever its AMS is > 0, even with AM depth 0 (measured with dexed-py).
    6. **LFO**: SPEED, DELAY, KEY SYNC and WAVE → 0 when neither path is active.
    7. **Pitch EG**: the four PITCH EG RATEs → 0 when the four PITCH EG LEVELs are equal (the
       pitch envelope starts at level 4 and moves between equal levels: constant).
    8. **No relevant operator at all** (every carrier silent): the voice is silence; the whole
       key is 0 (all silent voices are one class).

    Kept on purpose: ALGORITHM, OSC KEY SYNC, every relevant operator's envelope, frequency,
    detune, rate scaling and velocity sensitivity, and TRANSPOSE (it changes pitch; the renders
    fix it to 24, but the key describes the voice as stored, so voices that differ only in
    transpose stay apart). Not attempted (possible but unproven here): equal-level operator
    envelopes, fixed-frequency modes ignoring coarse bits, merging algorithms with the same
    effective graph.

    Example::

        >>> import numpy as np
        >>> a = np.zeros(145, np.uint8); a[134] = 31; a[105 + 16] = 99   # alg 32, OP1 audible
        >>> b = a.copy(); b[0:4] = (10, 20, 30, 40)                      # OP6 (silent) EG rates
        >>> bool((sound_key(a) == sound_key(b)).all())
        True
    """
    raw = np.asarray(raw, dtype=np.uint8)
    single = raw.ndim == 1
    key = np.array(raw.reshape(-1, SOUND_BYTES), copy=True)
    n = key.shape[0]
    _, feedback = _tables()
    rel = relevant_operators(key)  # (n, 6) OP1 first
    ops = key[:, :_OPS_END].reshape(n, N_OPERATORS, OP_BLOCK)  # view, OP6 first
    rel_v = rel[:, ::-1]

    ops[~rel_v] = 0  # 1
    alg = np.minimum(key[:, _ALGORITHM], 31).astype(np.intp)
    fb = feedback[alg]
    rows = np.arange(n)
    fb_live = rel[rows, fb[:, 0]] & rel[rows, fb[:, 1]]
    key[~fb_live, _FEEDBACK] = 0  # 2

    no_l = ops[..., _L_DEPTH] == 0  # 3
    no_r = ops[..., _R_DEPTH] == 0
    ops[..., _L_CURVE][no_l] = 0
    ops[..., _R_CURVE][no_r] = 0
    ops[..., _BREAK_POINT][no_l & no_r] = 0

    pm = (key[:, _LFO_PMD] > 0) & (key[:, _PMS] > 0)  # 4
    key[~pm, _LFO_PMD] = 0
    key[~pm, _PMS] = 0
    am = (key[:, _LFO_AMD] > 0) & ((ops[..., _AMS] > 0) & rel_v).any(axis=1)  # 5
    key[~am, _LFO_AMD] = 0
    idle = ~(pm | am)  # 6
    for off in (_LFO_SPEED, _LFO_DELAY, _LFO_SYNC, _LFO_WAVE):
        key[idle, off] = 0

    levels = key[:, _PEG_LEVELS]  # 7
    flat = (levels == levels[:, :1]).all(axis=1)
    key[flat, _PEG_RATES] = 0

    key[~rel.any(axis=1)] = 0  # 8
    return key[0] if single else key


# --- vectorised row helpers -------------------------------------------------------------------


def _rows_void(a: np.ndarray) -> np.ndarray:
    """View each row of a 2-D uint8 array as one opaque value (for np.unique on rows)."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return a.view(np.dtype((np.void, a.shape[1]))).ravel()


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first row of each distinct row (sorted by content), and each row's class."""
    if a.shape[0] == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    _, first, inverse = np.unique(_rows_void(a), return_index=True, return_inverse=True)
    return first, inverse.ravel()


def count_unique_rows(a: np.ndarray) -> int:
    """Number of distinct rows of a 2-D uint8 array."""
    return int(np.unique(_rows_void(a)).size) if a.shape[0] else 0


def preset_ids(raw: np.ndarray) -> list[str]:
    """Content ids, ``(n, 145) uint8`` → n strings of 16 hex chars (sha256 of the raw bytes)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in raw]


def sound_groups(raw: np.ndarray) -> np.ndarray:
    """Row of each row's sound-class representative (its smallest row index), ``(n,) int32``.

    With rows sorted by id, the smallest row index is the member with the smallest id.
    """
    n = raw.shape[0]
    if n == 0:
        return np.zeros(0, np.int32)
    _, inverse = _unique_rows(sound_key(raw))
    first = np.full(inverse.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(n))
    return first[inverse].astype(np.int32)


def _pad_name(name: str) -> str:
    return str(name)[:NAME_LENGTH].ljust(NAME_LENGTH)


def _names_s10(names: Iterable[str]) -> np.ndarray:
    return np.array([_pad_name(n).encode("ascii", "replace") for n in names], dtype=f"S{NAME_LENGTH}")


def _decode_s10(values: np.ndarray) -> list[str]:
    return [v.decode("ascii", "replace").ljust(NAME_LENGTH) for v in values]


# --- the catalogue file -----------------------------------------------------------------------


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
        missing = [i for i in ids if i not in where]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise CatalogueError(f"{len(missing)} id(s) not in the catalogue: {shown}; "
                                 "list ids with `dexed-data info` or h5py (/presets/id)")
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

    first, inverse = _unique_rows(raw)
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
        onames = [_pad_name(n) for n in occurrences["name"]]
    except KeyError as exc:
        raise CatalogueError(f"occurrences need keys preset, path, message, voice, name; missing {exc}") from None
    m = preset.size
    if not (len(paths) == message.size == voice.size == len(onames) == m):
        raise CatalogueError("occurrence arrays have different lengths")
    if m and (preset.min() < 0 or preset.max() >= row_of_input.size):
        raise CatalogueError("an occurrence refers to a preset index outside raw")
    row = row_of_input[preset] if m else preset
    if m:
        _, path_rank = np.unique(paths.astype(str), return_inverse=True)
        order = np.lexsort((row, voice, message, path_rank.ravel()))
    else:
        order = np.zeros(0, np.intp)
    return {"preset": row[order].astype(np.int32), "path": paths[order],
            "message": message[order].astype(np.int32), "voice": voice[order].astype(np.int32),
            "name": np.asarray(onames, dtype=object)[order] if m else np.zeros(0, object)}


def _write_file(path: Path, raw, ids, names, sound_group, occ, command, near_group) -> None:
    from .outputs import write_bytes

    # Built in memory, then written as bytes: a full disk then fails in a plain write (old file
    # kept, clean error) instead of inside HDF5, whose half-closed file can crash the interpreter.
    with h5py.File(f"catalogue-{os.getpid()}", "w", driver="core", backing_store=False) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["schema_hash"] = SCHEMA_HASH
        f.attrs["sound_key_version"] = SOUND_KEY_VERSION
        f.attrs["command"] = command
        f.attrs["created_by"] = f"dexed_data {__version__}"
        p = f.create_group("presets")
        p.create_dataset("raw", data=np.asarray(raw, np.uint8).reshape(-1, SOUND_BYTES))
        p.create_dataset("id", data=np.array(ids, dtype="S16").reshape(-1))
        p.create_dataset("name", data=_names_s10(names).reshape(-1))
        p.create_dataset("sound_group", data=np.asarray(sound_group, np.int32))
        p.create_dataset("near_group", data=np.asarray(near_group, np.int32))
        o = f.create_group("occurrences")
        o.create_dataset("preset", data=occ["preset"])
        o.create_dataset("path", data=np.asarray(occ["path"], dtype=object), dtype=h5py.string_dtype())
        o.create_dataset("message", data=occ["message"])
        o.create_dataset("voice", data=occ["voice"])
        o.create_dataset("name", data=_names_s10(occ["name"]).reshape(-1))
        f.create_group("schema").attrs["table"] = json.dumps(schema_table())
        f.flush()
        image = f.id.get_file_image()
    write_bytes(path, image, "catalogue")


def _open_checked(path) -> h5py.File:
    from .inputs import open_hdf5

    path = Path(path)
    if not path.exists():
        raise CatalogueError(f"{path}: no such catalogue file; create one with `dexed-data import-sysex`")
    f = open_hdf5(path, "catalogue", CatalogueError)
    fmt = f.attrs.get("format")
    version = f.attrs.get("format_version")
    schema = f.attrs.get("schema_hash")
    problem = None
    if fmt != FORMAT:
        problem = f"format is {fmt!r}, expected {FORMAT!r} (is it a dataset? use `dexed-data info`)"
    elif version != FORMAT_VERSION:
        problem = f"format_version {version} is not supported (this reader knows {FORMAT_VERSION}); re-import the SysEx"
    elif schema != SCHEMA_HASH:
        problem = (f"schema_hash {schema} differs from this code's {SCHEMA_HASH}: written with another "
                   "parameter schema; re-import the SysEx with this version")
    if problem:
        f.close()
        raise CatalogueError(f"{path}: {problem}")
    return f


def read_catalogue(path) -> Catalogue:
    """Read ``presets.h5`` into memory, refusing other formats, versions or schema hashes.

    Raises:
        CatalogueError: missing file, not HDF5, wrong format/version/schema, or missing datasets.
    """
    with _open_checked(path) as f:
        try:
            p, o = f["presets"], f["occurrences"]
            cat = Catalogue(
                raw=p["raw"][()].astype(np.uint8),
                ids=[i.decode() for i in p["id"][()]],
                names=_decode_s10(p["name"][()]),
                sound_group=p["sound_group"][()].astype(np.int32),
                near_group=p["near_group"][()].astype(np.int32) if "near_group" in p else None,
                occurrences={
                    "preset": o["preset"][()].astype(np.int32),
                    "path": np.asarray(o["path"].asstr()[()], dtype=object),
                    "message": o["message"][()].astype(np.int32),
                    "voice": o["voice"][()].astype(np.int32),
                    "name": np.asarray(_decode_s10(o["name"][()]), dtype=object),
                },
                command=str(f.attrs.get("command", "")),
            )
        except KeyError as exc:
            raise CatalogueError(f"{path}: malformed catalogue, missing {exc}") from None
        except (OSError, ValueError, TypeError) as exc:   # data cut off, or a dataset of the wrong kind
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


# --- importing --------------------------------------------------------------------------------


def collect_files(paths: Sequence) -> list[tuple[Path, str]]:
    """Every file under ``paths`` as ``(path, relative POSIX path)``, sorted by relative path.

    Folders are walked recursively (every file, any extension, hidden ones included); paths are
    relative to the single folder given, or to each argument's parent when several are given.
    A file reached twice (same resolved path) is listed once.

    Raises:
        DexedDataError: a PATH does not exist.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CatalogueError(f"no such file or folder: {', '.join(missing)}")
    several = len(paths) > 1
    seen: set[tuple[int, int]] = set()
    out: list[tuple[Path, str]] = []
    for root in paths:
        base = root.parent if (several or root.is_file()) else root
        candidates = [root] if root.is_file() else (
            Path(d) / n for d, _, files in os.walk(root) for n in files)
        for file in candidates:
            try:
                st = os.stat(file)  # follows links; (device, inode) identifies the file
            except OSError:
                st = None  # a dangling link or unreadable entry: listed, reported as unreadable
            if st is not None and (not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen):
                continue
            if st is not None:
                seen.add((st.st_dev, st.st_ino))
            out.append((Path(file), Path(os.path.relpath(file, base)).as_posix()))
    out.sort(key=lambda t: (t[1], str(t[0])))
    return out


@dataclass
class ImportReport:
    """What an import did: per-file outcomes and totals (the JSON report and the terminal summary).

    Attributes:
        summary: ``files_seen``, ``files_by_outcome``, ``messages`` (DX7 voice messages found),
            ``voices`` (decoded), ``voices_imported``, ``voices_repaired``, ``voices_rejected``,
            ``repaired_by_reason`` (code → imported voices that needed it; message repairs count
            every voice of the message), ``rejected_by_reason`` (code → rejected items: a
            message for truncated/not_dx7/dx7ii_supplement/unknown_message, a file for
            no_sysex/midi_error/unreadable/decoder_error, a voice for ``strict:<code>`` and
            out_of_range_unrepaired), ``skipped_by_reason`` (stray bytes or trailing garbage
            ignored around messages), ``duplicates`` (imported voices − unique rows) and
            ``unique`` (count at each of :data:`DEDUP_LEVELS`).
        files: one dict per file seen: ``path``, ``outcome`` (``imported``, ``repaired``,
            ``partly_rejected``, ``rejected``, ``no_dx7_data``), ``messages``, ``voices``,
            ``imported``, ``duplicates``, ``repaired`` / ``rejected`` (reason → count), ``problems``.
    """

    summary: dict
    files: list[dict] = field(default_factory=list)
    output: str = ""
    command: str = ""
    strict: bool = False

    def to_dict(self) -> dict:
        return {"format": REPORT_FORMAT, "format_version": 1, "schema_hash": SCHEMA_HASH,
                "command": self.command, "output": self.output, "strict": self.strict,
                "dedup_levels": DEDUP_LEVELS, "summary": self.summary, "files": self.files}

    def write_json(self, path) -> None:
        """Write the report as JSON (UTF-8, indented)."""
        from .outputs import write_text

        # Compact: the per-file problem lists are long, and only the compact encoder is C-fast.
        write_text(path, json.dumps(self.to_dict(), ensure_ascii=False) + "\n", "report")

    def format_summary(self) -> str:
        """The summary as a few human lines for the terminal."""
        s = self.summary
        u = s["unique"]

        def line(label: str, value, detail: str = "") -> str:
            return f"{label:<20}{value:>8}" + (f"   {detail}" if detail else "")

        def reasons(counts: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

        lines = [
            line("files seen", s["files_seen"], "files: " + reasons(s["files_by_outcome"])),
            line("messages", s["messages"], "DX7 voice messages decoded (banks, single voices, raw blocks)"),
            line("voices", s["voices"], f"imported {s['voices_imported']}, repaired {s['voices_repaired']}, "
                 f"rejected {s['voices_rejected']}"),
            line("duplicates", s["duplicates"], "voices"),
            line("unique presets", u["raw_values"], f"by raw values; by packed bytes as found "
                 f"{u['packed_as_found']}, bit 7 masked {u['packed_masked']}, sound-equivalent {u['sound_equivalent']}"),
        ]
        # each count in its own unit: the reasons of rejection concern files, messages or voices
        rejected = s["rejected_by_reason"]
        by_unit = {unit: {k: v for k, v in rejected.items() if _rejection_unit(k) == unit}
                   for unit in ("files", "messages", "voices")}
        for label, counts in (("repaired (voices)", s["repaired_by_reason"]),
                              *((f"rejected ({unit})", by_unit[unit]) for unit in ("files", "messages", "voices")),
                              ("skipped (byte runs)", s["skipped_by_reason"])):
            if counts:
                lines.append(f"{label:<20}{'':>8}   {reasons(counts)}")
        if self.output:
            lines.append(f"{'wrote':<20}{'':>8}   {self.output}")
        return "\n".join(lines)


#: Rejection reasons that count files (the others count messages, or voices: see _rejection_unit).
FILE_REJECTIONS = frozenset({"no_sysex", "midi_error", "unreadable", "decoder_error"})


def _rejection_unit(code: str) -> str:
    if code in FILE_REJECTIONS:
        return "files"
    if code.startswith("strict:") or code == "out_of_range_unrepaired":
        return "voices"
    return "messages"


def _problem_dict(p) -> dict:
    return {"code": p.code, "message": p.message, "offset": p.offset, "voice": p.voice,
            "param": getattr(p, "param", None), "repaired": bool(p.repaired)}


class _Accumulator:
    """Collects decoded voices from many files into flat arrays (one append per file)."""

    def __init__(self) -> None:
        self.raw: list[np.ndarray] = []
        self.packed: list[np.ndarray] = []
        self.masked: list[np.ndarray] = []
        self.names: list[str] = []
        self.file: list[np.ndarray] = []
        self.message: list[int] = []
        self.voice: list[int] = []


_BANK_HEADER_LEN = 6
#: Problems that are not about DX7 data: bytes around messages that were ignored.
SKIPPED_CODES = frozenset({"stray_bytes", "trailing_garbage"})
#: Repairs that concern every voice of the file (headerless raw data), not one message.
FILE_WIDE_REPAIRS = frozenset({"no_header"})
#: Rejections that lose DX7 voice data (the others reject data that is not DX7 voices).
VOICE_LOSS_CODES = ("truncated", "strict:", "out_of_range_unrepaired", "midi_error", "decoder_error")


def _as_found(data: bytes, v) -> bytes:
    """The voice's 118 packed sound bytes exactly as in the file (bit 7 included), when findable.

    ``DecodedVoice.packed_sound`` has bit 7 masked, so the bytes are read back from the file: a
    bank message at ``offset`` (in a MIDI file ``offset`` points one byte before the event's data,
    so only the bytes after F0 are checked), or headerless packed data. The bytes are used only
    if they mask to ``packed_sound``; otherwise (single voices) the masked bytes stand in.
    """
    masked = bytes(v.packed_sound)
    for start in (v.offset + _BANK_HEADER_LEN + 128 * v.voice_index, v.offset + 128 * v.voice_index):
        if 0 <= start and start + PACKED_SOUND_BYTES <= len(data):
            found = data[start:start + PACKED_SOUND_BYTES]
            if found == masked or bytes(b & 0x7F for b in found) == masked:
                return found
    return masked


def _message_of(offsets: list[int], at: int | None) -> int | None:
    """Offset of the message containing byte ``at`` (the last message starting at or before it)."""
    if at is None:
        return None
    i = bisect.bisect_right(offsets, at) - 1
    return offsets[i] if i >= 0 else None


def _account_file(file_index: int, rel: str, data: bytes, result, strict: bool, acc: _Accumulator,
                  totals: Counter, repaired_by: Counter, rejected_by: Counter, skipped_by: Counter) -> dict:
    """Add one decoded file's voices to ``acc``, update the totals and return its report entry.

    Repairs are attributed to voices: a voice's own problems (bit 7, out of range), the
    message-level repairs of the message holding it (bad checksum, count bytes, missing end;
    located by byte offset) and file-wide repairs (no header).
    """
    voices = list(result.voices)
    offsets = sorted({v.offset for v in voices})
    message_repairs: dict[int, set[str]] = {}
    file_repairs: set[str] = set()
    rejected: Counter = Counter()
    skipped: Counter = Counter()
    for p in result.problems:
        if p.code in SKIPPED_CODES:
            skipped[p.code] += 1
        elif not p.repaired:
            rejected[p.code] += 1
        elif p.code in FILE_WIDE_REPAIRS or _message_of(offsets, p.offset) is None:
            file_repairs.add(p.code)
        else:
            message_repairs.setdefault(_message_of(offsets, p.offset), set()).add(p.code)

    repaired: Counter = Counter()  # voices per repair code
    n_kept = 0
    if voices:
        raws = np.stack([v.raw for v in voices]).astype(np.uint8, copy=False)
        unrepaired = (raws > VOICE_MAX).any(axis=1)  # the decoder should have clamped these
        keep = np.ones(len(voices), bool)
        shared = file_repairs
        for i, v in enumerate(voices):
            codes = shared
            if v.problems or v.offset in message_repairs:
                codes = {p.code for p in v.problems if p.repaired} | message_repairs.get(v.offset, set()) | shared
            if unrepaired[i]:
                rejected["out_of_range_unrepaired"] += 1
                keep[i] = False
            elif strict and codes:
                for c in sorted(codes):
                    rejected[f"strict:{c}"] += 1
                totals["voices_rejected"] += 1
                keep[i] = False
            elif codes:
                repaired.update(codes)
                totals["voices_repaired"] += 1
        kept = [v for v, k in zip(voices, keep) if k]
        n_kept = len(kept)
        if n_kept:
            acc.raw.append(raws[keep])
            acc.masked.append(np.frombuffer(b"".join(v.packed_sound for v in kept), np.uint8)
                              .reshape(n_kept, PACKED_SOUND_BYTES))
            acc.packed.append(np.frombuffer(b"".join(_as_found(data, v) for v in kept), np.uint8)
                              .reshape(n_kept, PACKED_SOUND_BYTES))
            acc.file.append(np.full(n_kept, file_index, np.int32))
            acc.names.extend(_pad_name(v.name) for v in kept)
            acc.message.extend(int(v.message_index) for v in kept)
            acc.voice.extend(int(v.voice_index) for v in kept)
    totals["messages"] += int(result.messages)
    totals["voices"] += len(voices)
    totals["voices_imported"] += n_kept
    totals["voices_rejected"] += rejected["out_of_range_unrepaired"]
    repaired_by.update(repaired)
    rejected_by.update(rejected)
    skipped_by.update(skipped)

    lost = any(c.startswith(VOICE_LOSS_CODES) for c in rejected)
    if n_kept:
        outcome = "partly_rejected" if lost else ("repaired" if repaired else "imported")
    elif rejected and set(rejected) != {"no_sysex"}:
        outcome = "rejected"
    else:
        outcome = "no_dx7_data"
    problems = list(result.problems) + [p for v in voices for p in v.problems]
    return {"path": rel, "outcome": outcome, "messages": int(result.messages), "voices": len(voices),
            "imported": n_kept, "duplicates": 0, "repaired": dict(sorted(repaired.items())),
            "rejected": dict(sorted(rejected.items())), "skipped": dict(sorted(skipped.items())),
            "problems": [_problem_dict(p) for p in problems]}


def _decode_one(path: Path, rel: str):
    """Read and decode one file: ``(bytes, FileResult)``, or ``(None, reason, message)`` on failure."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, "unreadable", f"{rel}: cannot read ({exc.strerror or exc}); check permissions"
    try:
        return data, sysex.decode_bytes(data, source=rel)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the import
        return None, "decoder_error", (f"{rel}: the decoder failed ({type(exc).__name__}: {exc}); "
                                       "please report this file")


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, disable=None if enabled else True,
                desc="import-sysex", leave=False)


def import_sysex(paths: Sequence, output, *, strict: bool = False, report=None, progress: bool = False,
                 command: str = "", force: bool = False) -> ImportReport:
    """Import SysEx files and folders into a catalogue at ``output`` (see the module docstring).

    Args:
        paths: files and/or folders; folders are walked recursively, every file is tried.
        output: the ``presets.h5`` to write (replaced atomically).
        strict: reject every voice that needed any repair (reason ``strict:<code>``), and every
            voice of a file with a file-level repair.
        report: optional path of the JSON report to write.
        progress: show a tqdm progress bar on stderr (only when stderr is a terminal).
        command: command line stored in the file and the report.
        force: replace an existing ``output`` / ``report`` (see :mod:`dexed_data.outputs`).

    Returns:
        The :class:`ImportReport` (also written to ``report`` when given).

    Raises:
        DexedDataError: a PATH does not exist, or the output or report cannot be written (exists
        without ``force``, is one of the inputs, bad folder, full disk). Bad input content never
        raises: it is reported.
    """
    from .outputs import check_output

    files = collect_files(paths)
    sources = [p for p, _ in files]
    check_output(output, inputs=sources, force=force, what="catalogue")
    if report is not None:
        check_output(report, inputs=sources + [Path(output)], force=force, what="report")
    acc = _Accumulator()
    totals: Counter = Counter()
    repaired_by: Counter = Counter()
    rejected_by: Counter = Counter()
    skipped_by: Counter = Counter()
    entries: list[dict] = []
    with _progress(len(files), progress) as bar:
        for index, (path, rel) in enumerate(files):
            decoded = _decode_one(path, rel)
            if decoded[0] is None:
                _, reason, message = decoded
                rejected_by[reason] += 1
                entries.append({"path": rel, "outcome": "rejected", "messages": 0, "voices": 0, "imported": 0,
                                "duplicates": 0, "repaired": {}, "rejected": {reason: 1}, "skipped": {},
                                "problems": [{"code": reason, "message": message, "offset": None, "voice": None,
                                              "param": None, "repaired": False}]})
            else:
                data, result = decoded
                entries.append(_account_file(index, rel, data, result, strict, acc, totals, repaired_by, rejected_by,
                                              skipped_by))
            bar.update(1)

    def cat(parts, shape, dtype):
        return np.concatenate(parts) if parts else np.zeros(shape, dtype)

    raw = cat(acc.raw, (0, SOUND_BYTES), np.uint8)
    packed = cat(acc.packed, (0, PACKED_SOUND_BYTES), np.uint8)
    masked = cat(acc.masked, (0, PACKED_SOUND_BYTES), np.uint8)
    file_idx = cat(acc.file, (0,), np.int32)
    message = np.asarray(acc.message, np.int32)
    voice = np.asarray(acc.voice, np.int32)

    # One row per unique raw vector; the name is the first occurrence's in (path, message, voice)
    # order, which is the accumulation order because files are sorted by path.
    first, inverse = _unique_rows(raw)
    order_in_file = np.lexsort((voice, message, file_idx)) if raw.shape[0] else np.zeros(0, np.intp)
    first_occ = np.full(first.size, raw.shape[0], np.int64)
    np.minimum.at(first_occ, inverse[order_in_file], np.arange(raw.shape[0]))
    first_voice = order_in_file[first_occ] if first.size else first_occ
    unique_raw = raw[first_voice]
    unique_names = [acc.names[i] for i in first_voice]
    is_first = np.zeros(raw.shape[0], bool)
    is_first[first_voice] = True
    dup_per_file = np.bincount(file_idx[~is_first], minlength=len(files)) if raw.shape[0] else np.zeros(len(files), int)
    for i, e in enumerate(entries):
        e["duplicates"] = int(dup_per_file[i])

    rel_paths = [rel for _, rel in files]
    occurrences = {"preset": inverse, "path": [rel_paths[i] for i in file_idx], "message": message,
                   "voice": voice, "name": acc.names}
    write_catalogue(output, unique_raw, unique_names, occurrences, command=command)

    n_unique = int(first.size)
    outcomes = Counter(e["outcome"] for e in entries)
    summary = {
        "files_seen": len(files),
        "files_by_outcome": dict(sorted(outcomes.items())),
        "messages": totals["messages"],
        "voices": totals["voices"],
        "voices_imported": totals["voices_imported"],
        "voices_repaired": totals["voices_repaired"],
        "voices_rejected": totals["voices_rejected"],
        "repaired_by_reason": dict(sorted(repaired_by.items())),
        "rejected_by_reason": dict(sorted(rejected_by.items())),
        "skipped_by_reason": dict(sorted(skipped_by.items())),
        "duplicates": totals["voices_imported"] - n_unique,
        "unique": {
            "packed_as_found": count_unique_rows(packed),
            "packed_masked": count_unique_rows(masked),
            "raw_values": n_unique,
            "sound_equivalent": count_unique_rows(sound_key(unique_raw)) if n_unique else 0,
        },
    }
    rep = ImportReport(summary=summary, files=entries, output=str(output), command=command, strict=strict)
    if report is not None:
        rep.write_json(report)
    return rep


# --- exporting --------------------------------------------------------------------------------


_ID = re.compile(r"[0-9a-f]{16}")


def parse_ids(spec) -> list[str]:
    """Preset ids from an ``--ids`` value (the same syntax for every command).

    ``spec`` is either comma-separated ids (``3f2a…,9b01…``; ids are 16 hex digits, as
    ``dexed-data list`` prints them) or the path of a text file listing ids (separated by
    whitespace, commas or new lines; ``#`` starts a comment).

    Raises:
        CatalogueError: an unreadable or binary file (e.g. HDF5), something that is neither a file
            nor ids, or no ids.

    Example::

        >>> parse_ids("00d671d7c67dab1f, 3f2a00000000beef")
        ['00d671d7c67dab1f', '3f2a00000000beef']
    """
    spec = str(spec)
    if os.path.isfile(spec):
        text = read_ids_text(spec)
        ids = [t for line in text.splitlines() for t in line.split("#")[0].replace(",", " ").split()]
    else:
        ids = spec.replace(",", " ").split()
        bad = [t for t in ids if not _ID.fullmatch(t)]
        if bad:
            raise CatalogueError(f"--ids {spec!r}: no such file, and {bad[0]!r} is not a preset id (16 hex digits); "
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
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise CatalogueError(f"--ids {path}: not a text file of ids (binary data, e.g. an HDF5 file); give a "
                             "text file with one id per line, or comma-separated ids")
    return text


def export_sysex(catalogue, output, *, ids: Sequence[str] | None = None, limit: int | None = None,
                 single: bool = False, force: bool = False) -> list[Path]:
    """Write presets of a catalogue as DX7 SysEx files; returns the files written.

    Args:
        catalogue: path of ``presets.h5``.
        output: first output file, e.g. ``bank.syx``.
        ids: ids in the wanted order; ``None`` means every preset (in id order).
        limit: keep at most this many (after ``ids``).
        single: one single-voice message (163 bytes) per file instead of 32-voice banks.
        force: replace existing files (see :mod:`dexed_data.outputs`; never the catalogue itself).

    Files are numbered by one rule: ``bank.syx``, ``bank_2.syx``, ``bank_3.syx``... each holding
    up to 32 voices (a bank; a last partial bank is padded by :func:`sysex.encode_bank`) or one
    voice with ``single``.

    Raises:
        CatalogueError: unknown ids, nothing selected, a negative limit.
        OutputError: an output exists (without ``force``), is the catalogue, or cannot be written.
    """
    from .outputs import check_output, write_bytes

    if limit is not None and limit < 1:
        raise CatalogueError(f"--limit {limit}: must be ≥ 1")
    cat = read_catalogue(catalogue)
    rows = list(range(len(cat))) if ids is None else cat.rows(list(ids))
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise CatalogueError(f"{catalogue}: no presets selected to export")
    output = Path(output)
    size = 1 if single else 32
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    targets = [output if k == 0 else output.with_name(f"{output.stem}_{k + 1}{output.suffix}")
               for k in range(len(chunks))]
    for target in targets:   # all checked before the first is written
        check_output(target, inputs=[catalogue], force=force)
    written = []
    for target, chunk in zip(targets, chunks):
        if single:
            data = sysex.encode_single(cat.raw[chunk[0]], cat.names[chunk[0]])
        else:
            data = sysex.encode_bank(cat.raw[chunk], [cat.names[r] for r in chunk])
        write_bytes(target, data)
        written.append(target)
    return written


def describe_sysex(path) -> dict:
    """Summary of a SysEx (or any) file for ``dexed-data info``: messages, voices, names, problems."""
    result = sysex.decode_file(path)
    return {"file": str(path), "format": "sysex", "messages": result.messages, "voices": len(result.voices),
            "names": [v.name for v in result.voices],
            "problems": [f"{p.code}{'' if p.repaired else ' (rejected)'}: {p.message}" for p in result.problems]}


__all__ = [
    "Catalogue", "ImportReport", "DEDUP_LEVELS", "FORMAT", "FORMAT_VERSION", "SOUND_KEY_VERSION",
    "collect_files", "count_unique_rows", "describe_catalogue", "describe_sysex", "export_sysex",
    "import_sysex", "parse_ids", "preset_ids", "read_catalogue", "relevant_operators",
    "silent_operators", "sound_groups", "sound_key", "write_catalogue",
]
