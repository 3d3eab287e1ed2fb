"""Synthesis engines: raw DX7 voice values + notes → audio at the Dexed plug-in's output scale.

Two engines behind one small protocol (:class:`Engine`), built from a picklable
:class:`EngineSpec` by :func:`make_engine`:

* ``"dexed"`` (default): dexed-py 0.3.0 (Dexed's msfa core, no plug-in host) followed by the
  plug-in's output stage, ``dc_block(dexed_py / 8)``. It agrees with the real Dexed plug-in to
  ≤ 2e-7 (E.PIANO 1) … ≤ 9e-4 (KOTO, LFO) of full scale on the golden renders
  (``shared/reference/golden``), ~50 presets/s for six notes on one core.
* ``"dawdreamer"``: a real Dexed VST2/VST3 plug-in hosted by DawDreamer, parameters set by name.

Both render the raw values they are given: the paper's fixed TRANSPOSE=24 is the caller's job
(:func:`dexed_data.schema.apply_fixed`). Audio is float32 and never clipped.

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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import EngineError
from .schema import FIXED_PARAMS, N_OPERATORS, PARAM_BY_NAME, SOUND_BYTES, VOICE_MAX, VOICE_PARAMS

__all__ = [
    "EngineSpec", "Render", "Engine", "DexedEngine", "DawDreamerEngine", "make_engine",
    "validate_raw", "validate_notes", "dc_block", "PLUGIN_GAIN", "DEXED_REQUIRED_NAMES",
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
    """

    name: str = "dexed"
    sample_rate: int = 22050
    plugin: str | None = None


@dataclass
class Render:
    """One preset rendered on K notes.

    Attributes:
        audio: ``(notes, samples)`` float32 at the plug-in's scale (full scale = 1.0), never clipped.
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


def dc_block(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Dexed's output DC blocker along the last axis: ``y[n] = x[n] − x[n−1] + (1 − 126/sr)·y[n−1]``.

    A ~20 Hz one-pole high-pass starting from rest; computed in float64, returned as float32.
    """
    from scipy.signal import lfilter  # lazily: importing scipy.signal takes ~1.4 s

    pole = 1.0 - 126.0 / sample_rate
    return lfilter([1.0, -1.0], [1.0, -pole], np.asarray(x, dtype=np.float64), axis=-1).astype(np.float32)


def n_samples(hold: float, release: float, sample_rate: int) -> int:
    """Samples rendered per note: ``int((hold + release) · sample_rate)`` (as dexed-py does)."""
    return int((hold + release) * sample_rate)


class DexedEngine:
    """dexed-py with the Dexed plug-in's output stage (``dc_block(dexed_py / 8)``).

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
        if not 8000 <= spec.sample_rate <= 192000:
            raise EngineError(f"sample_rate must be 8000–192000 Hz, got {spec.sample_rate}")
        import dexed

        self.spec = spec
        self.version = f"dexed-py {getattr(dexed, '__version__', '?')} + dc_block(x/8)"
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
        return Render(dc_block(audio * PLUGIN_GAIN, sr), ops, int(raw[PARAM_BY_NAME["ALGORITHM"].voice_offset]))


#: Output-stage values the paper fixes, set by name when the plug-in has them (MonoMode: newer builds).
_PLUGIN_FIXED: dict[str, float] = {
    **{k: v for k, v in FIXED_PARAMS.items() if PARAM_BY_NAME[k].voice_offset is None},
    "MonoMode": 0.0,
}


class DawDreamerEngine:
    """A Dexed VST2/VST3 plug-in hosted by DawDreamer, every parameter set by name.

    Per preset: a fresh plug-in instance; the fixed output stage (Cutoff 1, Resonance 0, Output 1,
    MASTER TUNE ADJ 0.5, MonoMode 0 if the build has it, OP1–OP6 SWITCH on) and every voice
    parameter as ``raw / max`` are set before any note starts (MonoMode and TRANSPOSE silence
    sounding notes); one throw-away render (the first render after a load differs by 1 LSB);
    then each note in order; the left channel is kept. The plug-in's own output stage already
    is the reference scale, so nothing is rescaled. ``operators`` are not available (``None``).

    Args:
        spec: ``EngineSpec(name="dawdreamer", plugin=PATH)``.
        param_map: schema parameter name → plug-in parameter name; default: the schema's names
            (Dexed's own). Only mapped parameters are set: a stand-in synth can be driven by
            mapping a few schema names onto its parameters (tests do).
        fixed: plug-in parameter name → normalized value set before the voice; default: the
            paper's fixed output stage. Names the plug-in lacks are skipped.
        required: plug-in parameter names that must exist (the "Dexed-like" check).
        block_size: DawDreamer's processing block, samples.

    Raises:
        EngineError: the plug-in path does not exist, DawDreamer cannot load it, or it lacks
            the required / mapped parameter names (the message lists some of its names).
    """

    def __init__(self, spec: EngineSpec, *, param_map: Mapping[str, str] | None = None,
                 fixed: Mapping[str, float] | None = None,
                 required: Sequence[str] = DEXED_REQUIRED_NAMES, block_size: int = 512) -> None:
        if spec.name != "dawdreamer":
            raise EngineError(f"DawDreamerEngine needs EngineSpec(name='dawdreamer'), got {spec.name!r}")
        if not spec.plugin:
            raise EngineError("the dawdreamer engine needs a plug-in: EngineSpec(name='dawdreamer', "
                              "plugin='/path/to/Dexed.vst3') (--plugin PATH on the command line)")
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
        _, proc = self._load()
        self._index = self._check(proc)
        self.version = (f"dawdreamer {getattr(dawdreamer, '__version__', '?')} + "
                        f"{os.path.basename(os.path.normpath(spec.plugin))} ({os.path.getsize(spec.plugin)} bytes)")

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "param_map": self._param_map, "fixed": self._fixed,
                "required": self._required, "block_size": self._block}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["spec"], param_map=state["param_map"], fixed=state["fixed"],
                      required=state["required"], block_size=state["block_size"])

    def _load(self):
        """A fresh RenderEngine and plug-in instance (the paper's fresh state per preset)."""
        self._uses += 1
        engine = self._dd.RenderEngine(float(self.spec.sample_rate), self._block)
        try:
            proc = engine.make_plugin_processor(f"synth{self._uses}", self.spec.plugin)
        except Exception as exc:  # DawDreamer raises RuntimeError/ValueError depending on the failure
            raise EngineError(f"DawDreamer could not load the plug-in {self.spec.plugin!r}: {exc} "
                              "(is it a VST2 .so or VST3 bundle built for this machine?)") from exc
        if proc.get_num_output_channels() < 1:
            raise EngineError(f"plug-in {self.spec.plugin!r} has no audio output")
        return engine, proc

    def _check(self, proc) -> dict[str, int]:
        """Map plug-in parameter names to indices; refuse a plug-in that is not Dexed-like."""
        index: dict[str, int] = {}
        for d in proc.get_parameters_description():
            index.setdefault(d["name"], d["index"])
        wanted = list(self._required) + [n for n in self._param_map.values() if n not in self._required]
        missing = [n for n in wanted if n not in index]
        if missing:
            names = list(index)
            shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
            raise EngineError(
                f"plug-in {self.spec.plugin!r} is not Dexed-like: it lacks the parameter(s) "
                f"{', '.join(repr(n) for n in missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                f"its {len(names)} parameters are {shown} (use a Dexed VST2/VST3 build, or pass a "
                "param_map that targets its names)")
        return index

    def render(self, raw: np.ndarray, notes: Notes, hold: float = 3.0, release: float = 1.0, *,
               operators: bool = False) -> Render:
        """Render ``raw`` (145,) on each note in a fresh plug-in instance; ``operators`` is ignored (None)."""
        raw = validate_raw(raw)
        notes = validate_notes(notes, hold, release)
        engine, proc = self._load()
        for name, value in self._fixed.items():
            if name in self._index:  # e.g. MonoMode exists only in newer Dexed builds
                proc.set_parameter(self._index[name], float(value))
        for schema_name, plugin_name in self._param_map.items():
            p = PARAM_BY_NAME[schema_name]
            proc.set_parameter(self._index[plugin_name], float(raw[p.voice_offset]) / p.max)
        engine.load_graph([(proc, [])])
        engine.render(self._block / self.spec.sample_rate)  # throw-away render: settles the first block
        t = n_samples(hold, release, self.spec.sample_rate)
        audio = np.zeros((len(notes), t), np.float32)
        for i, (pitch, velocity) in enumerate(notes):
            proc.clear_midi()
            proc.add_midi_note(pitch, velocity, 0.0, hold)
            engine.render(hold + release)
            out = np.asarray(engine.get_audio(), dtype=np.float32)[0]
            audio[i, : min(t, out.size)] = out[:t]
        return Render(audio, None, int(raw[PARAM_BY_NAME["ALGORITHM"].voice_offset]))


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
