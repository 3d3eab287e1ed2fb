"""A real, tiny rendered dataset and a fitted tiny run, built once per test session.

The bundled banks (``presets/toolkit_bank_*.syx``, 64 voices) rendered with dexed-py on the six
paper notes, 0.5 s + 0.25 s each; a ``tiny`` model trained for one step per epoch. Used by
test_evaluate, test_match and test_interpolate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NOTES = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))
HOLD, RELEASE = 0.5, 0.25
_BUILT: dict = {}


@dataclass(frozen=True)
class Fitted:
    """Paths of the session's dataset and runs."""

    data: Path
    flow6: Path     # 6 notes, numcat++, flow head
    mlp1: Path      # 1 note, num, MLP head
    bank: Path      # the bundled bank the presets came from


def build(base: Path) -> Fitted:
    """Catalogue → dataset → two fitted runs under ``base`` (cached for the session)."""
    if base in _BUILT:
        return _BUILT[base]
    from dexed_data.catalogue import write_catalogue
    from dexed_data.render import RenderConfig, render_dataset
    from dexed_data.sysex import decode_file
    from preset_model.model import model_config
    from preset_model.train import TrainConfig, fit

    voices = [v for f in sorted((REPO / "presets").glob("toolkit_bank_*.syx")) for v in decode_file(f).voices]
    base.mkdir(parents=True, exist_ok=True)
    cat = base / "presets.h5"
    write_catalogue(cat, np.stack([v.raw for v in voices]), [v.name for v in voices])
    data = base / "dataset.h5"
    render_dataset(cat, data, RenderConfig(notes=NOTES, hold=HOLD, release=RELEASE), jobs=1, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=8, workers=0, device="cpu", max_steps=2)
    flow6, mlp1 = base / "flow6", base / "mlp1"
    fit(data, flow6, model_config("tiny", encoding="numcat++", head="flow", notes=6), cfg, progress=False)
    fit(data, mlp1, model_config("tiny", encoding="num", head="mlp", notes=1), cfg, progress=False)
    _BUILT[base] = Fitted(data, flow6, mlp1, REPO / "presets" / "toolkit_bank_a.syx")
    return _BUILT[base]


def counted(real, interrupt_at: int | None = None):
    """``real`` wrapped to count its calls (the list returned with it) and, at call ``interrupt_at``,
    to raise ``KeyboardInterrupt`` instead, as Ctrl-C in the middle of a long job would."""
    calls: list[int] = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapped, calls
