"""The paper's three preset encodings (DX7.md §5), derived from :data:`dexed_data.schema.LEARNABLE_PARAMS`.

A preset's raw values (``uint8``, shape ``(145,)``, voice order) become a float vector the model
regresses, and a model output decodes back to exact raw values:

* ``"num"``: every learnable parameter as one float ``raw / max`` in [0, 1] → 144.
* ``"numcat"``: numerical parameters as floats, categorical ones one-hot → 224.
* ``"numcat++"``: as ``"numcat"``, and every numerical parameter with at most 32 distinct values
  one-hot too (feedback, pitch-mod sensitivity, coarse, detune, rate scaling, amp-mod
  sensitivity, key velocity) → 610.

Decoding is exact on any encoded preset: a float element decodes to ``round(v · max)`` clamped to
``[0, max]``, a one-hot group to its argmax. The fixed voice bytes (TRANSPOSE) get the paper's
fixed value.

Example::

    >>> import numpy as np
    >>> from preset_model.encoding import get_encoding
    >>> enc = get_encoding("numcat++")
    >>> enc.length, len(enc.groups), len(enc.onehot_groups)
    (610, 144, 54)
    >>> raw = np.full(145, 1, dtype=np.uint8); raw[144] = 24
    >>> bool((enc.decode(enc.encode(raw)) == raw).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dexed_data.schema import LEARNABLE_PARAMS, SOUND_BYTES, VOICE_MAX, apply_fixed

from .errors import PresetModelError

#: Encoding names, in the order the paper ranks them (worst to best).
ENCODINGS: tuple[str, ...] = ("num", "numcat", "numcat++")
#: NumCat++ one-hots every numerical parameter with at most this many distinct values.
MAX_ONEHOT_CARDINALITY = 32
_LENGTHS = {"num": 144, "numcat": 224, "numcat++": 610}


@dataclass(frozen=True)
class Group:
    """The elements of an encoded vector that hold one learnable parameter.

    Attributes:
        name: schema parameter name, e.g. ``"OP3 F COARSE"``.
        onehot: ``True``: ``size`` one-hot elements (softmax + cross-entropy);
            ``False``: one float ``raw / max`` (MSE).
        start: first element in the encoded vector; the group is ``vector[start:start + size]``.
        size: number of elements (1 for a float, ``max + 1`` for a one-hot group).
        max: largest raw value.
        voice_offset: position of the parameter in the raw ``(145,)`` voice vector.
        operator: 1–6 for an operator parameter, 0 for a global one (used for the audibility mask).
        categorical: the schema's kind (a NumCat++ one-hot group may be a numerical parameter).
    """

    name: str
    onehot: bool
    start: int
    size: int
    max: int
    voice_offset: int
    operator: int
    categorical: bool

    @property
    def slice(self) -> slice:
        """The group's elements, ``slice(start, start + size)``."""
        return slice(self.start, self.start + self.size)


class Encoding:
    """One of the three encodings: group layout, ``encode`` and exact ``decode``.

    Use :func:`get_encoding` rather than this constructor (it is cached).

    Attributes:
        name: ``"num"``, ``"numcat"`` or ``"numcat++"``.
        groups: one :class:`Group` per learnable parameter (144), in schema voice order.
        length: length of the encoded vector (144, 224, 610).
        float_index: ``(n_float,)`` int64 element indices of the float (MSE) outputs.
        onehot_groups: the groups that are one-hot (cross-entropy outputs).
        element_operator: ``(length,)`` int64, operator 1–6 of each element, 0 for global ones.

    Example::

        >>> enc = get_encoding("numcat")
        >>> enc.length, enc.float_index.shape, len(enc.onehot_groups)
        (224, (122,), 22)
    """

    def __init__(self, name: str) -> None:
        if name not in ENCODINGS:
            raise PresetModelError(f"--encoding {name!r}: unknown encoding; choose one of {', '.join(ENCODINGS)}")
        self.name = name
        groups: list[Group] = []
        start = 0
        for p in LEARNABLE_PARAMS:
            categorical = p.kind == "categorical"
            onehot = (name != "num" and categorical) or (
                name == "numcat++" and p.cardinality <= MAX_ONEHOT_CARDINALITY
            )
            size = p.cardinality if onehot else 1
            groups.append(Group(p.name, onehot, start, size, p.max, p.voice_offset,  # type: ignore[arg-type]
                                p.operator or 0, categorical))
            start += size
        self.groups: tuple[Group, ...] = tuple(groups)
        self.length: int = start
        assert self.length == _LENGTHS[name], (name, self.length)
        self.float_groups: tuple[Group, ...] = tuple(g for g in groups if not g.onehot)
        self.onehot_groups: tuple[Group, ...] = tuple(g for g in groups if g.onehot)
        self.float_index = np.array([g.start for g in self.float_groups], dtype=np.int64)
        self.element_operator = np.zeros(self.length, dtype=np.int64)
        for g in groups:
            self.element_operator[g.slice] = g.operator
        self._float_offsets = np.array([g.voice_offset for g in self.float_groups], dtype=np.int64)
        self._float_max = np.array([g.max for g in self.float_groups], dtype=np.float32)

    def __repr__(self) -> str:
        return (f"Encoding({self.name!r}, length={self.length}, floats={len(self.float_groups)}, "
                f"onehot_groups={len(self.onehot_groups)})")

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Raw voice values ``(..., 145)`` (uint8, voice order) → encoded ``(..., length)`` float32.

        Raises :class:`PresetModelError` on a value that is not a whole number from 0 to its
        parameter's max (a −1 wrote its one-hot 1.0 into the previous parameter's group; NaN became −9e16).
        """
        raw = np.asarray(raw)
        if raw.ndim == 0 or raw.shape[-1] != SOUND_BYTES:
            raise PresetModelError(f"raw presets must have {SOUND_BYTES} values on the last axis, got shape {raw.shape}")
        if raw.dtype.kind not in "biuf":
            raise PresetModelError(f"raw presets are numbers (the DX7's bytes), got an array of {raw.dtype}")
        values = raw.astype(np.float64)
        odd = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
        if odd.any():
            where = np.argwhere(odd)[0]
            raise PresetModelError(f"raw value at index {tuple(int(i) for i in where)} is {raw[tuple(where)]}: raw values are "
                                   "whole numbers from 0 to each parameter's max (the DX7's bytes)")
        bad = values > VOICE_MAX
        if bad.any():
            where = np.argwhere(bad)[0]
            raise PresetModelError(f"raw value out of range at index {tuple(where)}: "
                                   f"{raw[tuple(where)]} > max {VOICE_MAX[where[-1]]}; repair the preset first")
        raw = raw.astype(np.int64)
        out = np.zeros(raw.shape[:-1] + (self.length,), dtype=np.float32)
        out[..., self.float_index] = raw[..., self._float_offsets] / self._float_max
        for g in self.onehot_groups:
            np.put_along_axis(out, g.start + raw[..., g.voice_offset, None], 1.0, axis=-1)
        return out

    def decode(self, vector: np.ndarray) -> np.ndarray:
        """Encoded or predicted ``(..., length)`` → raw voice values ``(..., 145)`` uint8.

        Floats decode to ``round(v · max)`` clamped to ``[0, max]``, one-hot groups to their argmax
        (probabilities or logits both work); TRANSPOSE gets its fixed value (24).
        """
        v = np.asarray(vector, dtype=np.float32)
        if v.shape[-1] != self.length:
            raise PresetModelError(f"{self.name} vectors have {self.length} elements, got shape {v.shape}")
        raw = np.zeros(v.shape[:-1] + (SOUND_BYTES,), dtype=np.uint8)
        values = np.rint(v[..., self.float_index] * self._float_max)
        raw[..., self._float_offsets] = np.clip(values, 0, self._float_max).astype(np.uint8)
        for g in self.onehot_groups:
            raw[..., g.voice_offset] = np.argmax(v[..., g.slice], axis=-1)
        return apply_fixed(raw)

    def operator_mask(self, audible: np.ndarray) -> np.ndarray:
        """Per-element loss weights ``(..., length)`` float32 from operator audibility ``(..., 6)`` bool.

        An operator's elements get 0 where it is inaudible (OP1 first), global elements always 1.
        """
        audible = np.asarray(audible, dtype=bool)
        padded = np.concatenate([np.ones(audible.shape[:-1] + (1,), dtype=bool), audible], axis=-1)
        return padded[..., self.element_operator].astype(np.float32)


@lru_cache(maxsize=None)
def get_encoding(name: str) -> Encoding:
    """The :class:`Encoding` called ``name`` (``"num"``, ``"numcat"``, ``"numcat++"``), built once."""
    return Encoding(name)


def decode_targets(targets) -> np.ndarray:
    """Encoded presets ``(..., D)`` of any encoding → raw voice values ``(..., 145)`` uint8.

    ``D`` names the encoding: 144 Num, 224 NumCat, 610 NumCat++ (the targets that
    :class:`preset_model.data.SpectrogramDataset` yields, or a model's outputs). Decoding is
    :meth:`Encoding.decode`: exact on encoded presets, TRANSPOSE set to its fixed 24.

    Example::

        >>> raw = np.full(145, 1, dtype=np.uint8); raw[144] = 24
        >>> [bool((decode_targets(get_encoding(n).encode(raw)) == raw).all()) for n in ENCODINGS]
        [True, True, True]
    """
    given = targets.detach().cpu().numpy() if hasattr(targets, "detach") else targets
    try:
        v = np.asarray(given)
        if v.dtype.kind not in "biuf":   # text, objects, complex (whose imaginary part was dropped)
            raise ValueError(v.dtype)
        v = v.astype(np.float32)
    except ValueError:
        what = f"an array of {given.dtype}" if isinstance(given, np.ndarray) else f"a {type(given).__name__}"
        raise PresetModelError(f"targets are an array of real numbers (..., 144 | 224 | 610), got {what}") from None
    by_length = {length: name for name, length in _LENGTHS.items()}
    if v.ndim == 0 or v.shape[-1] not in by_length:
        raise PresetModelError(f"encoded presets have {', '.join(map(str, sorted(by_length)))} elements on the last "
                               f"axis (num, numcat, numcat++), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise PresetModelError("encoded presets hold NaN or infinite values; a model's outputs are finite "
                               "(check the model's input)")
    return get_encoding(by_length[v.shape[-1]]).decode(v)
