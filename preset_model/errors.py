"""The exception tree of :mod:`preset_model`."""


class PresetModelError(Exception):
    """Root of every error raised on purpose by :mod:`preset_model`."""


class CheckpointError(PresetModelError):
    """A checkpoint is missing, malformed, or does not match the dataset (schema hash, encoding)."""


class DataError(PresetModelError):
    """A dataset cannot be used for training (missing arrays, no presets left after filtering, ...)."""
