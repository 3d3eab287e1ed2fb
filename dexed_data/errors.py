"""The exception tree of :mod:`dexed_data`.

Every error says what was wrong, where (file, byte offset, voice index) and what to do.
"""


class DexedDataError(Exception):
    """Root of every error raised on purpose by :mod:`dexed_data`."""


class SysexError(DexedDataError):
    """A SysEx message or file cannot be decoded or encoded."""


class CatalogueError(DexedDataError):
    """A preset catalogue (presets.h5) is missing, malformed or of another version/schema."""


class DatasetError(DexedDataError):
    """A rendered dataset (dataset.h5) is missing, malformed, incomplete or of another version/schema."""


class EngineError(DexedDataError):
    """A synthesis engine cannot be loaded or configured (bad plug-in path, not Dexed-like, ...)."""


class RenderError(DexedDataError):
    """A render job cannot start or continue (bad options, output belongs to another job, ...)."""


class OutputError(DexedDataError):
    """An output cannot be written: it exists (no ``--force``), is an input, or its folder or disk refuses it."""
