"""``preset-model interpolate``: a bank of voices on the straight latent path between two presets.

Each preset goes to the latent space through the inverse of the regression flow (flow head
only; see :meth:`preset_model.inference.Run.preset_to_latent`); the path is linear in that space
and each point is decoded by the forward flow. The endpoints decode back to the two presets
(up to float error, reported as ``endpoint_errors``).

Voices are referred to as ``FILE.syx:N`` with N counted from 1, as the DX7 and Dexed show them
(a single-voice file needs no ``:N``).

Example::

    >>> from preset_model.interpolate import interpolate, read_voice
    >>> a, b = read_voice("rom1a.syx:1"), read_voice("rom1a.syx:11")      # doctest: +SKIP
    >>> morph = interpolate("runs/paper", a, b, steps=8)                   # doctest: +SKIP
    >>> morph.raw.shape                                                    # doctest: +SKIP
    (8, 145)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dexed_data.schema import FIXED_TRANSPOSE, TRANSPOSE_OFFSET, apply_fixed, pad_name

from .errors import PresetModelError
from .inference import Run, load_run
from .metrics import parameter_errors


@dataclass(frozen=True)
class Voice:
    raw: np.ndarray   # (145,) uint8, TRANSPOSE set to the fixed value
    name: str
    source: str       # "FILE:N"
    transpose: int = FIXED_TRANSPOSE   # the file's own TRANSPOSE
    repairs: tuple[str, ...] = ()      # what reading it repaired (clamped values, a bad checksum…)


def read_voice(spec: str) -> Voice:
    """``"FILE.syx:N"`` (N from 1) or ``"FILE.syx"`` (a file with exactly one voice) → :class:`Voice`
    with the paper's fixed bytes applied (:func:`dexed_data.voice.load_voice` reads it)."""
    from dexed_data.errors import DexedDataError
    from dexed_data.voice import load_voice

    try:
        v = load_voice(spec)
    except DexedDataError as exc:
        raise PresetModelError(str(exc)) from None
    return Voice(apply_fixed(v.raw), v.name, v.source, int(v.raw[TRANSPOSE_OFFSET]), v.repairs)


@dataclass
class Morph:
    raw: np.ndarray              # (steps, 145) uint8
    names: list[str]
    t: np.ndarray                # (steps,) position on the path, 0 = A, 1 = B
    endpoint_errors: tuple[int, int]   # parameters of A / B not reproduced at the path's ends


def interpolate(run: str | Path | Run, a: Voice, b: Voice, steps: int = 8, data: str | Path | None = None) -> Morph:
    """``steps`` voices from ``a`` to ``b`` (both included) along the straight latent path."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= 32:
        raise PresetModelError(f"--steps must be a whole number between 2 and 32 (one DX7 bank), got {steps!r}")
    loaded = run if isinstance(run, Run) else load_run(run, data=data)
    z = loaded.preset_to_latent(np.stack([a.raw, b.raw]))
    t = np.linspace(0.0, 1.0, steps)
    tt = torch.from_numpy(t.astype(np.float32))[:, None]
    raw = loaded.latent_to_preset((1 - tt) * z[0] + tt * z[1])
    err_num, ok_cat = parameter_errors(np.stack([a.raw, b.raw]), raw[[0, -1]])
    missed = (err_num > 0).sum(1) + (~ok_cat).sum(1)
    names = [pad_name(f"MORPH {i + 1:02d}") for i in range(steps)]
    return Morph(raw, names, t, (int(missed[0]), int(missed[1])))
