"""Using a trained run: load it, turn audio into presets, presets into latents and back.

A run is only usable together with the settings its training audio was made with (engine,
sample rate, notes, note length, mel spectrogram settings, scaling bounds). Checkpoints store
them (``"render"`` and ``"mel_bounds"``), so a run folder copied anywhere matches and
interpolates on its own. Older checkpoints without ``"render"`` read them from the dataset the
run was trained on. Only evaluation needs the dataset itself (its presets and stored
spectrograms): it is looked for at the absolute path the checkpoint recorded, then beside the
run folder under its file name, and the error says which ``--data`` to pass when both fail.

Example (``runs/paper`` is a run folder written by ``preset-model fit``)::

    >>> import preset_model
    >>> run = preset_model.load_run("runs/paper")
    >>> run.input_notes                                   # (pitch, velocity) of the model's inputs
    ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))
    >>> result = run.match("piano_60-85.wav")             # audio file(s) → inferred voice(s)
    >>> result.voices[0].raw.shape
    (145,)
    >>> morph = run.interpolate("presets/toolkit_bank_a.syx:1", "presets/toolkit_bank_b.syx:5", steps=4)
    >>> morph.raw.shape
    (4, 145)
    >>> params = run.decode(run.encoding.encode(morph.raw[0]))  # encoded (610,) → raw (145,)
    >>> bool((params == morph.raw[0]).all())
    True
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from dexed_data.features import MelConfig, mel_db

from .checkpoint import load_model
from .data import read_info
from .encoding import decode_targets
from .errors import CheckpointError, PresetModelError
from .model import PresetModel


@dataclass(frozen=True)
class RenderSettings:
    """How a dataset's audio was made: what re-rendering and new inputs must match.

    Attributes:
        engine: engine name (``"dexed"`` or ``"dawdreamer"``).
        sample_rate: Hz.
        notes: ``(midi_pitch, velocity)`` of every rendered note (the dataset's K notes).
        hold, release: seconds per note.
        mel: the spectrogram settings of the dataset's ``/mel``.
        plugin: plug-in path for ``"dawdreamer"``.
        engine_version: the dataset's ``engine_version``; for ``"dawdreamer"`` the plug-in build
            that re-renders must be that one (:attr:`~dexed_data.engines.EngineSpec.build`).
    """

    engine: str
    sample_rate: int
    notes: tuple[tuple[int, int], ...]
    hold: float
    release: float
    mel: MelConfig
    plugin: str | None = None
    engine_version: str | None = None

    @property
    def note_samples(self) -> int:
        """Samples per note, as the engines render them."""
        return int((self.hold + self.release) * self.sample_rate)

    @property
    def engine_spec(self):
        from dexed_data.engines import EngineSpec

        build = self.engine_version if self.engine == "dawdreamer" else None
        return EngineSpec(self.engine, int(self.sample_rate), self.plugin, build)


def settings_from_checkpoint(render: dict) -> RenderSettings:
    """The :class:`RenderSettings` a checkpoint's ``"render"`` dict holds (written by ``fit``).

    The dict has ``engine``, ``sample_rate``, ``notes`` (``[[pitch, velocity], ...]``), ``hold``,
    ``release`` (s), ``mel_config`` (the dataset's ``mel_config`` attribute) and optionally
    ``plugin``; ``engine_version`` and ``fixed_params`` are kept for the record.
    """
    try:
        mel = MelConfig.stored(render.get("mel_config"), int(render["sample_rate"]))
        return RenderSettings(str(render["engine"]), int(render["sample_rate"]),
                              tuple((int(p), int(v)) for p, v in render["notes"]), float(render["hold"]),
                              float(render["release"]), mel, render.get("plugin") or None,
                              render.get("engine_version") or None)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint's render settings are incomplete ({type(exc).__name__}: {exc}); "
                              "use a checkpoint written by `preset-model fit`") from None


def read_render_settings(path: str | Path) -> RenderSettings:
    """The :class:`RenderSettings` stored in a ``dataset.h5``'s attributes."""
    info = read_info(path)  # checks the format
    with h5py.File(path, "r") as h5:
        a = h5.attrs
        mel = MelConfig.stored(json.loads(a["mel_config"]) if "mel_config" in a else {}, int(a["sample_rate"]),
                               n_mels=info.n_mels)
        plugin, version = (v.decode() if isinstance(v, bytes) else v for v in (a.get("plugin"), a.get("engine_version")))
        return RenderSettings(str(a["engine"]), int(a["sample_rate"]), info.notes, float(a["hold"]),
                              float(a["release"]), mel, str(plugin) if plugin else None,
                              str(version) if version else None)


class ScoringEngine:
    """Renders inferred and searched voices to score them: the dataset's engine, except for a voice
    that engine refuses, a sample-and-hold LFO that can be heard on the plug-in path (Dexed's random
    generator cannot be reset by a host: :func:`dexed_data.engines.host_resettable`). That voice is
    rendered by the embedded engine, which is the plug-in's sound from a clean state
    (docs/FORMAT.md). No training voice is one, but a model or a search can infer one; one such
    voice stopped a whole ``evaluate``, and ``match`` wrote nothing (audit Z16).

    Attributes:
        embedded: how many renders the embedded engine made in place of the dataset's.
    """

    def __init__(self, spec) -> None:
        from dexed_data.engines import make_engine

        self.spec, self.engine, self._embedded, self.embedded = spec, make_engine(spec), None, 0

    def render(self, raw: np.ndarray, notes, hold: float, release: float):
        renders = getattr(self.engine, "renders", None)
        if renders is None or renders(raw):
            return self.engine.render(raw, notes, hold, release)
        from dexed_data.engines import EngineSpec, make_engine

        if self._embedded is None:
            self._embedded = make_engine(EngineSpec("dexed", self.spec.sample_rate))
        self.embedded += 1
        return self._embedded.render(raw, notes, hold, release)


def settings_differences(run: RenderSettings, data: RenderSettings, mel: bool = True) -> list[str]:
    """How a dataset's render settings differ from a run's, one phrase each (empty: none).

    The engine may differ (both engines' datasets mean the same sound); the notes, the note
    length, the sample rate and (``mel``) the spectrogram settings may not: the model would read
    spectrograms of another size or scale as its own, and re-renders would not be the data's.
    """
    out = []

    def differ(label: str, ours, theirs, unit: str = "") -> None:
        same = abs(ours - theirs) < 1e-9 if isinstance(ours, float) else ours == theirs
        if not same:
            out.append(f"{label} {theirs:g}{unit} where the run's dataset has {ours:g}{unit}")

    if list(run.notes) != list(data.notes):
        out.append(f"notes {', '.join(f'{p}:{v}' for p, v in data.notes)} where the run's dataset has "
                   f"{', '.join(f'{p}:{v}' for p, v in run.notes)}")
    differ("sample rate", run.sample_rate, data.sample_rate, " Hz")
    differ("hold", float(run.hold), float(data.hold), " s")
    differ("release", float(run.release), float(data.release), " s")
    if mel:
        differ("mel bands", run.mel.n_mels, data.mel.n_mels)
        differ("n_fft", run.mel.n_fft, data.mel.n_fft)
        differ("hop", run.mel.hop, data.mel.hop)
        differ("mel floor", float(run.mel.floor_db), float(data.mel.floor_db), " dB")
    return out


def scale_mel(db: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """dB spectrograms → model input: ``bounds`` map linearly to [-1, 1], clipped (as in training)."""
    lo, hi = bounds
    return np.clip((np.asarray(db, np.float32) - lo) * (2.0 / (hi - lo)) - 1.0, -1.0, 1.0)


@dataclass
class Run:
    """A trained model with everything needed to use it.

    Attributes:
        path: the run folder.
        model: the :class:`~preset_model.model.PresetModel`, eval mode, on CPU.
        checkpoint: the checkpoint dict (configs, split, bounds, render settings, ...).
        settings: how the training audio was made.
        note_index: indices into ``settings.notes`` of the model's input notes.
        dataset: the dataset the run was trained on, if it was found (``None`` otherwise);
            :attr:`data` raises a clear error instead of returning ``None``.
    """

    path: Path
    model: PresetModel
    checkpoint: dict
    settings: RenderSettings
    note_index: tuple[int, ...]
    dataset: Path | None = None
    dataset_error: str = ""

    @property
    def data(self) -> Path:
        """The dataset file the run was trained on (for evaluation).

        Raises:
            CheckpointError: it was not found; the message says which ``--data`` to pass.
        """
        if self.dataset is None:
            raise CheckpointError(self.dataset_error or f"{self.path}: the run's dataset was not found; pass --data")
        return self.dataset

    @property
    def encoding(self):
        return self.model.encoding

    @property
    def mel_bounds(self) -> tuple[float, float]:
        lo, hi = self.checkpoint["mel_bounds"]
        return float(lo), float(hi)

    @property
    def input_notes(self) -> tuple[tuple[int, int], ...]:
        """``(pitch, velocity)`` of the model's input notes, in input order."""
        return tuple(self.settings.notes[i] for i in self.note_index)

    def spectrogram(self, audio: np.ndarray) -> np.ndarray:
        """Audio ``(notes, samples)`` at the settings' rate and length → dB mel ``(notes, mels, frames)``."""
        return mel_db(audio, self.settings.mel)

    @torch.no_grad()
    def infer_db(self, db: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """dB spectrograms of the model's input notes ``(B, K, mels, frames)`` → raw presets ``(B, 145)`` uint8."""
        db = np.asarray(db, np.float32)
        cfg = self.model.cfg
        if db.ndim != 4 or db.shape[1:] != (cfg.notes, cfg.n_mels, cfg.frames):
            raise PresetModelError(f"the model takes spectrograms of shape (B, {cfg.notes}, {cfg.n_mels}, "
                                   f"{cfg.frames}), got {db.shape}")
        if not (isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise PresetModelError(f"batch_size={batch_size!r}: must be an integer ≥ 1")
        bad = ~np.isfinite(db).reshape(len(db), -1).all(axis=1)
        if bad.any():   # a failed preset's row (NaN in /mel) became an all-zero voice, silently (audit Y6)
            raise PresetModelError(f"spectrogram {int(np.argmax(bad))} (of {len(db)}) holds NaN or infinite values: "
                                   "a dataset row whose preset failed to render holds NaN in /mel; skip rows whose "
                                   "/status is not 0")
        out = [self.model.infer(torch.from_numpy(scale_mel(db[i:i + batch_size], self.mel_bounds)))
               for i in range(0, len(db), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 145), np.uint8)

    @torch.no_grad()
    def preset_to_latent(self, raw: np.ndarray) -> torch.Tensor:
        """Raw presets ``(B, 145)`` → latents ``z_K (B, D)`` through the inverse regression flow.

        One-hot groups enter the inverse flow as the one-hot vector itself, used as logits:
        any logits whose argmax is the right class decode to it, and the flow is exact, so
        :meth:`latent_to_preset` of the result gives the preset back (up to float error).
        """
        if self.model.cfg.head != "flow":
            raise PresetModelError(f"{self.path}: this model has the MLP regression head, which cannot map presets "
                                   f"back to the latent space; train one with --head flow (the default)")
        v = torch.from_numpy(self.encoding.encode(np.asarray(raw).reshape(-1, 145)))
        return self.model.preset_to_latent(v)

    @torch.no_grad()
    def latent_to_preset(self, z: torch.Tensor) -> np.ndarray:
        """Latents ``z_K (B, D)`` → raw presets ``(B, 145)`` uint8 (regression head, activation, decode)."""
        v = self.model.activation(self.model.regress(z.float()))
        return self.encoding.decode(v.numpy())

    def decode(self, targets) -> np.ndarray:
        """Encoded presets ``(..., D)`` → raw values ``(..., 145)`` uint8 (voice order, TRANSPOSE = 24).

        ``D`` is 144, 224 or 610 (Num, NumCat, NumCat++: the targets of ``preset_model.data``
        and the model's outputs); the encoding is recognised by the length, so targets of any
        encoding decode, not only this run's. Use :func:`dexed_data.schema.params_dict` (or
        ``dexed_data.open_dataset(...).params``) to name the values.
        """
        return decode_targets(targets)

    def match(self, audio, *, sample_rate: int | None = None, note: tuple[int, int] | None = None,
              each: bool = False, gain_db: float = 0.0):
        """Infer DX7 voices from recordings; see :mod:`preset_model.match` for the rules.

        Args:
            audio: an audio file, a list of files (grouped into sounds as ``preset-model match``
                groups them), or a 1-D float array (one recording at full scale = 1.0).
            sample_rate: Hz of an array ``audio`` (default: the run's rate).
            note: ``(pitch, velocity)`` an array recording was played on (default: 60:85); one of
                :attr:`input_notes` for a several-note model, any note for a 1-note model (it is
                pitch-shifted to the model's note).
            each, gain_db: as the command's ``--each`` and ``--gain-db``.

        Returns:
            :class:`~preset_model.match.MatchResult`: one voice per sound, with its raw values,
            name, re-render and per-file scores.
        """
        import tempfile

        from .match import match_files

        if isinstance(audio, (str, Path)):
            return match_files(self, [audio], each=each, gain_db=gain_db)
        if isinstance(audio, (list, tuple)) and all(isinstance(a, (str, Path)) for a in audio):
            return match_files(self, list(audio), each=each, gain_db=gain_db)
        import soundfile as sf

        if isinstance(audio, (list, tuple)):
            raise PresetModelError("audio: give a file, a list of files, or one 1-D float array, not a list "
                                   "mixing them")
        given = np.asarray(audio)
        if given.dtype.kind != "f":
            raise PresetModelError(f"audio arrays are float samples at full scale 1.0, got {given.dtype}; convert "
                                   "integer PCM first (int16: x / 32768)")
        x = given.astype(np.float32)
        if x.ndim == 2 and 2 in x.shape and min(x.shape) == 2:
            raise PresetModelError(f"audio array of shape {x.shape} looks like stereo: mix it to mono first "
                                   f"(x.mean(axis={x.shape.index(2)}))")
        if x.ndim != 1:
            raise PresetModelError(f"audio arrays must be 1-D (samples,), got shape {x.shape}; pass files for "
                                   "several notes")
        if x.size == 0:
            raise PresetModelError("audio array: empty (0 samples)")
        if not np.isfinite(x).all():
            raise PresetModelError(f"audio array: holds NaN or infinite samples (the first at sample "
                                   f"{int(np.flatnonzero(~np.isfinite(x))[0])})")

        def whole(v) -> bool:
            return isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, bool) \
                and np.isfinite(v) and float(v) == int(v)

        from .match import MIN_SAMPLE_RATE

        if sample_rate is not None and not (whole(sample_rate) and MIN_SAMPLE_RATE <= sample_rate <= 768000):
            raise PresetModelError(f"sample_rate {sample_rate!r}: give the recording's rate in Hz, a whole number "
                                   f"of {MIN_SAMPLE_RATE}–768000 (or leave it out for the run's rate)")
        if note is not None:
            pair = list(np.asarray(note, dtype=object).reshape(-1)) if np.ndim(note) == 1 else None
            if (pair is None or len(pair) != 2 or not all(whole(v) for v in pair)
                    or not (0 <= pair[0] <= 127 and 1 <= pair[1] <= 127)):
                raise PresetModelError(f"note {note!r}: give (pitch 0–127, velocity 1–127), whole numbers")
            note = (int(pair[0]), int(pair[1]))
        pitch, velocity = note or (60, 85)
        if len(self.input_notes) > 1 and (int(pitch), int(velocity)) not in self.input_notes:
            raise PresetModelError(f"note {pitch}:{velocity} is not one of this model's input notes "
                                   f"({', '.join(f'{p}:{v}' for p, v in self.input_notes)}); record one of them")
        from dataclasses import replace

        from .match import AudioInputError

        shown = f"audio array ({int(pitch)}:{int(velocity)})"
        with tempfile.TemporaryDirectory() as tmp:   # the file path is the one the command takes
            path = Path(tmp) / f"AUDIO_{int(pitch)}-{int(velocity)}.wav"
            sf.write(path, x, int(sample_rate or self.settings.sample_rate), subtype="FLOAT")
            try:
                result = match_files(self, [path], each=True, gain_db=gain_db)
            except AudioInputError as exc:   # said of the array, not of a temporary file that is gone
                text = str(exc).replace(str(path), shown).replace("--gain-db auto", "gain_db='auto'")
                text = text.replace("--gain-db ", "gain_db=").replace("--gain-db", "gain_db").replace(
                    "cut the file", "cut the array")
                raise AudioInputError(text.replace("re-export the recording", "check sample_rate=")) from None
        for v in result.voices:   # the temporary file is gone: name the array instead
            v.files = [shown if f == str(path) else f for f in v.files]
            v.scores = [replace(sc, file=shown) if sc.file == str(path) else sc for sc in v.scores]
        return result

    def interpolate(self, a, b, steps: int = 8):
        """``steps`` voices on the straight latent path from ``a`` to ``b`` (flow head only).

        ``a``, ``b``: ``"FILE.syx:N"`` (N from 1), raw values ``(145,)``, or
        :class:`~preset_model.interpolate.Voice`. Returns :class:`~preset_model.interpolate.Morph`.
        """
        from .interpolate import Voice, interpolate, read_voice
        from dexed_data.errors import DexedDataError
        from dexed_data.schema import TRANSPOSE_OFFSET, apply_fixed, pad_name
        from dexed_data.voice import raw_values

        def voice(v, label):
            if isinstance(v, Voice):
                return v
            if isinstance(v, (str, Path)):
                return read_voice(str(v))
            try:          # raw values, or anything with .raw (a dataset preset, dexed_data.load_voice's)
                raw = raw_values(v)
            except DexedDataError as exc:
                raise PresetModelError(f"voice {label}: {exc}") from None
            name = getattr(v, "name", None)
            return Voice(apply_fixed(raw), pad_name(name if isinstance(name, str) else label),
                         getattr(v, "source", "") or label, int(raw[TRANSPOSE_OFFSET]))

        return interpolate(self, voice(a, "A"), voice(b, "B"), steps)


def find_dataset(ckpt: dict, run_dir: Path, data: str | Path | None = None) -> tuple[Path | None, str]:
    """Where the dataset a checkpoint was trained on is now: ``(path, "")`` or ``(None, why)``.

    Looked for, in order: ``data`` if given (it must exist); the path the checkpoint recorded
    (absolute since checkpoints record it so; an older relative one is tried from the current
    folder); a file of the recorded name beside the run folder or inside it. ``why`` names the
    places tried and the ``--data`` to pass.
    """
    if data is not None:
        path = Path(data)
        if path.is_file():
            return path, ""
        return None, (f"{path} (--data) is a folder; give the dataset file made by `dexed-data render`" if path.is_dir()
                      else f"{path} (--data): not a regular file (a device or pipe); give a dataset file"
                      if path.exists() else f"{path}: no such dataset file (--data)")
    record = ckpt.get("dataset") or {}
    recorded = Path(str(record.get("path", "")))
    name = record.get("name") or recorded.name
    tried = [recorded] if str(recorded) not in ("", ".") else []
    if name:
        tried += [run_dir.parent / name, run_dir / name]
    for path in tried:
        if path.is_file():
            return path, ""
    what = f"the dataset `{name}`" if name else "its dataset"
    details = ", ".join(f"{k} {record[k]}" for k in ("n_presets", "schema_hash") if k in record)
    return None, (f"{run_dir}: {what}{f' ({details})' if details else ''} that the run was trained on is not at "
                  + " nor ".join(str(p) for p in tried)
                  + f"; pass it with --data PATH/{name or 'dataset.h5'} (in Python: data=...)")


def _dataset_mismatch(path: Path, ckpt: dict, settings: RenderSettings) -> str:
    """Why ``path`` is not the dataset the checkpoint was trained on, or ``""``."""
    try:
        info = read_info(path)
    except PresetModelError as exc:   # not a dataset at all (another file of that name)
        return str(exc)
    if info.schema_hash != ckpt["schema_hash"]:
        return (f"{path}: dataset schema {info.schema_hash} differs from the checkpoint's {ckpt['schema_hash']}; "
                f"pass the dataset the run was trained on")
    if list(info.notes) != list(settings.notes):
        return _notes_differ(path, info.notes, settings.notes)
    diffs = settings_differences(settings, read_render_settings(path), mel="mel_config" in ckpt.get("render", {}))
    if diffs:
        return (f"{path}: rendered with other settings than the run's dataset ({'; '.join(diffs)}); pass the "
                f"dataset the run was trained on, or one rendered with the same settings")
    return ""


def _notes_differ(path, notes, run_notes) -> str:
    """A dataset rendered on other notes than the run's dataset. The model may read only some of
    them, but evaluation and the search re-render and score every note of the run's dataset (audit
    Z16: "the model was trained on" all six notes was said of a model that reads one)."""
    shown = lambda ns: ", ".join(f"{p}:{v}" for p, v in ns)  # noqa: E731
    return (f"{path}: rendered on notes {shown(notes)}, but the run's dataset on {shown(run_notes)} (the notes "
            "its presets are re-rendered and scored on, whichever of them the model reads); pass the dataset the "
            "run was trained on, or one rendered on the same notes")


def load_run(run: str | Path, checkpoint: str = "best.pt", data: str | Path | None = None) -> Run:
    """Load ``run/checkpoint`` (a run folder, or a ``.pt`` file directly) and its render settings.

    Matching and interpolation need only the run folder. The dataset (for evaluation, and for
    the render settings of checkpoints older than the ``"render"`` record) is found as
    :func:`find_dataset` says; :attr:`Run.data` raises with the ``--data`` to pass when it is
    not found.

    Args:
        run: run folder written by ``preset-model fit``, or a checkpoint file.
        checkpoint: file name inside the folder (``best.pt`` or ``last.pt``).
        data: the dataset the run was trained on, if it is no longer where the checkpoint says.

    Raises:
        CheckpointError: missing/foreign checkpoint; an older checkpoint whose dataset cannot
            be found; a dataset of another schema or other notes.
    """
    if run is None:
        raise CheckpointError("give a run folder written by `preset-model fit` (or its best.pt), not None")
    if not isinstance(run, (str, os.PathLike)):
        raise CheckpointError(f"run {run!r}: give the path of a run folder written by `preset-model fit` (or its best.pt)")
    if not isinstance(checkpoint, str) or not checkpoint:
        raise CheckpointError(f"checkpoint {checkpoint!r}: give best.pt or last.pt")
    run = Path(run)
    path = run if run.is_file() or (run.is_symlink() and not run.is_dir()) else run / checkpoint   # a link to nothing: said
    model, ckpt = load_model(path)
    run_dir = run if run.is_dir() else run.parent
    data_path, why = find_dataset(ckpt, run_dir, data)
    if data is not None and data_path is None:
        raise CheckpointError(why)
    if "render" in ckpt:
        settings = settings_from_checkpoint(ckpt["render"])
    elif data_path is None:
        raise CheckpointError(f"{path} records no render settings (a checkpoint of an older version), so it needs "
                              f"its dataset: {why}")
    else:
        settings = read_render_settings(data_path)
    if data_path is not None:
        problem = _dataset_mismatch(data_path, ckpt, settings)
        if problem and (data is not None or "render" not in ckpt):
            raise CheckpointError(problem)
        if problem:   # a file of the same name that is not the run's dataset: inference does not need it
            data_path, why = None, problem
    note_index = tuple(int(i) for i in ckpt.get("note_index", range(model.cfg.notes)))
    saved_notes = [tuple(n) for n in ckpt.get("notes", settings.notes)]
    if list(settings.notes) != saved_notes:
        raise CheckpointError(_notes_differ(data_path, settings.notes, saved_notes))
    return Run(run_dir, model, ckpt, settings, note_index, data_path, why)
