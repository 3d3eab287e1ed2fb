"""The one parameter table: every Dexed parameter, its range, kind, SysEx position and paper role.

Everything else in the project derives from :data:`PARAMS` (see ``../shared/reference/DX7.md``):
the SysEx codec, the renderers, the HDF5 files and the model's encodings. :data:`SCHEMA_HASH`
identifies this table; every file and checkpoint the project writes stores it.

Two orders matter:

* **Dexed order** (:data:`PARAMS`, 155 entries): the plug-in's parameter list, OP1 first.
  Four output-stage parameters and six operator switches are not DX7 voice bytes.
* **Voice order** (:data:`VOICE_PARAMS`, 145 entries): the sound bytes 0–144 of the unpacked
  155-byte voice, OP6 first. A preset's raw values (``uint8``, shape ``(145,)``) are in this
  order everywhere in the project; the 10 name bytes 145–154 are kept apart as the name.

Example::

    >>> from dexed_data.schema import PARAM_BY_NAME, VOICE_PARAMS
    >>> p = PARAM_BY_NAME["OP1 F COARSE"]
    >>> p.max, p.voice_offset, p.packed
    (31, 123, (100, 1, 5))
    >>> len(VOICE_PARAMS), sum(p.learnable for p in VOICE_PARAMS)
    (145, 144)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np

Kind = Literal["numerical", "categorical"]

N_OPERATORS = 6
VOICE_BYTES = 155  # unpacked voice: 145 sound bytes + 10 name bytes
SOUND_BYTES = 145  # unpacked sound bytes (everything but the name)
NAME_OFFSET = 145
NAME_LENGTH = 10
PACKED_VOICE_BYTES = 128  # one voice inside a 32-voice bank
PACKED_SOUND_BYTES = 118  # packed bytes 0–117 are the sound, 118–127 the name
PACKED_NAME_OFFSET = 118
OP_BLOCK = 21  # unpacked bytes per operator
PACKED_OP_BLOCK = 17  # packed bytes per operator

CURVE_LABELS = ("-LIN", "-EXP", "+EXP", "+LIN")
LFO_WAVE_LABELS = ("TRIANGLE", "SAW DOWN", "SAW UP", "SQUARE", "SINE", "SAMPLE&HOLD")
ON_OFF_LABELS = ("OFF", "ON")
OSC_MODE_LABELS = ("RATIO", "FIXED")
ALGORITHM_LABELS = tuple(str(i) for i in range(1, 33))


@dataclass(frozen=True)
class Param:
    """One Dexed parameter.

    Attributes:
        name: the Dexed plug-in's parameter name (hosts map parameters by this name).
        dexed_index: position in the 155-parameter list of the Dexed build the paper used.
        max: largest raw value; the plug-in's normalized value is ``raw / max``.
        kind: ``"numerical"`` or ``"categorical"`` (the paper's split, DX7.md §5).
        labels: value labels of a categorical parameter, ``()`` for numerical ones.
        voice_offset: byte offset in the unpacked 155-byte voice, ``None`` if not a voice byte.
        packed: ``(byte, shift, bits)`` inside the packed 128-byte voice, ``None`` if not a voice byte.
        fixed: the paper's fixed normalized value, ``None`` for a learnable parameter.
        operator: 1–6 for an operator parameter, ``None`` for a global one.
    """

    name: str
    dexed_index: int
    max: int
    kind: Kind
    labels: tuple[str, ...]
    voice_offset: int | None
    packed: tuple[int, int, int] | None
    fixed: float | None
    operator: int | None

    @property
    def learnable(self) -> bool:
        """True for the paper's 144 learnable parameters (a voice byte that is not fixed)."""
        return self.fixed is None and self.voice_offset is not None

    @property
    def cardinality(self) -> int:
        """Number of distinct raw values, ``max + 1``."""
        return self.max + 1

    @property
    def fixed_raw(self) -> int | None:
        """The fixed value as a raw voice byte (e.g. TRANSPOSE 0.5 → 24), if fixed and a voice byte."""
        if self.fixed is None or self.voice_offset is None:
            return None
        return int(round(self.fixed * self.max))


# (suffix, offset in the unpacked operator block, max, kind, labels, packed (byte, shift, bits))
_OPERATOR_FIELDS: tuple[tuple[str, int, int, Kind, tuple[str, ...], tuple[int, int, int]], ...] = (
    ("EG RATE 1", 0, 99, "numerical", (), (0, 0, 7)),
    ("EG RATE 2", 1, 99, "numerical", (), (1, 0, 7)),
    ("EG RATE 3", 2, 99, "numerical", (), (2, 0, 7)),
    ("EG RATE 4", 3, 99, "numerical", (), (3, 0, 7)),
    ("EG LEVEL 1", 4, 99, "numerical", (), (4, 0, 7)),
    ("EG LEVEL 2", 5, 99, "numerical", (), (5, 0, 7)),
    ("EG LEVEL 3", 6, 99, "numerical", (), (6, 0, 7)),
    ("EG LEVEL 4", 7, 99, "numerical", (), (7, 0, 7)),
    ("OUTPUT LEVEL", 16, 99, "numerical", (), (14, 0, 7)),
    ("MODE", 17, 1, "categorical", OSC_MODE_LABELS, (15, 0, 1)),
    ("F COARSE", 18, 31, "numerical", (), (15, 1, 5)),
    ("F FINE", 19, 99, "numerical", (), (16, 0, 7)),
    ("OSC DETUNE", 20, 14, "numerical", (), (12, 3, 4)),
    ("BREAK POINT", 8, 99, "numerical", (), (8, 0, 7)),
    ("L SCALE DEPTH", 9, 99, "numerical", (), (9, 0, 7)),
    ("R SCALE DEPTH", 10, 99, "numerical", (), (10, 0, 7)),
    ("L KEY SCALE", 11, 3, "categorical", CURVE_LABELS, (11, 0, 2)),
    ("R KEY SCALE", 12, 3, "categorical", CURVE_LABELS, (11, 2, 2)),
    ("RATE SCALING", 13, 7, "numerical", (), (12, 0, 3)),
    ("A MOD SENS.", 14, 3, "numerical", (), (13, 0, 2)),
    ("KEY VELOCITY", 15, 7, "numerical", (), (13, 2, 3)),
)

# (name, unpacked offset, max, kind, labels, packed (byte, shift, bits), fixed)
_GLOBAL_FIELDS: tuple[tuple[str, int, int, Kind, tuple[str, ...], tuple[int, int, int], float | None], ...] = (
    ("ALGORITHM", 134, 31, "categorical", ALGORITHM_LABELS, (110, 0, 5), None),
    ("FEEDBACK", 135, 7, "numerical", (), (111, 0, 3), None),
    ("OSC KEY SYNC", 136, 1, "categorical", ON_OFF_LABELS, (111, 3, 1), None),
    ("LFO SPEED", 137, 99, "numerical", (), (112, 0, 7), None),
    ("LFO DELAY", 138, 99, "numerical", (), (113, 0, 7), None),
    ("LFO PM DEPTH", 139, 99, "numerical", (), (114, 0, 7), None),
    ("LFO AM DEPTH", 140, 99, "numerical", (), (115, 0, 7), None),
    ("LFO KEY SYNC", 141, 1, "categorical", ON_OFF_LABELS, (116, 0, 1), None),
    ("LFO WAVE", 142, 5, "categorical", LFO_WAVE_LABELS, (116, 1, 3), None),
    ("TRANSPOSE", 144, 48, "numerical", (), (117, 0, 7), 0.5),
    ("P MODE SENS.", 143, 7, "numerical", (), (116, 4, 3), None),
    ("PITCH EG RATE 1", 126, 99, "numerical", (), (102, 0, 7), None),
    ("PITCH EG RATE 2", 127, 99, "numerical", (), (103, 0, 7), None),
    ("PITCH EG RATE 3", 128, 99, "numerical", (), (104, 0, 7), None),
    ("PITCH EG RATE 4", 129, 99, "numerical", (), (105, 0, 7), None),
    ("PITCH EG LEVEL 1", 130, 99, "numerical", (), (106, 0, 7), None),
    ("PITCH EG LEVEL 2", 131, 99, "numerical", (), (107, 0, 7), None),
    ("PITCH EG LEVEL 3", 132, 99, "numerical", (), (108, 0, 7), None),
    ("PITCH EG LEVEL 4", 133, 99, "numerical", (), (109, 0, 7), None),
)

# Dexed's output stage: not DX7 voice bytes; the paper fixes them (DX7.md §5).
_OUTPUT_STAGE: tuple[tuple[str, float], ...] = (
    ("Cutoff", 1.0),
    ("Resonance", 0.0),
    ("Output", 1.0),
    ("MASTER TUNE ADJ", 0.5),
)


def _build() -> tuple[Param, ...]:
    params: list[Param] = []
    for name, fixed in _OUTPUT_STAGE:
        params.append(Param(name, len(params), 1, "numerical", (), None, None, fixed, None))
    for name, off, mx, kind, labels, packed, fixed in _GLOBAL_FIELDS:
        params.append(Param(name, len(params), mx, kind, labels, off, packed, fixed, None))
    for op in range(1, N_OPERATORS + 1):
        block = (N_OPERATORS - op) * OP_BLOCK  # OP6 is stored first
        packed_block = (N_OPERATORS - op) * PACKED_OP_BLOCK
        for suffix, off, mx, kind, labels, (byte, shift, bits) in _OPERATOR_FIELDS:
            params.append(
                Param(f"OP{op} {suffix}", len(params), mx, kind, labels, block + off,
                      (packed_block + byte, shift, bits), None, op)
            )
        params.append(Param(f"OP{op} SWITCH", len(params), 1, "categorical", ON_OFF_LABELS,
                            None, None, 1.0, op))
    return tuple(params)


#: All 155 Dexed parameters in Dexed order (OP1 first).
PARAMS: tuple[Param, ...] = _build()
PARAM_BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}

#: The 145 voice sound bytes in unpacked-voice order (OP6 first): the order of raw values.
VOICE_PARAMS: tuple[Param, ...] = tuple(
    sorted((p for p in PARAMS if p.voice_offset is not None), key=lambda p: p.voice_offset)
)
#: The paper's 144 learnable parameters, in voice order.
LEARNABLE_PARAMS: tuple[Param, ...] = tuple(p for p in VOICE_PARAMS if p.learnable)
#: The 11 fixed parameters and their normalized values (DX7.md §5).
FIXED_PARAMS: dict[str, float] = {p.name: p.fixed for p in PARAMS if p.fixed is not None}

#: Largest valid raw value of each voice sound byte, shape (145,), voice order.
VOICE_MAX: np.ndarray = np.array([p.max for p in VOICE_PARAMS], dtype=np.uint8)
#: Raw value of TRANSPOSE that the paper fixes (0.5 × 48 = 24, no transpose).
TRANSPOSE_OFFSET: int = PARAM_BY_NAME["TRANSPOSE"].voice_offset  # type: ignore[assignment]
FIXED_TRANSPOSE: int = PARAM_BY_NAME["TRANSPOSE"].fixed_raw  # type: ignore[assignment]


def voice_index(name: str) -> int:
    """Position of parameter ``name`` in a raw voice vector (voice order), e.g. ``"ALGORITHM"`` → 134."""
    offset = PARAM_BY_NAME[name].voice_offset
    if offset is None:
        raise KeyError(f"{name!r} is not a DX7 voice byte (it is a Dexed output-stage setting)")
    return offset


def operator_offsets(op: int) -> dict[str, int]:
    """Voice-order positions of operator ``op``'s (1–6) parameters, keyed by suffix (``"OUTPUT LEVEL"``)."""
    return {p.name[4:]: p.voice_offset for p in VOICE_PARAMS if p.operator == op}  # type: ignore[misc]


def apply_fixed(raw: np.ndarray) -> np.ndarray:
    """Return a copy of raw voice values ``(..., 145)`` with the paper's fixed voice bytes set (TRANSPOSE=24)."""
    out = np.array(raw, dtype=np.uint8, copy=True)
    out[..., TRANSPOSE_OFFSET] = FIXED_TRANSPOSE
    return out


def to_normalized(raw: np.ndarray) -> np.ndarray:
    """Raw voice values ``(..., 145)`` → Dexed's normalized ``value / max`` in [0, 1], float32."""
    return np.asarray(raw, dtype=np.float32) / VOICE_MAX.astype(np.float32)


def schema_table() -> list[dict]:
    """The table as plain JSON-able rows (what the hash covers; also stored in files for readers)."""
    return [asdict(p) for p in PARAMS]


def _hash() -> str:
    text = json.dumps(schema_table(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Stable identifier of this table; stored in every file and checkpoint the project writes.
SCHEMA_HASH: str = _hash()

assert len(PARAMS) == 155 and len(VOICE_PARAMS) == SOUND_BYTES
assert [p.voice_offset for p in VOICE_PARAMS] == list(range(SOUND_BYTES))
assert len(LEARNABLE_PARAMS) == 144


def params_dict(raw: np.ndarray) -> dict[str, int]:
    """Raw voice values ``(145,)`` → ``{parameter name: raw value}`` in voice order (OP6 first).

    Values are the DX7's own integers (``0..max``; e.g. ALGORITHM 0–31 shows as 1–32 on a DX7,
    TRANSPOSE 24 is C3, no transpose); divide by :attr:`Param.max` for Dexed's normalised value.

    Example::

        >>> raw = np.zeros(145, np.uint8); raw[144] = 24
        >>> d = params_dict(raw)
        >>> len(d), d["ALGORITHM"], d["TRANSPOSE"], list(d)[0]
        (145, 0, 24, 'OP6 EG RATE 1')
    """
    values = np.asarray(raw).reshape(-1)
    if values.shape != (SOUND_BYTES,):
        raise ValueError(f"raw voice values must have shape ({SOUND_BYTES},), got {np.asarray(raw).shape}")
    return {p.name: int(v) for p, v in zip(VOICE_PARAMS, values)}


def format_fixed(fixed: dict[str, float]) -> str:
    """Fixed parameters (name → Dexed normalised value) for people: a voice byte as its raw value
    with the normalised one, then the output-stage settings as Dexed's normalised values (0–1).

    Example::

        >>> format_fixed({"Cutoff": 1.0, "TRANSPOSE": 0.5, "OP1 SWITCH": 1.0})
        'TRANSPOSE=24 (0.5 normalised); Cutoff=1, OP1 SWITCH=1 (normalised 0–1)'
    """
    voice, other = [], []
    for name, value in fixed.items():
        p = PARAM_BY_NAME.get(name)
        if p is not None and p.voice_offset is not None:
            voice.append(f"{name}={int(round(value * p.max))} ({value:g} normalised)")
        else:
            other.append(f"{name}={value:g}")
    return "; ".join(voice + ([", ".join(other) + " (normalised 0–1)"] if other else []))


# --- the 10-character voice name ---------------------------------------------------------------
# Files store names as 10 bytes (``|S10``): real banks hold NULs and other control bytes, which
# HDF5 variable-length strings cannot. Written as ASCII (other characters become "?"), read back
# padded with spaces to 10 (numpy drops trailing NULs of ``S10`` values).


def pad_name(name: str) -> str:
    """A voice name cut or right-padded with spaces to :data:`NAME_LENGTH` (10) characters."""
    return str(name)[:NAME_LENGTH].ljust(NAME_LENGTH)


def encode_names(names) -> np.ndarray:
    """Names (str) → ``(n,) |S10`` as stored in files: padded to 10, ASCII, "?" for other characters.

    Example::

        >>> encode_names(["E.PIANO 1", "Flûte"]).tolist()
        [b'E.PIANO 1 ', b'Fl?te     ']
    """
    return np.array([pad_name(n).encode("ascii", "replace") for n in names], dtype=f"S{NAME_LENGTH}")


def decode_names(values) -> list[str]:
    """Stored names (``|S10`` values, bytes) → str, 10 characters each (undecodable bytes → U+FFFD).

    Example::

        >>> decode_names(encode_names(["SINE"]))
        ['SINE      ']
        >>> decode_names(np.array([b"SINE\\0\\0\\0\\0\\0\\0"], "S10"))   # trailing NULs kept
        ['SINE\\x00\\x00\\x00\\x00\\x00\\x00']
    """
    if isinstance(values, np.ndarray) and values.dtype.kind == "S":
        # numpy drops an element's trailing NUL bytes (as h5py's reads do); its buffer keeps them,
        # and a name found with them must come out as found
        width = values.dtype.itemsize
        values = [bytes(row) for row in np.ascontiguousarray(values).reshape(-1).view(np.uint8).reshape(-1, width)]
    return [bytes(v).decode("ascii", "replace").ljust(NAME_LENGTH) for v in values]


# --- the 32 algorithms ---------------------------------------------------------------------------
# Taken from the engine (dexed-py's ``dexed.algorithms``), so that every judgement about which
# operators are heard follows the graphs the renders compute.


@dataclass(frozen=True, eq=False)
class Algorithm:
    """One of the DX7's 32 operator graphs; operators are numbered 0 = OP1 … 5 = OP6.

    Attributes:
        value: the raw ALGORITHM value 0–31 (algorithm ``value + 1`` on a DX7).
        carriers: operators whose outputs are summed into the audio.
        mod_matrix: ``(6, 6)`` bool, read-only; ``mod_matrix[i, j]``: operator j modulates operator i
            (the feedback edge not included).
        feedback: ``(src, dst)``: the feedback edge, the same operator twice for self-feedback.

    Example::

        >>> alg = algorithm(31)                      # algorithm 32: six carriers
        >>> alg.carriers, alg.reaching([True, False, True, True, True, True])
        ((0, 1, 2, 3, 4, 5), (True, False, True, True, True, True))
    """

    value: int
    carriers: tuple[int, ...]
    mod_matrix: np.ndarray
    feedback: tuple[int, int]

    def reaching(self, active: Sequence[bool], *, through_feedback: bool = False) -> tuple[bool, ...]:
        """Operators whose output can reach the audio, ``(6,)`` bool, OP1 first.

        An operator reaches the audio when it is ``active`` and it is a carrier or modulates an
        operator that reaches it (transitively). With ``through_feedback`` the feedback edge counts
        as a modulation in both directions.
        """
        mod = self.mod_matrix.copy()
        src, dst = self.feedback
        if through_feedback and src != dst:
            mod[dst, src] = mod[src, dst] = True
        reach = [False] * N_OPERATORS
        for c in self.carriers:
            reach[c] = bool(active[c])
        grew = True
        while grew:
            grew = False
            for j in range(N_OPERATORS):
                if not reach[j] and active[j] and any(reach[i] and mod[i, j] for i in range(N_OPERATORS)):
                    reach[j] = grew = True
        return tuple(reach)


@lru_cache(maxsize=None)
def algorithm(value: int) -> Algorithm:
    """The operator graph of raw ALGORITHM ``value`` (0–31; algorithm ``value + 1`` on a DX7)."""
    import dexed   # the engine's own graphs; imported on first use so that the schema stays light

    alg = dexed.algorithms[int(value)]
    mod = np.array(alg.mod_matrix, dtype=bool)
    mod.setflags(write=False)
    src, dst = alg.feedback_edge
    return Algorithm(int(value), tuple(int(c) for c in alg.carriers), mod, (int(src), int(dst)))
