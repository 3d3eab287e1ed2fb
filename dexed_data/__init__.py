"""dexed_data: DX7 SysEx collections → clean, deduplicated catalogue → rendered HDF5 dataset.

The Python API (imported on first use, so ``import dexed_data`` stays light):

* :func:`open_dataset` (:mod:`dexed_data.access`): a ``dataset.h5``'s presets, parameters by
  name, spectrograms, audio (re-rendered exactly when not stored) and a torch ``Dataset``;
* ``render(voice, notes=...)`` (:func:`dexed_data.voice.render_voice`): one voice rendered as
  ``dexed-data render`` renders it; :func:`load_voice` reads ``"FILE.syx:N"``;
* :func:`preset_table`: the presets of a catalogue or dataset with their sources.

Example::

    >>> import dexed_data
    >>> audio = dexed_data.render("presets/toolkit_bank_a.syx:1", notes=[(60, 85)], hold=0.5, release=0.5)
    >>> audio.shape
    (1, 22050)
"""

__version__ = "0.1.0"

__all__ = ["__version__", "open_dataset", "render", "load_voice", "preset_table"]

_LAZY = {"open_dataset": "access", "preset_table": "access", "load_voice": "voice"}


def __getattr__(name: str):
    # PEP 562: the API is imported when first used (h5py, torch and the engine load on demand)
    import importlib

    if name == "render":   # the render-job module, callable as render(voice, notes=...)
        return importlib.import_module(".render", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
