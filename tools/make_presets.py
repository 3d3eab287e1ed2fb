"""Write the project's own DX7 banks (``presets/*.syx``) from readable sound-design recipes.

Every voice below is an original recipe written for this project (no voice is copied from a
published bank or from the corpus). A recipe is a :class:`Voice`: the algorithm, the feedback,
the operators that sound (:class:`Op`; an operator that is not listed is silent: output level 0)
and optionally an LFO and a pitch envelope. :func:`voice_to_raw` turns a recipe into the
project's raw values (``uint8``, shape ``(145,)``, voice order) through the parameter schema,
so no byte offset is written here by hand; :func:`dexed_data.sysex.encode_bank` packs 32 of
them into a 4,104-byte bank.

Regenerate the bundled banks (the output is deterministic, byte for byte)::

    python tools/make_presets.py               # writes presets/toolkit_bank_a.syx, ...
    python tools/make_presets.py --out /tmp/p  # somewhere else
    python tools/make_presets.py --check       # also render every voice and print pitch/envelope numbers

Units used in the recipes:

* ``ratio``: oscillator frequency as a multiple of the note's (0.5–31.99, ratio mode), stored as
  the DX7's coarse (0 = ×0.5, 1–31) and fine (+1 % per step of coarse) values;
  ``fixed_hz`` instead: a fixed frequency in Hz (1–9,772 Hz), independent of the key.
* ``detune``: −7…+7 (DX7 detune steps, about 1 cent each at middle C).
* ``level``, EG ``levels``: 0–99, roughly 0.75 dB per step; EG ``rates``: 0–99, 99 = instant.
* ``vel``: key velocity sensitivity 0–7; ``ams``: amplitude-modulation sensitivity 0–3;
  ``rate_scale``: keyboard rate scaling 0–7 (higher notes run their envelope faster).
* ``KeyScale.break_note``: a MIDI note (21 = A-1 … 120 = C8; Yamaha calls MIDI 60 "C3").
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from dexed_data import schema

Curve = Literal["-LIN", "-EXP", "+EXP", "+LIN"]
Wave = Literal["TRIANGLE", "SAW DOWN", "SAW UP", "SQUARE", "SINE", "SAMPLE&HOLD"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "presets"


# --------------------------------------------------------------------------------------------
# The recipe vocabulary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EG:
    """A DX7 four-stage envelope: ``rates`` R1–R4 and ``levels`` L1–L4 (0–99 each).

    The note starts at L4, moves to L1 at R1, to L2 at R2, holds L3 (reached at R3) while the key
    is down, and returns to L4 at R4 after key-off. The default is an organ gate.
    """

    rates: tuple[int, int, int, int] = (99, 99, 99, 99)
    levels: tuple[int, int, int, int] = (99, 99, 99, 0)


@dataclass(frozen=True)
class KeyScale:
    """Keyboard level scaling: attenuate an operator away from ``break_note`` (a MIDI note).

    ``left``/``right`` are depths 0–99 below/above the break point; the curves are the DX7's
    ``-LIN``, ``-EXP`` (level falls away from the break point), ``+EXP``, ``+LIN`` (rises).
    """

    break_note: int = 60
    left: int = 0
    right: int = 0
    left_curve: Curve = "-LIN"
    right_curve: Curve = "-LIN"


@dataclass(frozen=True)
class Op:
    """One operator: its frequency, output level, envelope and sensitivities (see module docs)."""

    ratio: float = 1.0
    level: int = 0
    eg: EG = field(default_factory=EG)
    vel: int = 0
    detune: int = 0
    fixed_hz: float | None = None
    ams: int = 0
    rate_scale: int = 0
    scale: KeyScale = field(default_factory=KeyScale)


@dataclass(frozen=True)
class LFO:
    """The voice's LFO: ``speed``/``delay`` 0–99, pitch/amp depths 0–99, ``pms`` 0–7 (pitch sensitivity)."""

    speed: int = 35
    delay: int = 0
    pmd: int = 0
    amd: int = 0
    wave: Wave = "TRIANGLE"
    sync: bool = True
    pms: int = 0


@dataclass(frozen=True)
class PitchEG:
    """The pitch envelope; level 50 is the played pitch (0 and 99 are about ±4 octaves)."""

    rates: tuple[int, int, int, int] = (99, 99, 99, 99)
    levels: tuple[int, int, int, int] = (50, 50, 50, 50)


@dataclass(frozen=True)
class Voice:
    """A whole DX7 voice as a sound designer writes it down.

    ``algorithm`` is 1–32 as printed on the DX7's panel; ``ops`` maps operator number 1–6 to its
    :class:`Op` (absent operators are silent); ``category`` and ``note`` are documentation only
    (not stored in the voice); the name is at most 10 ASCII characters.

    Example::

        >>> v = Voice("SINE", "test", algorithm=1, ops={1: Op(level=99)})
        >>> raw = voice_to_raw(v)
        >>> raw.shape, int(raw[schema.voice_index("OP1 OUTPUT LEVEL")]), int(raw[schema.voice_index("ALGORITHM")])
        ((145,), 99, 0)
    """

    name: str
    category: str
    algorithm: int
    ops: Mapping[int, Op]
    feedback: int = 0
    lfo: LFO = field(default_factory=LFO)
    pitch_eg: PitchEG = field(default_factory=PitchEG)
    osc_sync: bool = True
    note: str = ""


# --------------------------------------------------------------------------------------------
# Recipe → raw values (through the schema; no byte offsets here)
# --------------------------------------------------------------------------------------------


def ratio_to_coarse_fine(ratio: float) -> tuple[int, int]:
    """Ratio-mode frequency → DX7 ``(coarse, fine)``; coarse 0 means ×0.5, fine adds 1 % of coarse per step.

    >>> ratio_to_coarse_fine(1.0), ratio_to_coarse_fine(0.5), ratio_to_coarse_fine(3.5), ratio_to_coarse_fine(1.41)
    ((1, 0), (0, 0), (3, 17), (1, 41))
    """
    if not 0.5 <= ratio < 32:
        raise ValueError(f"ratio {ratio} is outside the DX7's 0.5–31.99")
    coarse = 0 if ratio < 1 else int(ratio)
    base = 0.5 if coarse == 0 else float(coarse)
    fine = round((ratio / base - 1.0) * 100)
    if not 0 <= fine <= 99:
        raise ValueError(f"ratio {ratio} cannot be written as coarse {coarse} + fine")
    return coarse, fine


def fixed_to_coarse_fine(hz: float) -> tuple[int, int]:
    """Fixed-mode frequency in Hz → DX7 ``(coarse, fine)``: ``hz = 10 ** (coarse % 4 + fine / 100)`` (approx.).

    >>> fixed_to_coarse_fine(1000.0), fixed_to_coarse_fine(440.0)
    ((3, 0), (2, 64))
    """
    if not 1.0 <= hz < 9773:
        raise ValueError(f"fixed frequency {hz} Hz is outside the DX7's 1–9,772 Hz")
    exponent = math.log10(hz)
    coarse = int(exponent)
    fine = round((exponent - coarse) * 100)
    if fine > 99:
        coarse, fine = coarse + 1, 0
    return coarse, fine


def voice_to_raw(voice: Voice) -> np.ndarray:
    """A recipe → raw voice values, ``uint8`` shape ``(145,)`` in voice order (OP6 first).

    Raises ``ValueError`` for a value outside its parameter's range (checked against the schema).
    """
    values: dict[str, int] = {
        "ALGORITHM": voice.algorithm - 1,
        "FEEDBACK": voice.feedback,
        "OSC KEY SYNC": int(voice.osc_sync),
        "LFO SPEED": voice.lfo.speed,
        "LFO DELAY": voice.lfo.delay,
        "LFO PM DEPTH": voice.lfo.pmd,
        "LFO AM DEPTH": voice.lfo.amd,
        "LFO KEY SYNC": int(voice.lfo.sync),
        "LFO WAVE": schema.LFO_WAVE_LABELS.index(voice.lfo.wave),
        "P MODE SENS.": voice.lfo.pms,
        "TRANSPOSE": schema.FIXED_TRANSPOSE,  # every voice plays at key pitch (the paper fixes it)
    }
    for i in range(4):
        values[f"PITCH EG RATE {i + 1}"] = voice.pitch_eg.rates[i]
        values[f"PITCH EG LEVEL {i + 1}"] = voice.pitch_eg.levels[i]
    if set(voice.ops) - set(range(1, 7)):
        raise ValueError(f"{voice.name}: operators are numbered 1–6, got {sorted(voice.ops)}")
    for n in range(1, schema.N_OPERATORS + 1):
        op = voice.ops.get(n, Op(level=0))
        if op.fixed_hz is None:
            coarse, fine = ratio_to_coarse_fine(op.ratio)
        else:
            coarse, fine = fixed_to_coarse_fine(op.fixed_hz)
        fields = {
            "OUTPUT LEVEL": op.level,
            "MODE": int(op.fixed_hz is not None),
            "F COARSE": coarse,
            "F FINE": fine,
            "OSC DETUNE": op.detune + 7,
            "BREAK POINT": op.scale.break_note - 21,
            "L SCALE DEPTH": op.scale.left,
            "R SCALE DEPTH": op.scale.right,
            "L KEY SCALE": schema.CURVE_LABELS.index(op.scale.left_curve),
            "R KEY SCALE": schema.CURVE_LABELS.index(op.scale.right_curve),
            "RATE SCALING": op.rate_scale,
            "A MOD SENS.": op.ams,
            "KEY VELOCITY": op.vel,
        }
        for i in range(4):
            fields[f"EG RATE {i + 1}"] = op.eg.rates[i]
            fields[f"EG LEVEL {i + 1}"] = op.eg.levels[i]
        for suffix, value in fields.items():
            values[f"OP{n} {suffix}"] = value

    raw = np.zeros(schema.SOUND_BYTES, dtype=np.uint8)
    for name, value in values.items():
        param = schema.PARAM_BY_NAME[name]
        if not 0 <= int(value) <= param.max:
            raise ValueError(f"{voice.name}: {name} = {value} is outside 0–{param.max}")
        raw[schema.voice_index(name)] = int(value)
    return raw


def check_name(name: str) -> str:
    """Validate a voice name (≤ 10 printable ASCII characters) and pad it to 10 with spaces."""
    if len(name) > schema.NAME_LENGTH or not all(32 <= ord(c) < 127 for c in name):
        raise ValueError(f"voice name {name!r} must be at most 10 printable ASCII characters")
    return name.ljust(schema.NAME_LENGTH)


# --------------------------------------------------------------------------------------------
# Shared envelopes (named so the recipes read as intent)
# --------------------------------------------------------------------------------------------

GATE = EG((99, 99, 99, 85), (99, 99, 99, 0))          # organ key: on at once, off at once
GATE_SOFT = EG((90, 99, 99, 60), (99, 99, 99, 0))      # organ pipe: quick speech, short tail
SWELL = EG((38, 30, 99, 38), (99, 96, 96, 0))          # pad: ~1 s fade-in, long release
SWELL_SLOW = EG((30, 25, 99, 32), (99, 94, 94, 0))     # very slow pad
BOW = EG((45, 40, 99, 50), (99, 95, 95, 0))            # string section bow
BLOW = EG((70, 50, 99, 65), (99, 96, 96, 0))           # wind instrument breath onset


def decay(r2: int, r3: int, l2: int = 80, r4: int = 60, r1: int = 99) -> EG:
    """A struck or plucked envelope: instant attack, fall to ``l2`` at ``r2``, die away at ``r3``."""
    return EG((r1, r2, r3, r4), (99, l2, 0, 0))


def blip(r2: int, r4: int = 70) -> EG:
    """A modulator transient: full at the attack, gone at rate ``r2`` (brightness or a click)."""
    return EG((99, r2, 99, r4), (99, 0, 0, 0))


def held(r1: int, r2: int, l2: int, l3: int, r3: int = 99, r4: int = 60) -> EG:
    """A sustained envelope: rise at ``r1`` to full, settle to ``l2`` then ``l3`` while the key is held."""
    return EG((r1, r2, r3, r4), (99, l2, l3, 0))


VIBRATO = LFO(speed=34, delay=40, pmd=6, wave="TRIANGLE", pms=3)   # delayed, gentle


# --------------------------------------------------------------------------------------------
# Bank A: keys, mallets, bells, basses, brass, organs, pads, plucks
# --------------------------------------------------------------------------------------------

BANK_A: tuple[Voice, ...] = (
    Voice(
        "TINE EP", "e-piano", algorithm=5, feedback=3,
        note="Three stacked pairs: body (1:1), a 13× tine ping that dies in ~0.2 s, a detuned "
             "chorus pair; velocity opens the bark.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(30, 22, l2=82, r4=62), vel=2,
                  scale=KeyScale(break_note=72, right=12)),
            2: Op(ratio=13, level=52, eg=blip(62), vel=6, rate_scale=3,
                  scale=KeyScale(break_note=72, right=40)),
            3: Op(ratio=1, level=94, eg=decay(28, 20, l2=84, r4=60), vel=2, detune=2),
            4: Op(ratio=1, level=80, eg=decay(40, 24, l2=66), vel=6),
            5: Op(ratio=1, level=86, eg=decay(26, 20, l2=80, r4=60), vel=1, detune=-3),
            6: Op(ratio=1, level=62, eg=decay(45, 26, l2=50), vel=4),
        },
    ),
    Voice(
        "EP MELLOW", "e-piano", algorithm=5,
        note="Round, dark electric piano: two soft 1:1 pairs and a slow sine tremolo.",
        lfo=LFO(speed=30, amd=14, wave="SINE", sync=False),
        ops={
            1: Op(ratio=1, level=99, eg=decay(24, 18, l2=84, r4=55), vel=3, ams=1),
            2: Op(ratio=1, level=68, eg=decay(36, 22, l2=60), vel=5),
            3: Op(ratio=1, level=84, eg=decay(24, 18, l2=84, r4=55), vel=3, ams=1, detune=3),
            4: Op(ratio=2, level=50, eg=blip(55), vel=5),
        },
    ),
    Voice(
        "EP BARK", "e-piano", algorithm=5, feedback=5,
        note="Hard-hit stage piano: strong 1:1 modulation for the growl, a 7× bell overtone.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(32, 22, l2=78, r4=62), vel=2),
            2: Op(ratio=1, level=86, eg=decay(48, 28, l2=55), vel=7, rate_scale=2),
            3: Op(ratio=1, level=90, eg=decay(30, 22, l2=80, r4=62), vel=2, detune=-2),
            4: Op(ratio=7, level=58, eg=blip(50), vel=5, rate_scale=3),
            5: Op(ratio=2, level=70, eg=decay(38, 24, l2=60, r4=62), vel=3),
            6: Op(ratio=1, level=60, eg=decay(50, 30, l2=40), vel=6),
        },
    ),
    Voice(
        "CLAVINET", "e-piano", algorithm=3, feedback=6,
        note="Funky clav: two three-operator stacks with 3× and 5× modulators, short and nasal.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(42, 30, l2=70, r4=78), vel=2, rate_scale=2),
            2: Op(ratio=3, level=82, eg=decay(50, 36, l2=60, r4=78), vel=4),
            3: Op(ratio=1, level=66, eg=decay(55, 40, l2=50, r4=78)),
            4: Op(ratio=2, level=84, eg=decay(46, 32, l2=66, r4=78), vel=2, rate_scale=2),
            5: Op(ratio=5, level=68, eg=decay(55, 40, l2=50, r4=78), vel=3),
            6: Op(ratio=1, level=58, eg=decay(60, 45, l2=40, r4=78)),
        },
    ),
    Voice(
        "HARPSICH", "pluck", algorithm=5, feedback=6,
        note="Quilled string: three bright pairs (4×, 5×, feedback) that fade together; "
             "rate scaling shortens the top.",
        ops={
            1: Op(ratio=1, level=96, eg=decay(36, 26, l2=72, r4=70), rate_scale=3),
            2: Op(ratio=4, level=78, eg=decay(40, 28, l2=65, r4=70), rate_scale=3,
                  scale=KeyScale(break_note=72, right=30)),
            3: Op(ratio=2, level=86, eg=decay(38, 27, l2=70, r4=70), rate_scale=3, detune=2),
            4: Op(ratio=5, level=70, eg=decay(42, 30, l2=60, r4=70), rate_scale=3),
            5: Op(ratio=1, level=84, eg=decay(36, 26, l2=72, r4=70), rate_scale=3, detune=-2),
            6: Op(ratio=1, level=70, eg=decay(40, 28, l2=65, r4=70), rate_scale=3),
        },
    ),
    Voice(
        "VIBES", "mallet", algorithm=5,
        note="Vibraphone: fundamental + 4× partial, a soft mallet click, motor tremolo on the LFO.",
        lfo=LFO(speed=33, amd=30, wave="SINE", sync=False),
        ops={
            1: Op(ratio=1, level=99, eg=decay(30, 19, l2=78, r4=40), vel=2, ams=2),
            2: Op(ratio=4, level=56, eg=blip(58), vel=6),
            3: Op(ratio=4, level=74, eg=decay(42, 26, l2=55, r4=40), vel=3, ams=2),
            4: Op(ratio=1, level=40, eg=blip(60)),
        },
    ),
    Voice(
        "MARIMBA", "mallet", algorithm=5,
        note="Rosewood bar: fundamental, a quickly fading 3.9× partial and a 10× knock.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(44, 32, l2=60, r4=55), vel=2, rate_scale=2),
            2: Op(ratio=1, level=52, eg=blip(62), vel=5),
            3: Op(ratio=3.9, level=74, eg=decay(60, 42, l2=30, r4=55), vel=3, rate_scale=2),
            5: Op(ratio=10, level=58, eg=blip(75), vel=4),
        },
    ),
    Voice(
        "KALIMBA", "mallet", algorithm=5,
        note="Thumb piano: round fundamental with a little bend of inharmonic 5.4× and 6.2× ring.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(38, 27, l2=66, r4=50), vel=2),
            2: Op(ratio=5.4, level=54, eg=blip(66), vel=5),
            3: Op(ratio=6.2, level=60, eg=decay(58, 42, l2=20, r4=50), vel=3),
        },
    ),
    Voice(
        "GLOCKEN", "mallet", algorithm=5, feedback=0,
        note="Steel bars: fundamental with 2.7× and 5.4× partials, bright and long.",
        ops={
            1: Op(ratio=1, level=96, eg=decay(28, 20, l2=80, r4=36), vel=2),
            2: Op(ratio=3.5, level=64, eg=blip(48), vel=6),
            3: Op(ratio=2.7, level=82, eg=decay(36, 24, l2=70, r4=36), vel=2),
            5: Op(ratio=5.4, level=70, eg=decay(44, 30, l2=50, r4=36), vel=3),
        },
    ),
    Voice(
        "CELESTA", "mallet", algorithm=5,
        note="Celesta: soft hammer on steel plates, an octave pair and a 4× sparkle, short tail.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(34, 24, l2=70, r4=50), vel=2, rate_scale=2),
            2: Op(ratio=4, level=60, eg=blip(60), vel=5),
            3: Op(ratio=2, level=78, eg=decay(40, 28, l2=62, r4=50), vel=2, rate_scale=2),
            4: Op(ratio=1, level=50, eg=blip(58), vel=3),
        },
    ),
    Voice(
        "TUBE BELL", "bell", algorithm=5,
        note="Tubular bell: two 1 : 3.5 pairs, slightly detuned, ringing for seconds.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(24, 14, l2=82, r4=30), vel=2),
            2: Op(ratio=3.5, level=76, eg=decay(28, 18, l2=70, r4=30), vel=4),
            3: Op(ratio=1, level=84, eg=decay(24, 14, l2=82, r4=30), vel=2, detune=4),
            4: Op(ratio=3.5, level=72, eg=decay(30, 18, l2=66, r4=30), vel=4, detune=-4),
        },
    ),
    Voice(
        "GLASS BELL", "bell", algorithm=5, feedback=2,
        note="Crystal: 1 : 1.41 modulation for a clangorous, inharmonic but sweet bell.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(26, 16, l2=80, r4=34), vel=2),
            2: Op(ratio=1.41, level=74, eg=decay(34, 22, l2=60, r4=34), vel=5),
            3: Op(ratio=2, level=84, eg=decay(30, 18, l2=76, r4=34), vel=2),
            4: Op(ratio=2.82, level=66, eg=decay(40, 24, l2=50, r4=34), vel=5),
        },
    ),
    Voice(
        "DEEP GONG", "bell", algorithm=1, feedback=4,
        note="Low gong: a 0.5-ratio carrier with a 1.4× chain that blooms then fades very slowly.",
        ops={
            1: Op(ratio=0.5, level=99, eg=EG((90, 20, 12, 25), (99, 88, 0, 0)), vel=2),
            2: Op(ratio=0.7, level=78, eg=EG((60, 22, 14, 25), (99, 80, 0, 0)), vel=4),
            3: Op(ratio=1.41, level=80, eg=EG((90, 25, 14, 25), (99, 70, 0, 0)), vel=2),
            4: Op(ratio=2.23, level=70, eg=EG((70, 28, 16, 25), (99, 60, 0, 0)), vel=3),
        },
    ),
    Voice(
        "FM BASS", "bass", algorithm=5, feedback=5,
        note="Punchy synth bass one octave down: 0.5 carriers, velocity-driven 0.5 and 1× modulators.",
        ops={
            1: Op(ratio=0.5, level=99, eg=held(99, 40, 88, 82, r3=30, r4=72), vel=2),
            2: Op(ratio=0.5, level=80, eg=EG((99, 45, 30, 72), (99, 72, 60, 0)), vel=5),
            3: Op(ratio=0.5, level=86, eg=held(99, 40, 86, 80, r3=30, r4=72), vel=2, detune=3),
            4: Op(ratio=1, level=74, eg=blip(55), vel=6),
        },
    ),
    Voice(
        "SLAP BASS", "bass", algorithm=5, feedback=6,
        note="Thumb slap: 0.5 carrier, a snapping 1× modulator and a 3× click, quick decay.",
        ops={
            1: Op(ratio=0.5, level=99, eg=decay(40, 28, l2=76, r4=74), vel=2),
            2: Op(ratio=1, level=86, eg=decay(60, 36, l2=50, r4=74), vel=6),
            3: Op(ratio=1.5, level=70, eg=blip(70), vel=4),
            4: Op(ratio=3, level=70, eg=blip(72), vel=5),
        },
    ),
    Voice(
        "SUB BASS", "bass", algorithm=1,
        note="Near-sine sub with a touch of 1× colour, sustained, tight release.",
        ops={
            1: Op(ratio=0.5, level=99, eg=held(99, 50, 96, 94, r4=75), vel=1),
            2: Op(ratio=0.5, level=58, eg=EG((99, 40, 99, 75), (99, 70, 70, 0)), vel=3),
        },
    ),
    Voice(
        "SYN BASS", "bass", algorithm=2, feedback=7,
        note="Saw-like resonant bass: self-fed 0.5 modulator swept down like a filter.",
        ops={
            1: Op(ratio=0.5, level=99, eg=held(99, 45, 92, 88, r4=70), vel=1),
            2: Op(ratio=0.5, level=84, eg=EG((99, 38, 99, 70), (99, 64, 64, 0)), vel=4),
        },
    ),
    Voice(
        "BRASS SECT", "brass", algorithm=22, feedback=7,
        note="Horn section: modulators swell in after the attack, 1×/1×/2×/3× carriers (one detuned), "
             "a small pitch scoop.",
        pitch_eg=PitchEG(rates=(80, 60, 99, 70), levels=(46, 50, 50, 50)),
        lfo=LFO(speed=36, delay=50, pmd=4, wave="TRIANGLE", pms=3),
        ops={
            1: Op(ratio=1, level=98, eg=held(62, 40, 94, 90, r4=60), vel=1),
            2: Op(ratio=1, level=80, eg=EG((50, 36, 99, 60), (99, 84, 80, 0)), vel=3),
            3: Op(ratio=1, level=82, eg=held(60, 40, 94, 90, r4=60), vel=1, detune=3),
            4: Op(ratio=2, level=80, eg=held(60, 40, 94, 90, r4=60), vel=1, detune=-2),
            5: Op(ratio=3, level=68, eg=held(60, 40, 94, 90, r4=60), vel=1, detune=1),
            6: Op(ratio=1, level=74, eg=EG((48, 34, 99, 60), (99, 80, 76, 0)), vel=3),
        },
    ),
    Voice(
        "SOFT HORNS", "brass", algorithm=1, feedback=4,
        note="Mellow French-horn pad: slow modulator swell, rounded tone, delayed vibrato.",
        lfo=VIBRATO,
        ops={
            1: Op(ratio=1, level=99, eg=held(50, 35, 96, 92, r4=50)),
            2: Op(ratio=1, level=72, eg=EG((40, 30, 99, 50), (99, 80, 76, 0)), vel=3),
            3: Op(ratio=1, level=80, eg=held(48, 35, 96, 92, r4=50), detune=4),
            4: Op(ratio=1, level=66, eg=EG((38, 30, 99, 50), (99, 78, 74, 0)), vel=3),
        },
    ),
    Voice(
        "ORGAN DRAW", "organ", algorithm=32,
        note="Drawbar organ 16'-8'-4'-2 2/3'-2' style: five sine drawbars plus a faint 8× top.",
        ops={
            1: Op(ratio=0.5, level=86, eg=GATE),
            2: Op(ratio=1, level=94, eg=GATE),
            3: Op(ratio=2, level=88, eg=GATE),
            4: Op(ratio=3, level=82, eg=GATE),
            5: Op(ratio=4, level=80, eg=GATE),
            6: Op(ratio=8, level=66, eg=GATE),
        },
    ),
    Voice(
        "ORGAN PERC", "organ", algorithm=32,
        note="Jazz organ with a decaying third-harmonic percussion click on the attack.",
        ops={
            1: Op(ratio=1, level=94, eg=GATE),
            2: Op(ratio=2, level=84, eg=GATE),
            3: Op(ratio=0.5, level=80, eg=GATE),
            4: Op(ratio=3, level=90, eg=EG((99, 42, 99, 85), (99, 0, 0, 0)), vel=2),
            5: Op(ratio=4, level=72, eg=GATE),
        },
    ),
    Voice(
        "ORGAN ROCK", "organ", algorithm=32, feedback=7,
        note="Overdriven rock organ: a self-fed 1× operator for grit, fast rotary wobble on the LFO.",
        lfo=LFO(speed=72, pmd=4, amd=12, wave="SINE", sync=False, pms=2),
        ops={
            1: Op(ratio=1, level=92, eg=GATE, ams=1),
            2: Op(ratio=2, level=86, eg=GATE, ams=1),
            3: Op(ratio=0.5, level=84, eg=GATE),
            4: Op(ratio=3, level=80, eg=GATE, ams=1),
            6: Op(ratio=1, level=80, eg=GATE, ams=1),
        },
    ),
    Voice(
        "PIPE ORGAN", "organ", algorithm=5,
        note="Church principal: 0.5/1/2 ranks with soft air from light 1:1 modulation, slow speech.",
        ops={
            1: Op(ratio=0.5, level=90, eg=GATE_SOFT),
            2: Op(ratio=0.5, level=58, eg=GATE_SOFT),
            3: Op(ratio=1, level=94, eg=GATE_SOFT),
            4: Op(ratio=1, level=62, eg=GATE_SOFT),
            5: Op(ratio=2, level=84, eg=GATE_SOFT),
            6: Op(ratio=2, level=50, eg=GATE_SOFT),
        },
    ),
    Voice(
        "WARM PAD", "pad", algorithm=5, feedback=3,
        note="Analog-style pad: three 1:1 pairs spread by detune, ~1 s fade-in, slow vibrato.",
        lfo=LFO(speed=24, delay=30, pmd=5, wave="TRIANGLE", sync=False, pms=3),
        ops={
            1: Op(ratio=1, level=96, eg=SWELL, vel=1),
            2: Op(ratio=1, level=70, eg=EG((30, 30, 99, 40), (99, 90, 88, 0))),
            3: Op(ratio=1, level=86, eg=SWELL, vel=1, detune=-4),
            4: Op(ratio=1, level=68, eg=EG((28, 30, 99, 40), (99, 90, 88, 0))),
            5: Op(ratio=1, level=84, eg=SWELL, vel=1, detune=4),
            6: Op(ratio=2, level=60, eg=EG((26, 30, 99, 40), (99, 90, 88, 0))),
        },
    ),
    Voice(
        "GLASS PAD", "pad", algorithm=5,
        note="Shimmering pad: fundamental plus 3× and 7× glassy pairs that swell in slowly.",
        lfo=LFO(speed=20, pmd=3, amd=8, wave="SINE", sync=False, pms=2),
        ops={
            1: Op(ratio=1, level=96, eg=SWELL_SLOW, ams=1),
            2: Op(ratio=3, level=60, eg=EG((22, 30, 99, 35), (99, 90, 90, 0))),
            3: Op(ratio=2, level=84, eg=SWELL_SLOW, detune=3, ams=1),
            4: Op(ratio=7, level=54, eg=EG((20, 30, 99, 35), (99, 88, 88, 0))),
            5: Op(ratio=1, level=88, eg=SWELL_SLOW, detune=-4),
        },
    ),
    Voice(
        "CHOIR AAH", "pad", algorithm=5, feedback=1,
        note="Vowel pad: 1× body plus soft 3× and 5× formant carriers, breathy modulator, vibrato.",
        lfo=LFO(speed=30, delay=35, pmd=7, wave="SINE", sync=False, pms=3),
        ops={
            1: Op(ratio=1, level=98, eg=EG((45, 30, 99, 45), (99, 96, 96, 0))),
            2: Op(ratio=1, level=62, eg=EG((40, 30, 99, 45), (99, 90, 90, 0))),
            3: Op(ratio=3, level=74, eg=EG((42, 30, 99, 45), (99, 94, 94, 0)), detune=2),
            4: Op(ratio=1, level=48),
            5: Op(ratio=5, level=64, eg=EG((42, 30, 99, 45), (99, 94, 94, 0)), detune=-2),
            6: Op(ratio=1, level=44, eg=EG((40, 30, 99, 45), (99, 90, 90, 0))),
        },
    ),
    Voice(
        "STRINGS", "strings", algorithm=2, feedback=5,
        note="String section: two bowed saw-ish stacks, one detuned, slow bow, delayed vibrato.",
        lfo=LFO(speed=33, delay=45, pmd=7, wave="TRIANGLE", pms=3),
        ops={
            1: Op(ratio=1, level=96, eg=BOW),
            2: Op(ratio=1, level=72, eg=EG((50, 40, 99, 50), (99, 88, 86, 0))),
            3: Op(ratio=1, level=85, eg=BOW, detune=4),
            4: Op(ratio=1, level=70, eg=EG((50, 40, 99, 50), (99, 88, 86, 0))),
            5: Op(ratio=2, level=60, eg=EG((50, 40, 99, 50), (99, 90, 88, 0))),
        },
    ),
    Voice(
        "PLUCK SYN", "pluck", algorithm=1, feedback=5,
        note="Synth pluck: bright-to-dark sweep as the 1× modulator dies quicker than the carrier.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(40, 30, l2=70, r4=65), vel=2),
            2: Op(ratio=1, level=84, eg=decay(55, 40, l2=45, r4=65), vel=5),
            3: Op(ratio=2, level=74, eg=decay(44, 32, l2=62, r4=65), vel=2, detune=3),
            4: Op(ratio=1, level=70, eg=blip(56)),
        },
    ),
    Voice(
        "NYLON GTR", "pluck", algorithm=5, feedback=2,
        note="Classical guitar: warm body pair, a soft 3× pick transient, octave shimmer.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(36, 25, l2=70, r4=62), vel=2, rate_scale=2),
            2: Op(ratio=1, level=70, eg=decay(50, 34, l2=50, r4=62), vel=5, rate_scale=2),
            3: Op(ratio=2, level=70, eg=decay(44, 30, l2=55, r4=62), vel=2, rate_scale=2),
            4: Op(ratio=3, level=62, eg=blip(64), vel=4),
        },
    ),
    Voice(
        "HARP", "pluck", algorithm=5,
        note="Concert harp: long, pure decay with a touch of 1× and 2× brightness at the pluck.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(30, 19, l2=74, r4=40), vel=2, rate_scale=2),
            2: Op(ratio=1, level=64, eg=decay(50, 30, l2=40, r4=40), vel=5),
            3: Op(ratio=2, level=66, eg=decay(40, 26, l2=60, r4=40), vel=2, rate_scale=2),
            4: Op(ratio=1, level=48, eg=blip(60)),
        },
    ),
    Voice(
        "TOM DRUM", "percussion", algorithm=1, feedback=6,
        note="Tuned tom: pitch envelope drops half an octave, a short noisy skin hit on top.",
        pitch_eg=PitchEG(rates=(99, 55, 99, 99), levels=(64, 50, 50, 50)),
        ops={
            1: Op(ratio=1, level=99, eg=decay(48, 36, l2=58, r4=50), vel=3),
            2: Op(ratio=1, level=60, eg=blip(68), vel=4),
            3: Op(ratio=1.6, level=80, eg=blip(74), vel=3),
            4: Op(ratio=7.7, level=86, eg=blip(74)),
        },
    ),
    Voice(
        "SPACE WIND", "fx", algorithm=1, feedback=7,
        note="Noise wind: a self-fed high modulator turns the carrier into breath that swells "
             "and whooshes with a slow random LFO.",
        lfo=LFO(speed=18, pmd=30, amd=25, wave="SAMPLE&HOLD", sync=False, pms=5),
        ops={
            1: Op(ratio=1, level=96, eg=EG((32, 30, 99, 30), (99, 92, 92, 0)), ams=2),
            2: Op(ratio=2.1, level=88, eg=EG((30, 30, 99, 30), (99, 94, 94, 0))),
            3: Op(ratio=3.3, level=72, eg=EG((30, 30, 99, 30), (99, 90, 90, 0)), ams=2),
            4: Op(ratio=9.3, level=92, eg=EG((30, 30, 99, 30), (99, 96, 96, 0))),
            5: Op(ratio=11, level=92, eg=GATE),
            6: Op(ratio=13, level=99, eg=GATE),
        },
    ),
)


# --------------------------------------------------------------------------------------------
# Bank B: leads, winds, bowed and plucked strings, drums, effects, more keys and basses
# --------------------------------------------------------------------------------------------

BANK_B: tuple[Voice, ...] = (
    Voice(
        "SAW LEAD", "lead", algorithm=2, feedback=7,
        note="Saw-like mono lead: a self-fed 1× modulator, quick attack, delayed vibrato.",
        lfo=LFO(speed=38, delay=45, pmd=8, wave="TRIANGLE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=held(95, 50, 96, 94, r4=65), vel=1),
            2: Op(ratio=1, level=82, eg=EG((95, 50, 99, 65), (99, 90, 88, 0)), vel=2),
            3: Op(ratio=1, level=76, eg=held(95, 50, 96, 94, r4=65), detune=4),
            4: Op(ratio=1, level=64, eg=EG((95, 50, 99, 65), (99, 90, 88, 0))),
        },
    ),
    Voice(
        "SQUARE LD", "lead", algorithm=1,
        note="Hollow square-wave lead: a 2× modulator on a 1× carrier gives odd harmonics only.",
        lfo=LFO(speed=40, delay=40, pmd=6, wave="SINE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=held(95, 50, 97, 96, r4=68), vel=1),
            2: Op(ratio=2, level=78, eg=EG((95, 50, 99, 68), (99, 94, 92, 0)), vel=2),
        },
    ),
    Voice(
        "SYNC LEAD", "lead", algorithm=1, feedback=5,
        note="Tearing lead: the 1×→3× modulator chain sweeps down with a pitch-EG scoop on top.",
        pitch_eg=PitchEG(rates=(99, 70, 99, 99), levels=(53, 50, 50, 50)),
        lfo=LFO(speed=38, delay=50, pmd=7, wave="TRIANGLE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=held(95, 50, 96, 94, r4=65), vel=1),
            2: Op(ratio=3, level=86, eg=EG((99, 34, 99, 65), (99, 76, 76, 0)), vel=4),
            3: Op(ratio=1, level=80, eg=held(95, 50, 96, 94, r4=65), detune=-3),
            4: Op(ratio=2, level=72, eg=EG((99, 40, 99, 65), (99, 80, 80, 0)), vel=3),
        },
    ),
    Voice(
        "FLUTE", "wind", algorithm=5, feedback=6,
        note="Concert flute: nearly pure 1× tone, breath from a noisy self-fed pair, late vibrato.",
        lfo=LFO(speed=34, delay=55, pmd=6, amd=4, wave="SINE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=BLOW, vel=1, ams=1),
            2: Op(ratio=1, level=56, eg=EG((70, 40, 99, 65), (99, 70, 66, 0)), vel=2),
            3: Op(ratio=2, level=62, eg=BLOW),
            5: Op(ratio=1, level=58, eg=EG((80, 45, 99, 65), (99, 60, 50, 0))),
            6: Op(ratio=7.3, level=90, eg=GATE),
        },
    ),
    Voice(
        "CLARINET", "wind", algorithm=1, feedback=2,
        note="Woody clarinet: 2× modulation keeps odd harmonics, a 3× reed edge, vibrato-free.",
        ops={
            1: Op(ratio=1, level=99, eg=BLOW, vel=1),
            2: Op(ratio=2, level=72, eg=EG((66, 45, 99, 65), (99, 88, 86, 0)), vel=3),
            3: Op(ratio=3, level=66, eg=BLOW),
            4: Op(ratio=2, level=60, eg=EG((66, 45, 99, 65), (99, 88, 86, 0))),
        },
    ),
    Voice(
        "OBOE", "wind", algorithm=1, feedback=3,
        note="Nasal double reed: a bright 1× carrier driven hard by a 1× modulator with a 4× edge.",
        lfo=LFO(speed=36, delay=50, pmd=5, wave="SINE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=BLOW, vel=1),
            2: Op(ratio=1, level=82, eg=EG((70, 45, 99, 65), (99, 92, 90, 0)), vel=3),
            3: Op(ratio=3, level=70, eg=BLOW),
            4: Op(ratio=4, level=68, eg=EG((70, 45, 99, 65), (99, 90, 88, 0))),
        },
    ),
    Voice(
        "TENOR SAX", "wind", algorithm=2, feedback=6,
        note="Growly sax: a self-fed 1× modulator that bites with velocity, pitch scoop, vibrato.",
        pitch_eg=PitchEG(rates=(85, 65, 99, 99), levels=(47, 50, 50, 50)),
        lfo=LFO(speed=36, delay=40, pmd=7, wave="TRIANGLE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=held(75, 45, 95, 92, r4=65), vel=2),
            2: Op(ratio=1, level=78, eg=EG((70, 40, 99, 65), (99, 88, 84, 0)), vel=5),
            3: Op(ratio=2, level=72, eg=held(75, 45, 95, 92, r4=65)),
            4: Op(ratio=3, level=62, eg=EG((70, 40, 99, 65), (99, 86, 82, 0)), vel=3),
        },
    ),
    Voice(
        "TRUMPET", "brass", algorithm=18, feedback=5,
        note="Solo trumpet: one carrier under three modulators (1×, 1× self-fed, 2×→3× chain) "
             "that bloom with the breath.",
        pitch_eg=PitchEG(rates=(90, 70, 99, 99), levels=(45, 50, 50, 50)),
        lfo=LFO(speed=37, delay=55, pmd=6, wave="TRIANGLE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=held(72, 45, 96, 94, r4=65), vel=1),
            2: Op(ratio=1, level=74, eg=EG((58, 40, 99, 65), (99, 90, 86, 0)), vel=4),
            3: Op(ratio=1, level=70, eg=EG((58, 40, 99, 65), (99, 88, 84, 0)), vel=3),
            4: Op(ratio=2, level=66, eg=EG((60, 40, 99, 65), (99, 86, 82, 0)), vel=3),
            5: Op(ratio=3, level=56, eg=EG((60, 40, 99, 65), (99, 80, 78, 0))),
        },
    ),
    Voice(
        "PAN FLUTE", "wind", algorithm=5, feedback=7,
        note="Breathy pan pipe: pure 1× tone, a chiff at the start and airy noise throughout.",
        lfo=LFO(speed=32, delay=60, pmd=4, wave="SINE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=EG((72, 50, 99, 62), (99, 94, 92, 0))),
            2: Op(ratio=3, level=58, eg=blip(60)),
            3: Op(ratio=1, level=66, eg=EG((80, 60, 99, 62), (99, 70, 60, 0))),
            4: Op(ratio=5.1, level=84, eg=GATE),
        },
    ),
    Voice(
        "ACCORDION", "organ", algorithm=5, feedback=4,
        note="Musette accordion: two reed banks (2× modulation) tuned apart for the wet beat.",
        ops={
            1: Op(ratio=1, level=97, eg=GATE_SOFT),
            2: Op(ratio=2, level=76, eg=GATE_SOFT),
            3: Op(ratio=1, level=84, eg=GATE_SOFT, detune=7),
            4: Op(ratio=2, level=74, eg=GATE_SOFT),
            5: Op(ratio=2, level=74, eg=GATE_SOFT),
            6: Op(ratio=3, level=60, eg=GATE_SOFT),
        },
    ),
    Voice(
        "VIOLIN", "strings", algorithm=2, feedback=6,
        note="Solo violin: bright self-fed bow noise on a 1× carrier, expressive delayed vibrato.",
        lfo=LFO(speed=40, delay=40, pmd=9, wave="SINE", pms=3),
        ops={
            1: Op(ratio=1, level=99, eg=EG((58, 40, 99, 55), (99, 96, 95, 0)), vel=1),
            2: Op(ratio=1, level=80, eg=EG((55, 40, 99, 55), (99, 90, 88, 0)), vel=3),
            3: Op(ratio=2, level=72, eg=EG((58, 40, 99, 55), (99, 94, 92, 0))),
            4: Op(ratio=3, level=66, eg=EG((55, 40, 99, 55), (99, 88, 86, 0))),
        },
    ),
    Voice(
        "CELLO", "strings", algorithm=2, feedback=5,
        note="Cello an octave down: 0.5 carrier with rosiny 0.5 modulation and slow vibrato.",
        lfo=LFO(speed=33, delay=45, pmd=7, wave="SINE", pms=3),
        ops={
            1: Op(ratio=0.5, level=99, eg=BOW, vel=1),
            2: Op(ratio=0.5, level=80, eg=EG((45, 40, 99, 50), (99, 90, 88, 0)), vel=3),
            3: Op(ratio=1, level=74, eg=BOW),
            4: Op(ratio=1.5, level=64, eg=EG((45, 40, 99, 50), (99, 88, 86, 0))),
        },
    ),
    Voice(
        "SLOW STRNG", "strings", algorithm=14, feedback=4,
        note="Cinematic string pad: two-second bow, 1× carriers with a 1× + 2× modulator pair.",
        lfo=LFO(speed=28, delay=60, pmd=6, wave="TRIANGLE", sync=False, pms=3),
        ops={
            1: Op(ratio=1, level=97, eg=SWELL_SLOW),
            2: Op(ratio=1, level=74, eg=EG((28, 30, 99, 32), (99, 90, 88, 0))),
            3: Op(ratio=1, level=84, eg=SWELL_SLOW, detune=-4),
            4: Op(ratio=1, level=72, eg=EG((28, 30, 99, 32), (99, 90, 88, 0))),
            5: Op(ratio=2, level=60, eg=EG((28, 30, 99, 32), (99, 90, 88, 0))),
            6: Op(ratio=1, level=60, eg=EG((28, 30, 99, 32), (99, 90, 88, 0))),
        },
    ),
    Voice(
        "PIZZICATO", "pluck", algorithm=5, feedback=2,
        note="Plucked strings: a short woody body, 1× modulator fading faster than the tone.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(50, 38, l2=60, r4=70), vel=3, rate_scale=2),
            2: Op(ratio=1, level=70, eg=decay(62, 45, l2=40, r4=70), vel=5),
            3: Op(ratio=2, level=70, eg=decay(55, 40, l2=50, r4=70), vel=3, detune=3),
            4: Op(ratio=1, level=52, eg=blip(66)),
        },
    ),
    Voice(
        "SITAR", "pluck", algorithm=1, feedback=7,
        note="Buzzy sitar: a self-fed 1→2→3 chain gives the jawari buzz; a slow pitch sag.",
        pitch_eg=PitchEG(rates=(99, 40, 99, 99), levels=(51, 50, 50, 50)),
        ops={
            1: Op(ratio=1, level=99, eg=decay(30, 20, l2=78, r4=50), vel=2),
            2: Op(ratio=1, level=82, eg=decay(34, 24, l2=70, r4=50), vel=4),
            3: Op(ratio=2, level=70, eg=decay(32, 22, l2=74, r4=50)),
            4: Op(ratio=3, level=72, eg=decay(36, 24, l2=64, r4=50)),
            5: Op(ratio=1, level=70, eg=decay(40, 26, l2=60, r4=50)),
            6: Op(ratio=1, level=70, eg=decay(40, 26, l2=60, r4=50)),
        },
    ),
    Voice(
        "STEEL DRUM", "mallet", algorithm=5,
        note="Caribbean pan: fundamental with 2× and 3.01× partials and a bright rubber-mallet ping.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(36, 26, l2=70, r4=50), vel=2),
            2: Op(ratio=2, level=66, eg=decay(50, 35, l2=40, r4=50), vel=5),
            3: Op(ratio=2, level=84, eg=decay(42, 30, l2=60, r4=50), vel=2),
            4: Op(ratio=3.01, level=56, eg=blip(55), vel=4),
        },
    ),
    Voice(
        "MUSIC BOX", "mallet", algorithm=5,
        note="Tiny comb tines: high 3× and 8× partials ringing over a thin fundamental.",
        ops={
            1: Op(ratio=1, level=90, eg=decay(30, 20, l2=76, r4=40), vel=2, rate_scale=3),
            2: Op(ratio=8, level=52, eg=blip(60), vel=5),
            3: Op(ratio=3, level=82, eg=decay(34, 22, l2=70, r4=40), vel=2, rate_scale=3),
            5: Op(ratio=8, level=64, eg=decay(48, 32, l2=40, r4=40), vel=3),
        },
    ),
    Voice(
        "TOY PIANO", "e-piano", algorithm=5, feedback=3,
        note="Toy piano: metal rods, a clanky 5.4× strike and a quick, bright decay.",
        ops={
            1: Op(ratio=1, level=99, eg=decay(44, 30, l2=64, r4=60), vel=2, rate_scale=3),
            2: Op(ratio=5.4, level=62, eg=blip(58), vel=5),
            3: Op(ratio=4, level=76, eg=decay(52, 36, l2=50, r4=60), vel=3),
            4: Op(ratio=1, level=58, eg=blip(62)),
        },
    ),
    Voice(
        "FM GRAND", "e-piano", algorithm=3, feedback=4,
        note="Acoustic-ish piano: two 1→1→(1,3) stacks, hammer brightness tracking velocity, "
             "two-stage decay.",
        ops={
            1: Op(ratio=1, level=99, eg=EG((99, 42, 22, 60), (99, 82, 0, 0)), vel=3, rate_scale=3),
            2: Op(ratio=1, level=76, eg=EG((99, 50, 26, 60), (99, 70, 0, 0)), vel=6, rate_scale=3),
            3: Op(ratio=3, level=62, eg=blip(55), vel=5),
            4: Op(ratio=2, level=82, eg=EG((99, 46, 24, 60), (99, 76, 0, 0)), vel=3, rate_scale=3),
            5: Op(ratio=1, level=70, eg=EG((99, 54, 28, 60), (99, 66, 0, 0)), vel=6),
            6: Op(ratio=1, level=56, eg=blip(60)),
        },
    ),
    Voice(
        "FRETLESS", "bass", algorithm=1, feedback=3,
        note="Singing fretless bass: 0.5 carrier, a soft 0.5 modulator with a small mwah and slide.",
        pitch_eg=PitchEG(rates=(99, 60, 99, 99), levels=(48, 50, 50, 50)),
        ops={
            1: Op(ratio=0.5, level=99, eg=held(90, 30, 90, 80, r3=25, r4=70), vel=2),
            2: Op(ratio=0.5, level=76, eg=EG((70, 30, 99, 70), (99, 80, 70, 0)), vel=4),
            3: Op(ratio=1, level=60, eg=EG((70, 40, 99, 70), (99, 60, 50, 0))),
        },
    ),
    Voice(
        "UPRIGHT", "bass", algorithm=5, feedback=2,
        note="Acoustic upright: 0.5 woody body that decays, finger thump from a fast 1× modulator.",
        ops={
            1: Op(ratio=0.5, level=99, eg=decay(42, 28, l2=74, r4=64), vel=2),
            2: Op(ratio=0.5, level=68, eg=decay(56, 36, l2=50, r4=64), vel=4),
            3: Op(ratio=1, level=70, eg=decay(50, 34, l2=56, r4=64)),
            4: Op(ratio=1, level=70, eg=blip(72), vel=5),
        },
    ),
    Voice(
        "KICK DRUM", "percussion", algorithm=1,
        note="Electronic kick: 0.5 sine whose pitch dives two octaves in a few tens of ms.",
        pitch_eg=PitchEG(rates=(99, 62, 99, 99), levels=(84, 50, 50, 50)),
        ops={
            1: Op(ratio=0.5, level=99, eg=decay(50, 40, l2=60, r4=60), vel=3),
            2: Op(ratio=0.5, level=70, eg=blip(80), vel=4),
        },
    ),
    Voice(
        "SNARE", "percussion", algorithm=5, feedback=7,
        note="Snare: a short pitched shell thump plus a burst of noise from a self-fed 11× modulator.",
        pitch_eg=PitchEG(rates=(99, 70, 99, 99), levels=(60, 50, 50, 50)),
        ops={
            1: Op(ratio=1, level=96, eg=decay(66, 50, l2=40, r4=60), vel=3),
            3: Op(fixed_hz=2400, level=99, eg=decay(60, 45, l2=60, r4=60), vel=3),
            4: Op(fixed_hz=3400, level=99, eg=decay(60, 45, l2=70, r4=60)),
            5: Op(fixed_hz=180, level=90, eg=decay(62, 48, l2=40, r4=60), vel=2),
            6: Op(ratio=11, level=90, eg=GATE),
        },
    ),
    Voice(
        "CLOSED HAT", "percussion", algorithm=5, feedback=7,
        note="Hi-hat: fixed-frequency metal (inharmonic 5.6/8.3 kHz pairs), ticks shut fast.",
        ops={
            1: Op(fixed_hz=5600, level=99, eg=decay(75, 60, l2=40, r4=75), vel=3),
            2: Op(fixed_hz=7900, level=99, eg=GATE),
            3: Op(fixed_hz=8300, level=92, eg=decay(78, 62, l2=40, r4=75), vel=3),
            4: Op(fixed_hz=3100, level=99, eg=GATE),
            6: Op(fixed_hz=4400, level=99, eg=GATE),
        },
    ),
    Voice(
        "COWBELL", "percussion", algorithm=32,
        note="Cowbell: two fixed square-ish tones (545 and 810 Hz) with a short clanky decay.",
        ops={
            1: Op(fixed_hz=545, level=99, eg=decay(62, 44, l2=50, r4=60), vel=3),
            2: Op(fixed_hz=810, level=94, eg=decay(64, 46, l2=50, r4=60), vel=3),
            6: Op(fixed_hz=1620, level=70, eg=blip(70)),
        },
    ),
    Voice(
        "WOODBLOCK", "percussion", algorithm=5,
        note="Wood block: a hollow fixed 900 Hz knock with a 2.3× click, gone in 100 ms.",
        ops={
            1: Op(fixed_hz=900, level=99, eg=decay(74, 60, l2=40, r4=70), vel=3),
            2: Op(fixed_hz=2070, level=70, eg=blip(78)),
            3: Op(fixed_hz=1800, level=70, eg=decay(80, 64, l2=30, r4=70)),
        },
    ),
    Voice(
        "CONGA", "percussion", algorithm=5,
        note="Open conga: a skin tone that bends down slightly, a slap transient from a 1.5× ping.",
        pitch_eg=PitchEG(rates=(99, 66, 99, 99), levels=(56, 50, 50, 50)),
        ops={
            1: Op(ratio=1, level=99, eg=decay(58, 42, l2=56, r4=60), vel=3),
            2: Op(ratio=1.5, level=72, eg=blip(74), vel=5),
            3: Op(ratio=2.3, level=66, eg=decay(70, 50, l2=30, r4=60)),
        },
    ),
    Voice(
        "TIMPANI", "percussion", algorithm=5, feedback=3,
        note="Kettle drum an octave down: 0.5 fundamental, 0.75 membrane mode, soft mallet roll-off.",
        pitch_eg=PitchEG(rates=(99, 60, 99, 99), levels=(52, 50, 50, 50)),
        ops={
            1: Op(ratio=0.5, level=99, eg=decay(40, 26, l2=70, r4=40), vel=3),
            2: Op(ratio=1, level=60, eg=blip(60), vel=5),
            3: Op(ratio=0.75, level=80, eg=decay(48, 30, l2=60, r4=40), vel=3),
            4: Op(ratio=3.3, level=64, eg=blip(70)),
        },
    ),
    Voice(
        "LASER ZAP", "fx", algorithm=1, feedback=4,
        note="Sci-fi zap: the pitch EG falls from four octaves up to the note in a blink.",
        pitch_eg=PitchEG(rates=(99, 45, 99, 99), levels=(99, 50, 50, 50)),
        ops={
            1: Op(ratio=1, level=99, eg=decay(45, 36, l2=70, r4=60)),
            2: Op(ratio=1, level=78, eg=decay(50, 40, l2=60, r4=60)),
        },
    ),
    Voice(
        "RISER", "fx", algorithm=5, feedback=6,
        note="Tension riser: the pitch EG climbs an octave over the held note while noise swells.",
        pitch_eg=PitchEG(rates=(30, 99, 99, 40), levels=(62, 62, 62, 50)),
        ops={
            1: Op(ratio=1, level=98, eg=SWELL),
            2: Op(ratio=2, level=66, eg=SWELL),
            3: Op(ratio=1, level=80, eg=SWELL_SLOW),
            4: Op(ratio=9.1, level=84, eg=SWELL_SLOW),
        },
    ),
    Voice(
        "SIREN", "fx", algorithm=1,
        note="Two-tone alarm: a square LFO throws the pitch up and down a fifth, fast.",
        lfo=LFO(speed=45, pmd=42, wave="SQUARE", pms=6),
        ops={
            1: Op(ratio=1, level=99, eg=GATE),
            2: Op(ratio=1, level=70, eg=GATE),
        },
    ),
    Voice(
        "BUBBLES", "fx", algorithm=5,
        note="Underwater blips: a sample-and-hold LFO jumps the pitch; each note pops and fades.",
        lfo=LFO(speed=70, pmd=30, wave="SAMPLE&HOLD", pms=7),
        ops={
            1: Op(ratio=1, level=99, eg=decay(40, 30, l2=80, r4=50)),
            2: Op(ratio=2, level=62, eg=decay(50, 35, l2=50, r4=50)),
        },
    ),
)


# --------------------------------------------------------------------------------------------
# Listening by numbers: render a recipe with dexed-py and measure pitch and envelope
# --------------------------------------------------------------------------------------------

SAMPLE_RATE = 22050
HOLD_S = 1.5      # key down
TOTAL_S = 2.0     # key down + release tail
FRAME_S = 0.02    # RMS frame for envelope numbers


def render(raw: np.ndarray, name: str = "", note: int = 60, velocity: int = 85,
           hold: float = HOLD_S, total: float = TOTAL_S) -> np.ndarray:
    """Render one note with dexed-py; float32 ``(samples,)`` at :data:`SAMPLE_RATE`, dexed-py scale (~8× plug-in)."""
    import dexed

    synth = dexed._RawDexedSynth(float(SAMPLE_RATE), 0)
    data = bytes(raw.astype(np.uint8)) + check_name(name).encode("ascii") + bytes([0x3F])
    synth.load_sysex(data)
    return np.asarray(synth.render(note, velocity, hold, total), dtype=np.float32)


def operator_ratio(op: Op) -> float:
    """The ratio the DX7 will really play for ``op`` (after coarse/fine rounding); NaN for fixed mode."""
    if op.fixed_hz is not None:
        return float("nan")
    coarse, fine = ratio_to_coarse_fine(op.ratio)
    return (0.5 if coarse == 0 else coarse) * (1 + fine / 100)


def expected_f0_ratio(voice: Voice) -> float | None:
    """Fundamental (× key frequency) implied by the sounding operators' ratios, ``None`` if inharmonic.

    FM of ratios ``c`` and ``m`` yields partials at ``|c ± k·m|``, so the common period is the
    greatest common divisor of all sounding ratios (to 0.01).
    """
    sounding = [op for op in voice.ops.values() if op.level > 0]
    if any(op.fixed_hz is not None for op in sounding):
        return None
    cents = [round(operator_ratio(op) * 100) for op in sounding]
    g = math.gcd(*cents) / 100
    return g if g >= 0.25 else None


def envelope_db(audio: np.ndarray) -> np.ndarray:
    """RMS per :data:`FRAME_S` frame in dB re the loudest frame, shape ``(frames,)``."""
    n = int(FRAME_S * SAMPLE_RATE)
    frames = audio[: len(audio) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-12
    return 20 * np.log10(rms / rms.max())


def acf_f0(audio: np.ndarray, fmin: float = 50.0, fmax: float = 2000.0) -> float:
    """Fundamental in Hz by normalized autocorrelation over the first 0.5 s after 50 ms (0 if none)."""
    x = audio[int(0.05 * SAMPLE_RATE): int(0.55 * SAMPLE_RATE)].astype(np.float64)
    x = x - x.mean()
    spec = np.fft.rfft(x, 2 * len(x))
    acf = np.fft.irfft(np.abs(spec) ** 2)[: len(x)]
    if acf[0] <= 0:
        return 0.0
    acf /= acf[0]
    lo, hi = int(SAMPLE_RATE / fmax), int(SAMPLE_RATE / fmin)
    seg = acf[lo:hi]
    # the first lag whose peak reaches 90 % of the best one: the period, not a multiple of it
    best = seg.max()
    peaks = [i for i in range(1, len(seg) - 1) if seg[i] >= seg[i - 1] and seg[i] >= seg[i + 1]]
    for i in peaks:
        if seg[i] >= 0.9 * best:
            # parabolic interpolation for a sub-sample period
            a, b, c = seg[i - 1], seg[i], seg[i + 1]
            shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
            return SAMPLE_RATE / (lo + i + shift)
    return 0.0


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` hears in one render at note 60."""

    peak: float          # max |sample| / 8 (plug-in scale)
    f0: float            # Hz by autocorrelation (0 if none)
    expected_f0: float | None  # Hz from the ratios, None if inharmonic
    attack_s: float      # time to reach -3 dB of the loudest frame
    held_db: float       # median level over the last 0.3 s of the hold re the loudest frame
    release_db: float    # level 0.4 s after key-off re the loudest frame


def measure(voice: Voice, note: int = 60, velocity: int = 85) -> Measurement:
    """Render ``voice`` at ``(note, velocity)`` and measure its pitch and envelope."""
    audio = render(voice_to_raw(voice), voice.name, note, velocity)
    env = envelope_db(audio)
    ratio = expected_f0_ratio(voice)
    key_hz = 440.0 * 2 ** ((note - 69) / 12)
    return Measurement(
        peak=float(np.abs(audio).max() / 8),
        f0=acf_f0(audio),
        expected_f0=None if ratio is None else key_hz * ratio,
        attack_s=float(np.argmax(env > -3.0) * FRAME_S),
        held_db=float(np.median(env[int((HOLD_S - 0.3) / FRAME_S): int(HOLD_S / FRAME_S)])),
        release_db=float(env[int((HOLD_S + 0.4) / FRAME_S)]),
    )


def print_check(banks: Mapping[str, tuple[Voice, ...]]) -> None:
    """Render every voice at (60, 85) and print one line of numbers per voice."""
    print(f"{'file':18} {'name':10} {'category':10} {'peak':>6} {'f0 Hz':>7} {'want':>7} "
          f"{'att s':>6} {'held dB':>7} {'rel dB':>7}")
    for filename, voices in banks.items():
        for v in voices:
            m = measure(v)
            want = "inharm" if m.expected_f0 is None else f"{m.expected_f0:7.1f}"
            print(f"{filename:18} {v.name:10} {v.category:10} {m.peak:6.3f} {m.f0:7.1f} {want:>7} "
                  f"{m.attack_s:6.2f} {m.held_db:7.1f} {m.release_db:7.1f}")


# --------------------------------------------------------------------------------------------
# Writing the banks
# --------------------------------------------------------------------------------------------

#: Output file name → its 32 voices, in bank order.
BANKS: dict[str, tuple[Voice, ...]] = {
    "toolkit_bank_a.syx": BANK_A,
    "toolkit_bank_b.syx": BANK_B,
}


def bank_bytes(voices: tuple[Voice, ...]) -> bytes:
    """32 recipes → one 4,104-byte DX7 bank (``dexed_data.sysex.encode_bank``)."""
    from dexed_data.sysex import encode_bank

    if len(voices) != 32:
        raise ValueError(f"a DX7 bank holds 32 voices, got {len(voices)}")
    names = [check_name(v.name) for v in voices]
    if len(set(names)) != len(names):
        raise ValueError(f"voice names repeat inside a bank: {sorted(names)}")
    raws = np.stack([voice_to_raw(v) for v in voices])
    return encode_bank(raws, names)


def main(out_dir: str | Path = DEFAULT_OUT, force: bool = False) -> list[Path]:
    """Write every bank of :data:`BANKS` into ``out_dir`` (created if needed); return the paths written.
    A file of the same name that holds other bytes is replaced only with ``force`` (FileExistsError);
    each file is written whole or not at all (a temporary file renamed into place)."""
    if str(out_dir) == "":
        raise FileNotFoundError(2, 'an empty --out ("") was given (an unset variable?); give a folder, . for this one',
                                "--out")
    out = Path(out_dir)
    banks = {out / filename: bank_bytes(voices) for filename, voices in BANKS.items()}
    other = [p for p, data in banks.items() if p.is_file() and p.read_bytes() != data]
    if other and not force:
        raise FileExistsError(17, "holds other bytes than this script writes (pass --force to replace it)", str(other[0]))
    out.mkdir(parents=True, exist_ok=True)
    for path, data in banks.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return list(banks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the .syx files (default: presets/)")
    parser.add_argument("--force", action="store_true", help="replace files of the same names that hold other bytes")
    parser.add_argument("--check", action="store_true",
                        help="also render every voice at (60, 85) and print pitch/envelope numbers")
    args = parser.parse_args()

    def run() -> None:
        for p in main(args.out, args.force):
            print(f"wrote {p} ({p.stat().st_size} bytes)")
        if args.check:
            print_check(BANKS)

    from _cli import run_main   # this folder: errors as one line

    run_main(run)
