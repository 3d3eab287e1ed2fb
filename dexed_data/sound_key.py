"""The sound-equivalence key: raw values with every parameter that cannot change the sound set to 0.

Two presets with equal keys render the same audio (:func:`sound_key` states the rules and the
measured tolerance); the catalogue groups its rows by this key (``/presets/sound_group``, see
:func:`sound_groups`). It is the fourth dedup level of an import (:mod:`dexed_data.importer`):
after packed bytes as found, packed bytes with bit 7 masked and raw values. Operators are judged
from the voice alone: :func:`silent_operators` (provably output nothing) and
:func:`relevant_operators` (can reach the audio through the algorithm's graph,
:func:`dexed_data.schema.algorithm`).

Example::

    >>> import numpy as np
    >>> a = np.zeros(145, np.uint8); a[134] = 31; a[105 + 16] = 99   # alg 32, OP1 audible
    >>> sound_groups(np.stack([a, a + 0])).tolist()
    [0, 0]
"""

from __future__ import annotations

import numpy as np

from .rows import group_rows
from .schema import N_OPERATORS, OP_BLOCK, SOUND_BYTES, algorithm

__all__ = ["SOUND_KEY_VERSION", "relevant_operators", "silent_operators", "sound_groups", "sound_key"]

#: Version of the :func:`sound_key` definition; stored in the file (``sound_key_version``).
SOUND_KEY_VERSION = 1

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
    relevant = np.zeros((32, 64), dtype=np.uint8)
    feedback = np.zeros((32, 2), dtype=np.int64)
    for a in range(32):
        alg = algorithm(a)
        feedback[a] = alg.feedback
        for silent_mask in range(64):
            # Feedback is a modulation edge too; for every DX7 algorithm it closes a loop that the
            # ordinary edges already make relevant, but including it keeps the rule obviously safe.
            rel = alg.reaching([(silent_mask >> i) & 1 == 0 for i in range(N_OPERATORS)], through_feedback=True)
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


def sound_groups(raw: np.ndarray) -> np.ndarray:
    """Row of each row's sound-class representative (its smallest row index), ``(n,) int32``.

    With rows sorted by id, the smallest row index is the member with the smallest id.
    """
    return group_rows(sound_key(raw))
