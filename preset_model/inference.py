"""Using a trained run: load it, turn audio into presets, presets into latents and back.

A run is only usable together with the settings its training audio was made with (engine,
sample rate, notes, note length, mel spectrogram settings): they are read from the dataset the
run was trained on (the path stored in the checkpoint, or ``data=`` when it has moved).

Example::

    >>> from preset_model.inference import load_run
    >>> run = load_run("runs/paper")                                  # doctest: +SKIP
    >>> raw = run.infer_db(mel_db_batch)          # (B, K, mels, frames) dB → (B, 145) uint8  # doctest: +SKIP
    >>> z = run.preset_to_latent(raw)             # flow head only                       # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from dexed_data.features import MelConfig, mel_db

from .checkpoint import load_model
from .data import read_info
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
    """

    engine: str
    sample_rate: int
    notes: tuple[tuple[int, int], ...]
    hold: float
    release: float
    mel: MelConfig
    plugin: str | None = None

    @property
    def note_samples(self) -> int:
        """Samples per note, as the engines render them."""
        return int((self.hold + self.release) * self.sample_rate)

    @property
    def engine_spec(self):
        from dexed_data.engines import EngineSpec

        return EngineSpec(self.engine, int(self.sample_rate), self.plugin)


def read_render_settings(path: str | Path) -> RenderSettings:
    """The :class:`RenderSettings` stored in a ``dataset.h5``'s attributes."""
    info = read_info(path)  # checks the format
    with h5py.File(path, "r") as h5:
        a = h5.attrs
        mel = json.loads(a["mel_config"]) if "mel_config" in a else {}
        fields = {k: mel[k] for k in ("sample_rate", "n_fft", "hop", "n_mels", "floor_db") if k in mel}
        fields.setdefault("sample_rate", int(a["sample_rate"]))
        fields.setdefault("n_mels", info.n_mels)
        plugin = a.get("plugin")
        return RenderSettings(str(a["engine"]), int(a["sample_rate"]), info.notes, float(a["hold"]),
                              float(a["release"]), MelConfig(**fields), str(plugin) if plugin else None)


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
        checkpoint: the checkpoint dict (configs, split, bounds, ...).
        data: the dataset file the settings were read from.
        settings: how the training audio was made.
        note_index: indices into ``settings.notes`` of the model's input notes.
    """

    path: Path
    model: PresetModel
    checkpoint: dict
    data: Path
    settings: RenderSettings
    note_index: tuple[int, ...]

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
        if db.shape[1:] != (cfg.notes, cfg.n_mels, cfg.frames):
            raise PresetModelError(f"the model takes spectrograms of shape (B, {cfg.notes}, {cfg.n_mels}, "
                                   f"{cfg.frames}), got {db.shape}")
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


def load_run(run: str | Path, checkpoint: str = "best.pt", data: str | Path | None = None) -> Run:
    """Load ``run/checkpoint`` (a run folder, or a ``.pt`` file directly) and its render settings.

    Args:
        run: run folder written by ``preset-model fit``, or a checkpoint file.
        checkpoint: file name inside the folder (``best.pt`` or ``last.pt``).
        data: the dataset the run was trained on, if it is no longer where the checkpoint says.

    Raises:
        CheckpointError: missing/foreign checkpoint, or its dataset cannot be found.
    """
    run = Path(run)
    path = run if run.is_file() else run / checkpoint
    model, ckpt = load_model(path)
    data_path = Path(data) if data is not None else Path(ckpt["dataset"]["path"])
    if not data_path.is_file():
        raise CheckpointError(f"{path}: the dataset it was trained on ({data_path}) is not there; pass --data with "
                              f"that dataset (its render settings and test split are needed)")
    settings = read_render_settings(data_path)
    if data is not None and read_info(data_path).schema_hash != ckpt["schema_hash"]:
        raise CheckpointError(f"{data_path}: dataset schema differs from the checkpoint's {ckpt['schema_hash']}")
    note_index = tuple(int(i) for i in ckpt.get("note_index", range(model.cfg.notes)))
    saved_notes = [tuple(n) for n in ckpt.get("notes", settings.notes)]
    if list(settings.notes) != saved_notes:
        raise CheckpointError(f"{data_path}: rendered on notes {list(settings.notes)}, but the model was trained on "
                              f"{saved_notes}; pass the dataset the run was trained on")
    return Run(run if run.is_dir() else run.parent, model, ckpt, data_path, settings, note_index)
