"""preset_model: the DAFx 2021 spectrogram VAE + latent flow + preset regression, on dexed_data datasets.

The Python API (imported on first use):

* :func:`load_run` (:mod:`preset_model.inference`): a trained run folder →
  :class:`~preset_model.inference.Run` with ``.match(audio)``, ``.interpolate(a, b)`` and
  ``.decode(targets)``; it needs only the run folder;
* :func:`decode_targets`: encoded presets (144/224/610 values, the targets of
  :mod:`preset_model.data`) → raw DX7 values.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_run", "decode_targets"]

_LAZY = {"load_run": "inference", "decode_targets": "encoding"}


def __getattr__(name: str):
    # PEP 562: torch and the model load when the API is first used
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
