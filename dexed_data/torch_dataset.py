"""A PyTorch ``Dataset`` over a ``dataset.h5``'s spectrograms, usable without ``preset_model``.

Example::

    >>> from dexed_data.torch_dataset import MelDataset
    >>> from torch.utils.data import DataLoader
    >>> ds = MelDataset("dataset.h5", rows=range(8), notes=[3], bounds=(-120.0, 0.0))
    >>> mel, raw = next(iter(DataLoader(ds, batch_size=4)))
    >>> tuple(mel.shape[:2]), tuple(raw.shape)             # (batch, notes, mels, frames), (batch, 145)
    ((4, 1), (4, 145))
"""

from __future__ import annotations

import os
from typing import Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetError
from .outputs import file_identity


class MelDataset(Dataset):
    """``torch.utils.data.Dataset`` of ``(mel, raw)`` pairs from a ``dataset.h5``, read lazily.

    Each item: ``mel`` float32 ``(notes, mels, frames)``, dB re full scale, or mapped linearly
    from ``bounds = (min_db, max_db)`` to [-1, 1] and clipped; ``raw`` int64 ``(145,)`` the raw
    parameter values (voice order; name them with :func:`dexed_data.schema.params_dict`).
    Works with ``DataLoader(num_workers > 0)``: each process opens its own HDF5 handle.

    Args:
        path: the dataset file.
        rows: file rows to serve, in order.
        notes: indices of the notes to return (default all K).
        bounds: dB scaling bounds (the file's ``mel_bounds``), or ``None`` for dB.
        made_from: the identity of the file ``rows`` and ``bounds`` were read from (a reader's
            ``identity``): refused if the file at ``path`` is another one by now.
    """

    def __init__(self, path, rows: Sequence[int], notes: Sequence[int] | None = None,
                 bounds: tuple[float, float] | None = None, made_from: tuple | None = None) -> None:
        from .dataset import check_file
        from .inputs import check_mel_selection, open_hdf5, row_numbers

        self.path = str(path)
        self.rows = row_numbers(rows, self.path, DatasetError)
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        if self.bounds is not None and not (np.isfinite(self.bounds).all() and self.bounds[0] < self.bounds[1]):
            raise DatasetError(f"bounds {bounds}: give (min_db, max_db) with min_db < max_db (the file's mel_bounds)")
        with open_hdf5(self.path, "dataset", DatasetError) as f:
            check_file(f, self.path)   # a catalogue, another format, an interrupted render: said as such
            check_mel_selection(f, self.path, self.rows, notes, DatasetError)
            self.notes = None if notes is None else [int(x) for x in notes]
            self.raw = f["presets/raw"][...][self.rows].astype(np.int64)
        self._made_from = file_identity(self.path)
        if made_from is not None and made_from != self._made_from:
            # rows, bounds and usable presets came from the reader's file, the spectrograms would not
            raise DatasetError(f"{self.path} was replaced since it was opened (a render wrote it again?); open it "
                               "again to read the new file")
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:   # DataLoader workers open their own handle
        return {**self.__dict__, "_h5": None, "_pid": None}

    def __getitem__(self, i: int):
        if self._pid != os.getpid():
            if file_identity(self.path) != self._made_from:   # the raw values come from the file as it was
                raise DatasetError(f"{self.path} was replaced or removed since this dataset was made; "
                                   "make the dataset again from the file as it is now")
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        db = self._h5["mel"][int(self.rows[i])].astype(np.float32)
        if self.notes is not None:
            db = db[self.notes]
        if self.bounds is not None:
            lo, hi = self.bounds
            db = np.clip((db - lo) * (2.0 / (hi - lo)) - 1.0, -1.0, 1.0)
        return torch.from_numpy(db), torch.from_numpy(self.raw[i])

