"""Reading a rendered dataset from Python: presets, parameters, spectrograms, audio, a torch Dataset.

:func:`open_dataset` opens a ``dataset.h5`` with :class:`~dexed_data.dataset.DatasetReader`
(which checks the format version, the parameter schema and completeness) and adds what a
researcher's own code wants: the presets table with provenance, parameters by name, audio
re-rendered exactly when the file stores none, and a PyTorch ``Dataset`` that needs nothing
from ``preset_model``. :func:`preset_table` lists a catalogue's or a dataset's presets without
loading anything else (what ``dexed-data list`` prints).

Example (``dataset.h5`` written by ``dexed-data render``)::

    >>> import dexed_data
    >>> ds = dexed_data.open_dataset("dataset.h5")
    >>> p = ds.presets[0]                                  # id, name, raw values, where it was found
    >>> len(p.id), p.sources[0].path
    (16, 'toolkit_bank_b.syx')
    >>> ds.params(0)["ALGORITHM"]                          # raw DX7 value 0–31: algorithm 1 on a DX7
    0
    >>> ds.mel(0).shape[:2], ds.audio(0).shape[0]          # (notes, mels, frames), (notes, samples)
    ((6, 257), 6)
    >>> mel, raw = ds.torch_dataset()[0]                   # torch tensors: scaled mel, raw values
    >>> tuple(mel.shape[:2]), raw.dtype
    ((6, 257), torch.int64)
    >>> ds.close()
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import h5py
import numpy as np

from .dataset import STATUS_OK, DatasetReader
from .errors import DatasetError, DexedDataError
from .schema import decode_names, params_dict

if TYPE_CHECKING:
    from .torch_dataset import MelDataset

__all__ = ["Source", "Preset", "RenderedDataset", "open_dataset", "preset_table", "printable_name", "printable_path"]


@dataclass(frozen=True)
class Source:
    """Where a preset was found: file (relative to the import root), message and voice (0-based),
    and the name there (the 10 bytes as found; control bytes such as NUL occur)."""

    path: str
    message: int
    voice: int
    name: str


@dataclass(frozen=True)
class Preset:
    """One row of a catalogue or dataset: ``row``, content-hash ``id`` (16 hex digits), ``name``
    (10 characters), ``raw`` values ``(145,)`` uint8 and every ``sources`` occurrence, first
    one first."""

    row: int
    id: str
    name: str
    raw: np.ndarray
    sources: tuple[Source, ...]


def printable_name(name: str) -> str:
    """A voice name for display: control bytes (NULs are common in real banks) shown as "·"."""
    return "".join(c if " " <= c < "\x7f" else "·" for c in name).rstrip()


def printable_path(path: str) -> str:
    """A file path for one line of display: control characters (a newline in a file name) escaped, ``\\n``."""
    from .console import one_line

    return one_line(path)


def preset_table(path: str | Path) -> list[Preset]:
    """The presets of a catalogue (``presets.h5``) or a dataset (``dataset.h5``), rows in order.

    Reads only ``/presets`` and ``/occurrences`` (small), so it is quick on a 30k-preset file.
    The file is checked as its own reader checks it (:func:`dexed_data.catalogue.check_catalogue`,
    :func:`dexed_data.dataset.check_dataset`; an unfinished dataset is listed too).

    Raises:
        DexedDataError: not a readable catalogue or dataset.
    """
    from .catalogue import FORMAT as CATALOGUE_FORMAT, check_catalogue
    from .dataset import FORMAT as DATASET_FORMAT, check_dataset
    from .inputs import format_attr, open_hdf5

    if path is None:
        raise DexedDataError("give the path of a catalogue (presets.h5) or a dataset (dataset.h5), not None")
    with open_hdf5(path, "catalogue or dataset", DexedDataError) as f:
        fmt = format_attr(f)
        if fmt == CATALOGUE_FORMAT:
            check_catalogue(f, path)
        elif fmt == DATASET_FORMAT:
            check_dataset(f, path, allow_incomplete=True)
        else:
            raise DexedDataError(f"{path}: HDF5 file of format {fmt!r}; expected a dexed-catalogue (presets.h5) or "
                                 "a dexed-dataset (dataset.h5)")
        return _table_of(f, path)


def _table_of(f: h5py.File, path) -> list[Preset]:
    """:func:`preset_table` of an open file that its format's check accepted."""
    from .inputs import damaged

    try:
        p, o = f["presets"], f["occurrences"]
        ids = [x.decode() for x in p["id"][...]]
        names = decode_names(p["name"][...])
        raw = p["raw"][...].astype(np.uint8)
        preset = o["preset"][...].astype(np.int64)
        paths = o["path"].asstr()[...]
        message, voice = o["message"][...], o["voice"][...]
        occ_names = decode_names(o["name"][...])
    except (KeyError, OSError, ValueError, TypeError) as exc:   # data cut off
        raise damaged(path, exc, DexedDataError) from None
    order = np.argsort(preset, kind="stable")
    starts = np.searchsorted(preset[order], np.arange(len(ids) + 1))
    out = []
    for r in range(len(ids)):
        idx = order[starts[r]:starts[r + 1]]
        out.append(Preset(r, ids[r], names[r], raw[r],
                          tuple(Source(str(paths[i]), int(message[i]), int(voice[i]), occ_names[i]) for i in idx)))
    return out


class RenderedDataset(DatasetReader):
    """A ``dataset.h5`` opened for use in Python (a :class:`~dexed_data.dataset.DatasetReader`).

    Besides the reader's ``ids``, ``names``, ``raw``, ``status``, ``silent``, ``usable()``,
    ``mel(i)``, ``mel_bounds`` and ``info`` (render settings, in ``info.header``):

    * :attr:`presets`: the :class:`Preset` table, provenance included;
    * :meth:`params`: a row's parameters by name;
    * :meth:`audio`: stored audio, or the preset rendered again exactly;
    * :meth:`torch_dataset`: a ``torch.utils.data.Dataset`` of spectrograms and parameters.
    """

    def __init__(self, path, allow_incomplete: bool = False):
        super().__init__(path, allow_incomplete)
        self._presets: list[Preset] | None = None
        self._engines = threading.local()   # one per thread: an engine is one synth (see voice._ENGINES)

    @property
    def presets(self) -> list[Preset]:
        """Every row's :class:`Preset` (read once, on first use)."""
        if self._presets is None:
            self._presets = _table_of(self.file, self.path)   # the open file: the rows ids/raw come from
        return self._presets

    def params(self, i: int) -> dict[str, int]:
        """Parameters of row ``i``: ``{name: raw value}`` for the 145 voice parameters (voice order,
        OP6 first; names and ranges from :mod:`dexed_data.schema`), with the fixed TRANSPOSE = 24
        the render used."""
        return params_dict(self.raw[self._row(i)])

    def audio(self, i: int) -> np.ndarray:
        """Audio of row ``i``: ``(K, T)`` float32 at the plug-in's scale (1.0 = full scale).

        The stored ``/audio`` when the file has it (``--store audio,mel``); otherwise the preset is
        rendered again with the file's engine and settings (notes, hold, release, sample rate),
        which gives exactly the audio the dataset was made from (rendering is deterministic).

        Raises:
            DatasetError: the row failed to render, or no audio is stored and the file's engine
                (name and version) is not the one available here.
        """
        i = self._row(i)
        if self.status[i] != STATUS_OK:
            raise DatasetError(f"{self.path}: row {i} ({self.ids[i]}) failed to render; it has no audio")
        if "audio" in self.file:
            return super().audio(i)
        h = self.info.header
        return self.rerender_engine().render(self.raw[i], h.notes, h.hold, h.release).audio

    def rerender_engine(self):
        """The engine that renders this file's presets again (built once): the file's own engine
        and version, or :class:`~dexed_data.errors.DatasetError` when it is not the one available here."""
        if getattr(self._engines, "engine", None) is None:
            from .engines import EngineSpec, make_engine

            h = self.info.header
            engine = make_engine(EngineSpec(h.engine, h.sample_rate)) if h.engine == "dexed" else None
            if engine is None:
                raise DatasetError(f"{self.path}: audio is not stored, and the file was rendered through a plug-in "
                                   f"({h.engine_version}), which is not re-rendered here; render it again with "
                                   "--store audio,mel to keep its audio")
            if engine.version != h.engine_version:
                raise DatasetError(f"{self.path}: audio is not stored and cannot be re-rendered here: the file was "
                                   f"made with {h.engine_version}, this machine has {engine.version}; render with "
                                   "--store audio,mel")
            self._engines.engine = engine
        return self._engines.engine

    def torch_dataset(self, rows: Sequence[int] | None = None, notes: Sequence[int] | None = None,
                      scale: bool = True) -> "MelDataset":
        """A PyTorch ``Dataset`` over this file's spectrograms (see :class:`MelDataset`).

        ``rows`` default to :meth:`usable` (rendered, not silent, not a duplicate by sound).
        """
        from .torch_dataset import MelDataset

        if scale and not np.isfinite(self.mel_bounds).all():
            raise DatasetError(f"{self.path}: no rendered preset that is not silent, so no bounds to scale the "
                               "spectrograms by; pass scale=False for the dB values, or render presets that sound")
        return MelDataset(self.path, self.usable() if rows is None else rows, notes,
                          self.mel_bounds if scale else None, made_from=self.identity)


def open_dataset(path: str | Path) -> RenderedDataset:
    """Open a complete ``dataset.h5`` (see :class:`RenderedDataset`; also a context manager).

    Raises:
        DatasetError: not a dataset, another format version or parameter schema, or incomplete.
    """
    return RenderedDataset(path)
