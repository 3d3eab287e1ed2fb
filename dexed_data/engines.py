"""Synthesis engines: raw DX7 voice values + notes → audio at the Dexed plug-in's output scale.

Two engines behind one small protocol (:class:`Engine`), built from a picklable
:class:`EngineSpec` by :func:`make_engine`:

* ``"dexed"`` (default): dexed-py 0.3.0 (Dexed's msfa core, no plug-in host) followed by the
  plug-in's output stage, ``dc_block(clip(dexed_py / 8))`` (:func:`plugin_output`). It agrees with
  the real Dexed plug-in to ≤ 2e-7 (E.PIANO 1) … ≤ 9e-4 (KOTO, LFO) of full scale on the golden renders
  (``shared/reference/golden``), ~50 presets/s for six notes on one core.
* ``"dawdreamer"``: a real Dexed VST2/VST3 plug-in hosted by DawDreamer, parameters set by name.

Both render the raw values they are given: the paper's fixed TRANSPOSE=24 is the caller's job
(:func:`dexed_data.schema.apply_fixed`). Audio is float32; like the plug-in's, each note is clipped
at full scale before the DC blocker (:func:`voice_clip`), so it may exceed ±1 by the blocker's offset.

Example::

    >>> import numpy as np
    >>> from dexed_data.engines import EngineSpec, make_engine
    >>> engine = make_engine(EngineSpec())
    >>> raw = np.zeros(145, np.uint8); raw[144] = 24           # a silent voice, no transpose
    >>> r = engine.render(raw, [(60, 85)], hold=0.5, release=0.5)
    >>> r.audio.shape, r.audio.dtype
    ((1, 22050), dtype('float32'))
"""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import EngineError
from .schema import FIXED_PARAMS, N_OPERATORS, PARAM_BY_NAME, SOUND_BYTES, VOICE_MAX, VOICE_PARAMS

__all__ = [
    "EngineSpec", "Render", "Engine", "DexedEngine", "DawDreamerEngine", "make_engine",
    "validate_raw", "validate_notes", "probe_plugin_load", "dc_block", "voice_clip", "plugin_output", "PLUGIN_GAIN", "DEXED_REQUIRED_NAMES", "lfo_recipe",
    "lfo_deltas", "LfoRecipe", "lfo_audible", "host_resettable",
    "dexed_voice_from_state",
]

#: dexed-py's output is 8× (+18.06 dB) the plug-in's (golden README).
PLUGIN_GAIN = 1.0 / 8.0
#: The plug-in parameters that make a plug-in "Dexed-like" (checked before anything is set).
DEXED_REQUIRED_NAMES: tuple[str, ...] = ("ALGORITHM", "OP1 EG RATE 1")

Notes = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class EngineSpec:
    """What to build an engine from; picklable, so workers build their own engine from it.

    Attributes:
        name: ``"dexed"`` (dexed-py + the plug-in's output stage) or ``"dawdreamer"``.
        sample_rate: Hz.
        plugin: path of the Dexed VST2/VST3 plug-in (``"dawdreamer"`` only).
        build: the ``engine_version`` recorded with data to be rendered again (``"dawdreamer"``
            only): a plug-in at ``plugin`` that is not that build (other bytes) is refused, since
            its renders would not be the data's. ``None``: any build.
    """

    name: str = "dexed"
    sample_rate: int = 22050
    plugin: str | None = None
    build: str | None = None


@dataclass
class Render:
    """One preset rendered on K notes.

    Attributes:
        audio: ``(notes, samples)`` float32 at the plug-in's scale (full scale = 1.0), clipped only where the plug-in clips
            (each voice at full scale before the DC blocker, :func:`voice_clip`), never when stored.
        operators: ``(notes, 6, samples)`` float32, OP1 first, at the same scale (dexed-py's
            per-operator signals / 8, no DC block); ``None`` when the engine cannot tell.
            A carrier's channel is its contribution to the output (the carriers sum to the audio
            before the DC block); a modulator's channel is the signal it feeds into its targets.
        algorithm: the voice's raw ALGORITHM value (0–31), needed to read ``operators``
            (:func:`dexed_data.features.operator_levels_db`); ``None`` if unknown.
    """

    audio: np.ndarray
    operators: np.ndarray | None = None
    algorithm: int | None = None


class Engine(Protocol):
    """A synthesis engine: raw voice values (145,) + notes → :class:`Render`."""

    spec: EngineSpec
    version: str

    def render(self, raw: np.ndarray, notes: Notes, hold: float, release: float, *,
               operators: bool = False) -> Render:
        """Render ``raw`` on each ``(pitch, velocity)`` of ``notes``: held ``hold`` s, then ``release`` s."""
        ...


def validate_raw(raw: np.ndarray) -> np.ndarray:
    """Check raw voice values and return them as ``(145,)`` uint8.

    Raises:
        EngineError: wrong shape, not integers, or a value outside ``0..max`` (naming the parameter).
            dexed-py accepts out-of-range bytes silently, so this is the only guard.
    """
    arr = np.asarray(raw)
    if arr.shape != (SOUND_BYTES,):
        raise EngineError(f"raw voice values must have shape ({SOUND_BYTES},) in voice order, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise EngineError(f"raw voice values must be integers, got dtype {arr.dtype} with fractional values")
    bad = np.flatnonzero((arr < 0) | (arr > VOICE_MAX))
    if bad.size:
        details = ", ".join(f"{VOICE_PARAMS[i].name}={int(arr[i])} (max {VOICE_PARAMS[i].max}, byte {i})"
                            for i in bad[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise EngineError(f"raw voice values out of range: {details}{more}; repair or reject the voice "
                          "before rendering (dexed_data.sysex reports out_of_range)")
    return arr.astype(np.uint8)


def validate_notes(notes: Notes, hold: float, release: float) -> list[tuple[int, int]]:
    """Check ``(pitch 0–127, velocity 1–127)`` pairs and durations (hold > 0, release ≥ 0) in seconds."""
    out = []
    for i, note in enumerate(notes):
        try:
            pitch, velocity = (int(v) for v in note)
        except (TypeError, ValueError):
            raise EngineError(f"note {i} must be a (pitch, velocity) pair, got {note!r}") from None
        if not (0 <= pitch <= 127 and 1 <= velocity <= 127):
            raise EngineError(f"note {i} = ({pitch}, {velocity}): pitch must be 0–127 and velocity 1–127")
        out.append((pitch, velocity))
    if not out:
        raise EngineError("no notes to render")
    if not (hold > 0 and release >= 0):
        raise EngineError(f"hold must be > 0 s and release ≥ 0 s, got hold={hold}, release={release}")
    return out


_DC_BLOCK = 256   # samples per block of dc_block's recursion


@functools.lru_cache(maxsize=8)
def _dc_tables(pole: float) -> tuple[np.ndarray, np.ndarray]:
    """``pole^0 … pole^B`` and their inverses ``pole^-0 … pole^-(B-1)`` (B = :data:`_DC_BLOCK`)."""
    powers = pole ** np.arange(_DC_BLOCK + 1)
    return powers, 1.0 / powers[:_DC_BLOCK]


def dc_block(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Dexed's output DC blocker along the last axis: ``y[n] = x[n] − x[n−1] + (1 − 126/sr)·y[n−1]``.

    A ~20 Hz one-pole high-pass starting from rest; computed in float64, returned as float32. The
    recursion runs in blocks of 256 samples: inside a block it is a scaled cumulative sum (the
    pole's powers stay within 1 … 4.3 there, so nothing is lost to rounding), and a short loop over
    the blocks carries each block's end into the next (memory and time in proportion to the
    length: a matrix over all pairs of blocks needed 16 GB for a 60-s note at 192 kHz). The float32
    result equals ``scipy.signal.lfilter([1, −1], [1, −pole], x)``'s (tested), at the same speed,
    without importing scipy.signal, which cost every render worker ~1 s of start-up.
    """
    x = np.asarray(x)
    n, lead = x.shape[-1], x.shape[:-1]
    if n == 0:
        return x.astype(np.float32)
    blocks = -(-n // _DC_BLOCK)
    powers, inverse = _dc_tables(1.0 - 126.0 / sample_rate)
    y = np.zeros(lead + (blocks * _DC_BLOCK,))
    y[..., 0] = x[..., 0]
    np.subtract(x[..., 1:], x[..., :-1], out=y[..., 1:n], dtype=np.float64)   # x[n] − x[n−1], x[−1] = 0
    y = y.reshape(lead + (blocks, _DC_BLOCK))
    y *= inverse
    np.cumsum(y, axis=-1, out=y)
    y *= powers[:_DC_BLOCK]                                                    # each block from rest
    ends = y[..., -1].copy()
    before = np.zeros(lead + (blocks,))           # the true output just before each block
    for b in range(1, blocks):
        before[..., b] = ends[..., b - 1] + powers[_DC_BLOCK] * before[..., b - 1]
    y += before[..., None] * powers[1:]                                        # + the earlier blocks' tails
    return y.reshape(lead + (blocks * _DC_BLOCK,))[..., :n].astype(np.float32)


def voice_clip(x: np.ndarray) -> np.ndarray:
    """What the Dexed plug-in does to each voice's output before summing the voices (``x`` at its
    scale, 1.0 = full scale, i.e. dexed-py's output / 8): ``x ≥ 1`` becomes 32767/32768 and
    ``x < −1`` becomes **+1**. Dexed converts each voice's 32-bit sample to 16 bits with
    ``val < −(1 << 24) ? 0x8000 : val ≥ (1 << 24) ? 0x7fff : val >> 9`` and then reads 0x8000 as
    +32768, so a voice driven past negative full scale flips to positive full scale (measured on
    the real plug-in: a six-carrier organ at velocity 127 differs from the unclipped dexed-py
    output by 2.03, and from this by 4.5e-7). dexed-py applies neither. One note is one voice, so
    on the engine's renders this applies to the whole output.
    """
    out = np.array(x, dtype=np.float64)
    out[x >= 1.0] = 32767.0 / 32768.0
    out[x < -1.0] = 1.0
    return out


def plugin_output(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """The Dexed plug-in's output stage on dexed-py's audio ``x`` (one voice per row): ``dc_block(voice_clip(x / 8))``."""
    return dc_block(voice_clip(np.asarray(x, np.float64) * PLUGIN_GAIN), sample_rate)


#: Sample rates the engines render at. dexed-py 0.3.0 renders exact silence below about 12,800 Hz
#: (measured: every voice silent at 8,000, 11,025, 12,000 and 12,700 Hz; sound at 12,800 and above),
#: so the floor is the first common rate above that.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 16000, 192000
#: What the engine itself takes: files rendered before that floor (8 kHz and up) re-render as made.
ENGINE_MIN_SAMPLE_RATE = 8000


def n_samples(hold: float, release: float, sample_rate: int) -> int:
    """Samples kept per note: ``int((hold + release) · sample_rate)``. dexed-py 0.3.0 can render one
    more (0.5 + 0.2 s at 22,050 Hz: 15,435 against 15,434 here); the engine keeps the first ones."""
    return int((hold + release) * sample_rate)


class DexedEngine:
    """dexed-py with the Dexed plug-in's output stage (``dc_block(clip(dexed_py / 8))``, :func:`plugin_output`).

    The plug-in's output-stage parameters are inherent here: dexed-py has no Cutoff/Resonance
    filter (= Cutoff 1, Resonance 0), unity Output, no master-tune offset (= 0.5), polyphonic
    (MonoMode 0), and all six operators on (the SWITCH byte is sent as 0x3F; dexed-py 0.3.0 was
    measured to ignore it). Each :meth:`render` call starts from a fresh voice state (envelopes,
    LFO, oscillator phases), so renders are bit-identical across calls, instances and processes.

    Several sample rates in one process were measured to work in dexed-py 0.3.0 (an instance at
    44.1 kHz does not change a 22.05 kHz instance's output, bit for bit); tests keep it that way.

    Example::

        >>> engine = DexedEngine(EngineSpec(sample_rate=22050))
        >>> engine.version.startswith("dexed-py")
        True
    """

    def __init__(self, spec: EngineSpec = EngineSpec()) -> None:
        if spec.name != "dexed":
            raise EngineError(f"DexedEngine needs EngineSpec(name='dexed'), got {spec.name!r}")
        if not ENGINE_MIN_SAMPLE_RATE <= spec.sample_rate <= MAX_SAMPLE_RATE:   # files made before the 16 kHz floor
            raise EngineError(f"sample_rate must be {ENGINE_MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz, got {spec.sample_rate}")
        import dexed

        self.spec = spec
        self.version = f"dexed-py {getattr(dexed, '__version__', '?')} + dc_block(clip(x/8))"
        self._synth = dexed._RawDexedSynth(float(spec.sample_rate), 0)

    # Rebuild from the spec in workers instead of pickling native state.
    def __getstate__(self) -> dict:
        return {"spec": self.spec}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["spec"])

    def render(self, raw: np.ndarray, notes: Notes, hold: float = 3.0, release: float = 1.0, *,
               operators: bool = False) -> Render:
        """Render ``raw`` (145,) on each note; see :class:`Render` for shapes and scale.

        ``operators=True`` uses dexed-py's ``render_all_ops`` (~30% slower) and also returns the
        six operators' signals; the audio is bit-identical either way.
        """
        raw = validate_raw(raw)
        notes = validate_notes(notes, hold, release)
        sr = self.spec.sample_rate
        total = hold + release
        # 145 sound bytes + 10 name bytes (irrelevant to sound) + operator-on mask (all six on).
        self._synth.load_sysex(raw.tobytes() + b" " * 10 + b"\x3f")
        t = n_samples(hold, release, sr)
        audio = np.empty((len(notes), t), np.float64)
        ops = np.empty((len(notes), N_OPERATORS, t), np.float32) if operators else None
        for i, (pitch, velocity) in enumerate(notes):
            if operators:
                chans = self._synth.render_all_ops(pitch, velocity, hold, total)
                ops[i] = chans[:N_OPERATORS, :t] * np.float32(PLUGIN_GAIN)
                audio[i] = chans[N_OPERATORS, :t]
            else:
                audio[i] = self._synth.render(pitch, velocity, hold, total)[:t]
        return Render(plugin_output(audio, sr), ops, int(raw[PARAM_BY_NAME["ALGORITHM"].voice_offset]))


#: Output-stage values the paper fixes, set by name when the plug-in has them (MonoMode: newer builds).
_PLUGIN_FIXED: dict[str, float] = {
    **{k: v for k, v in FIXED_PARAMS.items() if PARAM_BY_NAME[k].voice_offset is None},
    "MonoMode": 0.0,
}

# --- Dexed's LFO, as far as a host can reach it ----------------------------------------------------
#
# Dexed's LFO phase (msfa lfo.cc) is never initialised: a new instance starts from whatever its
# memory held, and the phase runs on between notes and renders. Only a key-down with LFO KEY SYNC
# on sets it (to 2^31 − 1); every 64-sample chunk then adds ``delta`` (a function of LFO SPEED and
# the sample rate). dexed-py starts every note from phase 0. So before each note the engine plays
# a key-down with sync on, then renders chunks at LFO speeds chosen so that the phase lands on 0
# exactly (mod 2^32): :func:`lfo_recipe`.

#: Dexed's lfoSource table (LFO SPEED 0–99 → Hz), msfa lfo.cc.
_LFO_SOURCE = (
    0.062541, 0.125031, 0.312393, 0.437120, 0.624610, 0.750694, 0.936330, 1.125302, 1.249609, 1.436782,
    1.560915, 1.752081, 1.875117, 2.062494, 2.247191, 2.374451, 2.560492, 2.686728, 2.873976, 2.998950,
    3.188013, 3.369840, 3.500175, 3.682224, 3.812065, 4.000800, 4.186202, 4.310716, 4.501260, 4.623209,
    4.814636, 4.930480, 5.121901, 5.315191, 5.434783, 5.617346, 5.750431, 5.946717, 6.062811, 6.248438,
    6.431695, 6.564264, 6.749460, 6.868132, 7.052186, 7.250580, 7.375719, 7.556294, 7.687577, 7.877738,
    7.993605, 8.181967, 8.372405, 8.504848, 8.685079, 8.810573, 8.986341, 9.122423, 9.300595, 9.500285,
    9.607994, 9.798158, 9.950249, 10.117361, 11.251125, 11.384335, 12.562814, 13.676149, 13.904338, 15.092062,
    16.366612, 16.638935, 17.869907, 19.193858, 19.425019, 20.833333, 21.034918, 22.502250, 24.003841, 24.260068,
    25.746653, 27.173913, 27.578599, 29.052876, 30.693677, 31.191516, 32.658393, 34.317090, 34.674064, 36.416606,
    38.197097, 38.550501, 40.387722, 40.749796, 42.625746, 44.326241, 44.883303, 46.772685, 48.590865, 49.261084,
)
#: Dexed computes its voices in chunks of 64 samples (msfa synth.h, N = 1 << LG_N).
DEXED_CHUNK = 64
#: Extra silent samples at the end of the reset render (none needed: DawDreamer re-prepares the
#: plug-in at every render, which clears Dexed's DC blocker; measured bit-identical either way).
_FLUSH_SAMPLES = 0


def lfo_deltas(sample_rate: int) -> list[int]:
    """Dexed's LFO phase increment per 64-sample chunk for LFO SPEED 0–99 (uint32, as lfo.cc computes)."""
    ratio = int(4437500000.0 * DEXED_CHUNK / sample_rate) & 0xFFFFFFFF   # Lfo::lforatio_ (uint32)
    return [int(s * float(ratio)) & 0xFFFFFFFF for s in _LFO_SOURCE]


@dataclass(frozen=True)
class LfoRecipe:
    """A reset render that brings Dexed's LFO phase to 0 (see :func:`lfo_recipe`).

    Attributes:
        keydown_chunk: 64-sample chunk of the first block where the sync key-downs are played.
        speeds: LFO SPEED (0–99) of each block of the reset render; the host's one extra block
            after a render runs at the last one.
    """

    keydown_chunk: int
    speeds: tuple[int, ...]


_RECIPES: dict[tuple[int, int], LfoRecipe] = {}


def lfo_recipe(sample_rate: int, block_size: int) -> LfoRecipe:
    """Find LFO speeds whose phase increments take the synced phase 2^31 − 1 to 0 (mod 2^32).

    The reset render has B blocks of ``block_size`` samples (c = block_size / 64 chunks each):
    the key-down at chunk ``a`` of block 0 sets the phase, then (c − a) chunks run at speed s₀,
    c at each of s₁…s₄, and c at the last speed for every further block plus the host's
    trailing block. A meet-in-the-middle search over pairs of speeds finds one (~0.3 s; cached).

    Raises:
        EngineError: ``block_size`` is not a multiple of 64, or no recipe exists (not seen).
    """
    key = (int(sample_rate), int(block_size))
    if key in _RECIPES:
        return _RECIPES[key]
    if block_size % DEXED_CHUNK:
        raise EngineError(f"block_size must be a multiple of {DEXED_CHUNK} for the Dexed reset, got {block_size}")
    c = block_size // DEXED_CHUNK
    flush = -(-_FLUSH_SAMPLES // block_size)
    d = np.array(lfo_deltas(sample_rate), np.uint64)
    mod, target = np.uint64(1 << 32), np.uint64((1 << 31) + 1)   # 2^31 − 1 + Σ ≡ 0
    i, j = np.triu_indices(d.size)
    pair = (d[i] + d[j]) % mod
    for a in range(c - 1, 0, -1):
        if (c - a) % 2 == 0:
            continue   # every other term is a multiple of c (even): the first one must be odd
        left = ((np.uint64(c - a) * d)[:, None] + np.uint64(c) * pair[None, :]) % mod
        right = ((np.uint64(c) * pair)[:, None] + (np.uint64(c * (flush + 2)) * d)[None, :]) % mod
        need = ((target + mod - left) % mod).ravel()
        order = np.argsort(right, axis=None, kind="stable")
        ordered = right.ravel()[order]
        pos = np.minimum(np.searchsorted(ordered, need), ordered.size - 1)
        hit = np.flatnonzero(ordered[pos] == need)
        if hit.size:
            s0, p = divmod(int(hit[0]), pair.size)
            q, last = divmod(int(order[pos[hit[0]]]), d.size)
            speeds = (s0, int(i[p]), int(j[p]), int(i[q]), int(j[q])) + (last,) * (flush + 1)
            _RECIPES[key] = LfoRecipe(a, speeds)
            return _RECIPES[key]
    raise EngineError(f"no LFO reset recipe for sample rate {sample_rate} Hz, block {block_size}")


def _reset_voice() -> np.ndarray:
    """The voice the reset's key-downs play: it leaves every voice's feedback memory at exactly 0.

    Dexed never initialises a voice's feedback memory (Dx7Note::fb_buf_): a note inherits the
    last two outputs of the feedback operator of whatever that voice played before, which
    changes its first samples (up to ~6e-3 on ROM1B CLAV 2). Here the feedback operator (OP6,
    algorithm 1, feedback 1) runs at a fixed 1 Hz from phase 0, so its sine stays in the first
    quarter of a cycle, and dies away fast: its last outputs, at an inaudible level, are
    exactly 0 (EngineMkI's mkiSin), as after a fresh instance. Every other operator is silent.
    """
    raw = np.zeros(SOUND_BYTES, np.uint8)
    for p in VOICE_PARAMS:
        if p.operator is not None:
            suffix = p.name[4:]
            value = {"EG RATE 1": 99, "EG RATE 2": 99, "EG RATE 3": 99, "EG RATE 4": 99, "EG LEVEL 1": 99,
                     "EG LEVEL 2": 99, "EG LEVEL 3": 99, "F COARSE": 1, "OSC DETUNE": 7,
                     "BREAK POINT": 39}.get(suffix, 0)
            if p.operator == 6:
                value = {"OUTPUT LEVEL": 99, "MODE": 1, "F COARSE": 0, "F FINE": 0}.get(suffix, value)
            raw[p.voice_offset] = value
    for name, value in {"ALGORITHM": 0, "FEEDBACK": 1, "OSC KEY SYNC": 1, "LFO KEY SYNC": 1, "LFO WAVE": 0,
                        "LFO SPEED": 35, "TRANSPOSE": 24, "PITCH EG LEVEL 1": 50, "PITCH EG LEVEL 2": 50,
                        "PITCH EG LEVEL 3": 50, "PITCH EG LEVEL 4": 50, "PITCH EG RATE 1": 99,
                        "PITCH EG RATE 2": 99, "PITCH EG RATE 3": 99, "PITCH EG RATE 4": 99}.items():
        raw[PARAM_BY_NAME[name].voice_offset] = value
    return raw


def lfo_audible(raw: np.ndarray) -> bool:
    """Whether a voice's LFO can be heard: pitch depth × sensitivity or amplitude depth × an
    operator's AM sensitivity is non-zero (else the LFO's state cannot change the sound)."""
    value = lambda name: int(raw[PARAM_BY_NAME[name].voice_offset])  # noqa: E731
    pitch = value("LFO PM DEPTH") > 0 and value("P MODE SENS.") > 0
    amp = value("LFO AM DEPTH") > 0 and any(value(f"OP{op} A MOD SENS.") > 0 for op in range(1, N_OPERATORS + 1))
    return pitch or amp


def host_resettable(raw: np.ndarray) -> bool:
    """False for the one class of voices a host cannot render from a clean state in Dexed:
    LFO WAVE = SAMPLE&HOLD with an audible LFO. Dexed's random generator (Lfo::randstate_) is
    never initialised and only ever steps forward (a full-period LCG), so no host action can
    bring it back to dexed-py's starting value; such a voice sounds different run to run."""
    return not (int(raw[PARAM_BY_NAME["LFO WAVE"].voice_offset]) == 5 and lfo_audible(raw))


#: Free space (bytes) below which a state that cannot be read back is blamed on the temporary
#: folder (Dexed 1.0.1's saved state is ~12 kB).
_STATE_ROOM = 1 << 20

#: Voice parameters the clean-state reset drives (all Dexed builds have them).
_RESET_NEEDS = ("LFO SPEED", "LFO KEY SYNC", "TRANSPOSE")


class DawDreamerEngine:
    """A Dexed VST2/VST3 plug-in hosted by DawDreamer, every parameter set and read back by name.

    Every note is the sound of a fresh Dexed playing that note from a clean state, bit for bit
    the same whatever was rendered before (other presets, other notes, another process). One
    plug-in instance serves
    every preset (a new one costs ~80 ms); before each note a *reset render* (discarded):

    1. plays 16 key-downs (one per Dexed voice) of a fixed reset voice with LFO KEY SYNC on,
       which sets the LFO phase to 2^31 − 1 and overwrites each voice's uninitialised feedback
       memory, then renders blocks at the LFO speeds of :func:`lfo_recipe`, which bring the
       phase to exactly 0 — where dexed-py starts every note;
    2. changes TRANSPOSE (automated: at block 0 and block 5), which makes Dexed kill every
       voice and zero its oscillators (``panic``).

    Then the preset's voice parameters are set again and the note is rendered from sample 0
    (TRANSPOSE's return to the preset value kills the reset's voices again; DawDreamer's
    render re-prepares the plug-in, which clears its DC blocker). After the first note, the
    voice is read back from the plug-in's saved state (:meth:`check_readback`). The fixed
    output stage (Cutoff 1, Resonance 0, Output 1, MASTER TUNE ADJ 0.5, MonoMode 0 where the
    build has it, OP1–OP6 SWITCH on) is set once. The left channel is kept; the plug-in's output
    stage is the reference scale, so nothing is rescaled. ``operators`` are not available (``None``).

    Voices with a sample-and-hold LFO that can be heard are refused (:func:`host_resettable`).
    What still differs from the ``"dexed"`` engine is arithmetic, not state: docs/FORMAT.md.

    A plug-in driven through a partial ``param_map`` (a stand-in synth in tests) lacks the
    parameters the reset needs: it gets a fresh instance per preset instead.

    Args:
        spec: ``EngineSpec(name="dawdreamer", plugin=PATH)``.
        param_map: schema parameter name → plug-in parameter name; default: the schema's names
            (Dexed's own, in both the 155-parameter 0.9.x builds and the 2,238-parameter 1.0.x
            VST3, whose MonoMode and MIDI-CC entries are ignored).
        fixed: plug-in parameter name → normalized value set before the voice; default: the
            paper's fixed output stage. Names the plug-in lacks are skipped.
        required: plug-in parameter names that must exist (the "Dexed-like" check).
        block_size: DawDreamer's processing block, samples (a multiple of 64 for the reset).

    Raises:
        EngineError: the plug-in path does not exist, DawDreamer cannot load it, or it lacks
            the required / mapped parameter names (the message names them).
    """

    def __init__(self, spec: EngineSpec, *, param_map: Mapping[str, str] | None = None,
                 fixed: Mapping[str, float] | None = None,
                 required: Sequence[str] = DEXED_REQUIRED_NAMES, block_size: int = 512) -> None:
        if spec.name != "dawdreamer":
            raise EngineError(f"DawDreamerEngine needs EngineSpec(name='dawdreamer'), got {spec.name!r}")
        if not spec.plugin:
            raise EngineError("the dawdreamer engine needs a plug-in: --plugin /path/to/Dexed.vst3 (an empty "
                              "path names none; in Python: EngineSpec(name='dawdreamer', plugin='/path/to/Dexed.vst3'))")
        if not os.path.exists(spec.plugin):
            raise EngineError(f"plug-in not found: {spec.plugin!r} (give the path of a Dexed .vst3 "
                              "bundle or VST2 .so)")
        import dawdreamer

        self.spec = spec
        self._dd = dawdreamer
        self._block = block_size
        self._param_map = dict(param_map) if param_map is not None else {p.name: p.name for p in VOICE_PARAMS}
        for name in self._param_map:
            if name not in PARAM_BY_NAME or PARAM_BY_NAME[name].voice_offset is None:
                raise EngineError(f"param_map key {name!r} is not a voice parameter of the schema")
        self._fixed = dict(fixed) if fixed is not None else dict(_PLUGIN_FIXED)
        self._required = tuple(required)
        self._uses = 0
        engine, proc = self._load()
        self._index = self._check(proc)
        # voice position → plug-in parameter index and max, for the mapped voice parameters
        self._mapped = [PARAM_BY_NAME[n].voice_offset for n in self._param_map]
        self._slot = {PARAM_BY_NAME[n].voice_offset: self._index[m] for n, m in self._param_map.items()}
        self._max = {p.voice_offset: p.max for p in VOICE_PARAMS}
        #: "dexed": one instance, reset render before each note; "fresh": new instance per preset.
        self.reset = "dexed" if all(self._param_map.get(n) == n for n in _RESET_NEEDS) and \
            len(self._param_map) == len(VOICE_PARAMS) else "fresh"
        self._live = None
        if self.reset == "dexed":
            self._recipe = lfo_recipe(spec.sample_rate, block_size)
            self._live = (engine, proc)
            self._setup(proc)
            engine.load_graph([(proc, [])])
        self.n_parameters = int(proc.get_plugin_parameter_size())
        size, digest = plugin_build(spec.plugin)
        self.version = (f"dawdreamer {getattr(dawdreamer, '__version__', '?')} + "
                        f"{os.path.basename(os.path.normpath(spec.plugin))} ({size} bytes, sha256 {digest}, "
                        f"{self.n_parameters} parameters; reset: {self.reset})")
        if spec.build is not None and not same_build(spec.build, size, digest):
            raise EngineError(f"the plug-in {spec.plugin!r} is not the build that rendered this data (then: "
                              f"{spec.build}; now: {self.version}), so its renders would not be the data's: put that "
                              "build back at this path, or render the dataset again with this one")

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "param_map": self._param_map, "fixed": self._fixed,
                "required": self._required, "block_size": self._block}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["spec"], param_map=state["param_map"], fixed=state["fixed"],
                      required=state["required"], block_size=state["block_size"])

    def _load(self):
        """A new RenderEngine and plug-in instance."""
        self._uses += 1
        engine = self._dd.RenderEngine(float(self.spec.sample_rate), self._block)
        try:
            # a bundle given with a trailing slash (tab completion) is the same bundle
            proc = engine.make_plugin_processor(f"synth{self._uses}", os.path.normpath(self.spec.plugin))
        except Exception as exc:  # DawDreamer raises RuntimeError/ValueError depending on the failure
            raise EngineError(f"DawDreamer could not load the plug-in {self.spec.plugin!r}: {exc} "
                              f"({_load_hint(self.spec.plugin)})") from exc
        if proc.get_num_output_channels() < 1:
            raise EngineError(f"plug-in {self.spec.plugin!r} has no audio output")
        return engine, proc

    def _check(self, proc) -> dict[str, int]:
        """Map plug-in parameter names to indices; refuse a plug-in that lacks a needed name."""
        index: dict[str, int] = {}
        for i, name in enumerate(self._parameter_names(proc)):
            index.setdefault(name, i)
        wanted = list(self._required) + [n for n in self._param_map.values() if n not in self._required]
        missing = [n for n in wanted if n not in index]
        if missing:
            names = list(index)
            shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
            its = f"its {len(names)} parameters are {shown}" if names else "it has no parameters at all"
            raise EngineError(
                f"plug-in {self.spec.plugin!r} is not Dexed-like: it lacks the parameter(s) "
                f"{', '.join(repr(n) for n in missing[:5])}{' ...' if len(missing) > 5 else ''}"
                f"{f' ({len(missing)} missing)' if len(missing) > 5 else ''}; "
                f"{its}: use a Dexed VST2/VST3 build (from Python, DawDreamerEngine(param_map=...) maps other "
                "names)")
        return index

    def _parameter_names(self, proc) -> list[str]:
        """The plug-in's parameter names by index (155 in Dexed 0.9.x, 2,238 in the 1.0.x VST3)."""
        return [proc.get_parameter_name(i) for i in range(int(proc.get_plugin_parameter_size()))]

    # Every write to the plug-in goes through here (tests override it to simulate a refusing plug-in).
    def _write(self, proc, index: int, value: float) -> None:
        proc.set_parameter(index, value)

    def _setup(self, proc) -> None:
        for name, value in self._fixed.items():
            if name in self._index:  # e.g. MonoMode exists only in newer Dexed builds
                self._write(proc, self._index[name], float(value))

    def _set_voice(self, proc, raw: np.ndarray, positions=None) -> None:
        """Send voice values (all mapped ones, or those at voice ``positions``) as ``raw / max``."""
        if positions is None:
            positions = self._mapped
        for k in positions:
            self._write(proc, self._slot[k], float(raw[k]) / self._max[k])

    def check_readback(self, proc, raw: np.ndarray) -> None:
        """Read every mapped voice parameter back; it must equal what was sent.

        With Dexed, the values are read from the plug-in's own saved state (its 161-byte voice
        buffer, :func:`dexed_voice_from_state`), i.e. what it will play; ``get_parameter`` only
        returns the host's copy of what was sent. Other plug-ins: ``get_parameter``, rounded.

        Raises:
            EngineError: naming the first parameters whose value differs (hosts have seen plug-ins
                ignore host-set parameters: DawDreamer #149, Dexed #407).
        """
        held = self._state_voice(proc) if self.reset == "dexed" else None
        bad = []
        for k in self._mapped:
            p = VOICE_PARAMS[k]
            name = self._param_map[p.name]
            if held is not None:
                got = int(held[k])
                shown = f"{got}"
            else:
                value = float(proc.get_parameter(self._slot[k]))
                got = round(value * p.max)
                shown = f"{value:.4f} (≈{value * p.max:.2f})"
            if got != int(raw[k]):
                bad.append(f"{name} = {shown}, sent {int(raw[k])}/{p.max}")
        if bad:
            raise EngineError(f"plug-in {os.path.basename(os.path.normpath(self.spec.plugin))} did not take "
                              f"the voice parameter(s) set by name: {'; '.join(bad[:4])}"
                              f"{f' and {len(bad) - 4} more' if len(bad) > 4 else ''}")

    def _state_voice(self, proc) -> np.ndarray:
        """The voice bytes (≥ 145) Dexed holds, from its saved state (a temporary file, ~1 ms).

        The file is removed at once: one kept for the engine's life stayed in ``$TMPDIR`` after
        every ``render --engine dawdreamer`` (one per worker; the job ends its workers, so no
        finaliser runs)."""
        import shutil
        import tempfile

        try:
            fd, path = tempfile.mkstemp(prefix="dexed-state-", suffix=".bin")
        except OSError as exc:
            raise EngineError(f"cannot make a file in the temporary folder {tempfile.gettempdir()} to read the "
                              f"plug-in's voice back ({exc.strerror or exc}); set TMPDIR to a writable folder "
                              "with room") from None
        os.close(fd)
        try:
            proc.save_state(path)
            with open(path, "rb") as f:
                data = f.read()
            free = shutil.disk_usage(os.path.dirname(path)).free
        finally:
            try:
                os.remove(path)
            except OSError:
                pass
        try:
            return dexed_voice_from_state(data, self.spec.plugin)
        except EngineError:
            # DawDreamer says nothing when it cannot write the state: a full temporary folder looks
            # like a build whose state holds no voice
            if free < _STATE_ROOM:
                raise EngineError(f"the plug-in's state could not be saved whole in the temporary folder "
                                  f"{os.path.dirname(path)} to read its voice back ({free // 1024} kB free); free "
                                  "space there, or set TMPDIR to a folder with room") from None
            raise

    def _reset_render(self, engine, proc, raw: np.ndarray) -> None:
        """The clean-state reset before a note (class docstring): LFO phase 0, voices dead, DC 0."""
        sr, block, recipe = self.spec.sample_rate, self._block, self._recipe
        self._set_voice(proc, _RESET_VOICE, np.flatnonzero(_RESET_VOICE != raw))
        n = len(recipe.speeds)
        proc.set_automation(self._index["LFO SPEED"],
                            np.repeat(np.asarray(recipe.speeds, np.float32) / 99.0, block))
        # A TRANSPOSE change makes Dexed kill every voice and zero its oscillators (panic()): at
        # block 0, before the key-downs (so none steals a still-sounding voice, which would keep
        # its oscillator phases), and again once the reset voice has died away.
        transpose = np.full(n * block, 23 / 48, np.float32)
        transpose[_PANIC_BLOCK * block:] = 22 / 48
        proc.set_automation(self._index["TRANSPOSE"], transpose)
        proc.clear_midi()
        start = recipe.keydown_chunk * DEXED_CHUNK / sr
        for pitch in range(48, 48 + _DEXED_VOICES):   # one key-down per voice (16 in Dexed)
            proc.add_midi_note(pitch, 100, start, _RESET_HOLD / sr)
        engine.render(n * block / sr)

    def renders(self, raw: np.ndarray) -> bool:
        """Whether :meth:`render` takes this voice: not one with a sample-and-hold LFO that can be
        heard, when this build is reset by the host (:func:`host_resettable`)."""
        return self.reset != "dexed" or host_resettable(raw)

    def render(self, raw: np.ndarray, notes: Notes, hold: float = 3.0, release: float = 1.0, *,
               operators: bool = False) -> Render:
        """Render ``raw`` (145,) on each note from a clean state; ``operators`` is ignored (None).

        Raises:
            EngineError: bad input, or the plug-in did not take a voice parameter (named).
        """
        raw = validate_raw(raw)
        notes = validate_notes(notes, hold, release)
        if not self.renders(raw):
            raise EngineError("LFO WAVE is SAMPLE&HOLD with an audible LFO: Dexed's random generator "
                              "cannot be reset by a host, so this voice would sound different on every "
                              "run (docs/FORMAT.md, 'The DawDreamer path'); render it with --engine dexed")
        t = n_samples(hold, release, self.spec.sample_rate)
        audio = np.zeros((len(notes), t), np.float32)
        if self.reset == "dexed":
            engine, proc = self._live
            self._set_voice(proc, raw)   # the whole voice: the reset below only swaps what differs
        else:
            engine, proc = self._load()
            self._setup(proc)
            self._set_voice(proc, raw)
            self.check_readback(proc, raw)
            engine.load_graph([(proc, [])])
            engine.render(self._block / self.spec.sample_rate)  # throw-away render: settles the first block
        for i, (pitch, velocity) in enumerate(notes):
            if self.reset == "dexed":
                self._reset_render(engine, proc, raw)
                # back to the preset (the automated LFO SPEED and TRANSPOSE always: this ends their automation)
                self._set_voice(proc, raw, np.flatnonzero((_RESET_VOICE != raw) | _AUTOMATED))
            proc.clear_midi()
            # the note-off on dexed-py's sample (DawDreamer truncates, a quarter sample past it lands there)
            proc.add_midi_note(pitch, velocity, 0.0, (note_off_sample(hold, self.spec.sample_rate) + 0.25)
                               / self.spec.sample_rate)
            engine.render(hold + release)
            if i == 0 and self.reset == "dexed":
                self.check_readback(proc, raw)   # Dexed took the host's values in that render
            out = np.asarray(engine.get_audio(), dtype=np.float32)[0]
            audio[i, : min(t, out.size)] = out[:t]
        return Render(audio, None, int(raw[PARAM_BY_NAME["ALGORITHM"].voice_offset]))


#: JUCE's base64 alphabet (MemoryBlock::toBase64Encoding: "<bytes>.<chars>", 6 bits a char, LSB first).
_JUCE_B64 = np.full(256, 255, np.uint8)
_JUCE_B64[np.frombuffer(b".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+", np.uint8)] = np.arange(64)


def _juce_base64(text: str) -> bytes:
    size, _, chars = text.partition(".")
    values = _JUCE_B64[np.frombuffer(chars.encode("ascii"), np.uint8)]
    if (values == 255).any():
        raise ValueError("not JUCE base64")
    bits = np.unpackbits(values[:, None], axis=1, bitorder="little")[:, :6].ravel()
    return np.packbits(bits, bitorder="little").tobytes()[: int(size)]


def _juce_xml_text(data: bytes) -> str | None:
    """The text of a JUCE ``copyXmlToBinary`` block ("VC2!", uint32 size, UTF-8 XML) inside ``data``."""
    at = data.find(b"VC2!")
    if at < 0:
        return None
    size = int.from_bytes(data[at + 4:at + 8], "little")
    return data[at + 8:at + 8 + size].rstrip(b"\0").decode("utf-8", "replace")


def dexed_voice_from_state(state: bytes, plugin: str = "plug-in") -> np.ndarray:
    """Dexed's current voice (``data``, 161 bytes: the 155 unpacked voice bytes first) from a state
    saved by DawDreamer (``save_state``): a VST3 state (the component state, JUCE base64, inside
    the host's XML) or a VST2 chunk, holding Dexed's ``dexedState`` XML, whose ``dexedBlob`` has
    the attribute ``base64:program="161.…"``. Read with patterns, not an XML parser: JUCE writes
    that attribute name with an undeclared namespace prefix.

    Raises:
        EngineError: no Dexed voice found in the state.
    """
    import re

    try:
        text = _juce_xml_text(state) or ""
        if "<dexedState" not in text:
            component = re.search(r"<IComponent>\s*([0-9]+\.[^<\s]*)\s*</IComponent>", text)
            text = _juce_xml_text(_juce_base64(component.group(1))) if component else ""
        program = re.search(r'base64:program="([0-9]+\.[^"]*)"', text or "")
        if not program:
            raise ValueError("no dexedBlob program in it")
        voice = np.frombuffer(_juce_base64(program.group(1)), np.uint8)
        if voice.size < SOUND_BYTES:
            raise ValueError(f"a voice of {voice.size} bytes")
        return voice
    except Exception as exc:  # noqa: BLE001 - any malformed state means the same to the caller
        raise EngineError(f"cannot read the voice back from the saved state of {plugin!r} ({exc}); "
                          "is it a Dexed build?") from None


_RESET_VOICE = _reset_voice()
#: Voice positions the reset automates (their automation must be ended by setting them again).
_AUTOMATED = np.isin(np.arange(SOUND_BYTES), [PARAM_BY_NAME[n].voice_offset for n in ("LFO SPEED", "TRANSPOSE")])
#: Dexed's polyphony (MAX_ACTIVE_NOTES): the reset plays one key-down per voice.
_DEXED_VOICES = 16
#: Samples the reset's key-downs are held: long enough for the feedback memory to settle.
_RESET_HOLD = 1024
#: Block of the reset render where TRANSPOSE changes (the reset voice has died away by then).
_PANIC_BLOCK = 5


def probe_plugin_load(path: str, sample_rate: int = 22050) -> None:
    """Load the plug-in once in a child process: a damaged binary (a bundle copied half-way) can
    crash the whole process that loads it (SIGBUS, SIGSEGV), which no ``except`` catches.

    Raises:
        EngineError: the child died by a signal while loading it (naming the signal and what to check).
    """
    import signal
    import subprocess
    import sys

    code = ("import sys, dawdreamer; e = dawdreamer.RenderEngine(float(sys.argv[2]), 512)\n"
            "try:\n    e.make_plugin_processor('probe', sys.argv[1])\nexcept Exception:\n    pass")
    proc = subprocess.run([sys.executable, "-c", code, os.path.normpath(path), str(sample_rate)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise EngineError(crashed_while_loading(path, name))


def crashed_while_loading(path: str, how: str) -> str:
    """The message for a plug-in whose loading killed the process (``how``: the signal)."""
    return (f"the plug-in {path!r} crashed the process that loaded it ({how}): its binary is damaged or "
            "incomplete (a bundle copied half-way?) or not built for this machine; copy the bundle again whole")


def _load_hint(path: str) -> str:
    """What to check when DawDreamer cannot load ``path``: the bundle's naming rule, or the bundle
    rather than its inner binary, else the generic question."""
    full = os.path.abspath(path)
    bundle = next((p for p in [full, *map(str, Path(full).parents)] if p.endswith(".vst3")), None)
    if bundle and bundle != full:
        return f"give the VST3 bundle folder {bundle}, not a file inside it"
    if bundle and os.path.isdir(bundle):
        stem = Path(bundle).stem
        try:
            binaries = sorted(Path(bundle, "Contents").glob("*/*.so"))
        except OSError as exc:   # a bundle this user may not read
            return f"cannot read the bundle {bundle} ({exc.strerror or exc}): check its permissions"
        if binaries and not any(b.stem == stem for b in binaries):
            return (f"a VST3 bundle must be named like its binary: it holds {binaries[0].name}, so name the "
                    f"folder {binaries[0].stem}.vst3")
        if not binaries:
            return (f"the bundle holds no binary (Contents/x86_64-linux/{stem}.so): it is incomplete; copy the "
                    "whole .vst3 folder again")
    if os.path.isfile(full) and _exports(full) == {b"GetPluginFactory"}:
        real = os.path.realpath(full)   # a link to a bundle's binary: that bundle
        inside = next((p for p in map(str, Path(real).parents) if p.endswith(".vst3")), None)
        if inside is not None:
            return f"give the VST3 bundle folder {inside}, not (a link to) a file inside it"
        return ("it is the binary of a VST3 plug-in, which loads only from its bundle: give the .vst3 folder it "
                f"came from (…/{Path(full).stem}.vst3, holding Contents/x86_64-linux/{Path(full).name})")
    return "is it a VST2 .so or VST3 bundle built for this machine?"


def _exports(path: str) -> set[bytes]:
    """The plug-in entry points whose names the file's bytes hold (its symbol table): VST3's
    ``GetPluginFactory``, VST2's ``VSTPluginMain``."""
    try:
        with open(path, "rb") as f:
            data = f.read(256 << 20)
    except OSError:
        return set()
    return {symbol for symbol in (b"GetPluginFactory", b"VSTPluginMain") if symbol in data}


def plugin_build(path: str) -> tuple[int, str]:
    """What identifies a plug-in build: its bytes and the SHA-256 of its content (16 hex digits),
    of the file, or of every file of a bundle folder with its relative path (~10 ms for Dexed)."""
    def unreadable(exc: OSError):
        todo = ("a link in it points nowhere: copy the bundle again whole" if exc.errno == errno.ENOENT else
                "a link in it loops: copy the bundle again whole" if exc.errno == errno.ELOOP else
                "check its permissions (every file of the bundle is read to identify the build)")
        raise EngineError(f"cannot read the plug-in {path!r}: {exc.filename}: {exc.strerror or exc}; {todo}") from None

    if not os.path.isdir(path):
        files = [("", path)]
    else:
        files, seen = [], set()
        # linked folders inside the bundle followed (a linked Contents was hashed as nothing: any build
        # passed for any other), each once (a loop of links)
        for d, dirs, names in os.walk(path, followlinks=True, onerror=unreadable):
            if os.path.realpath(d) in seen:
                dirs[:] = []
                continue
            seen.add(os.path.realpath(d))
            dirs.sort()   # a folder reached by two paths is named by the same one, whatever the listing order
            files += [(os.path.relpath(os.path.join(d, f), path), os.path.join(d, f)) for f in names]
        files.sort()
    h, size = hashlib.sha256(), 0
    try:
        for rel, full in files:
            h.update(rel.encode() + b"\0")
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                    size += len(block)
    except OSError as exc:
        unreadable(exc)
    return size, h.hexdigest()[:16]


def same_build(recorded: str, size: int, digest: str) -> bool:
    """Whether the ``engine_version`` ``recorded`` with data names the build ``(size, digest)``
    (:func:`plugin_build`); versions written before the digest was recorded name only the size."""
    m = re.search(r"\((\d+) bytes(?:, sha256 ([0-9a-f]+))?", recorded)
    if m is None:
        return True   # not a plug-in version of ours: nothing to compare
    return int(m.group(1)) == size and (m.group(2) is None or m.group(2) == digest)


def note_off_sample(hold: float, sample_rate: int) -> int:
    """The sample at which dexed-py releases a note held ``hold`` s: it takes the hold as a C
    ``float`` and rounds (measured on 1,197 holds just around chunk boundaries, at three rates).
    Dexed acts on a note-off at its next 64-sample chunk, so a hold that DawDreamer truncated
    instead (h · rate in [64k + 0.5, 64k + 1)) released the note a chunk earlier: up to 2.8e-2 apart."""
    return math.floor(float(np.float32(hold)) * sample_rate + 0.5)


def make_engine(spec: EngineSpec) -> Engine:
    """Build the engine ``spec`` names (``"dexed"`` or ``"dawdreamer"``).

    Raises:
        EngineError: unknown engine name, or the engine cannot be loaded.
    """
    if spec.name == "dexed":
        return DexedEngine(spec)
    if spec.name == "dawdreamer":
        return DawDreamerEngine(spec)
    raise EngineError(f"unknown engine {spec.name!r}: use 'dexed' (dexed-py, default) or 'dawdreamer' "
                      "(with --plugin PATH)")
