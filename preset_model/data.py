"""Training data: a lazy torch ``Dataset`` over ``dataset.h5`` and the deterministic train/valid/test split.

The file is plain HDF5 in the layout of docs/ARCHITECTURE.md; it is read with h5py directly.
Only small per-preset arrays (raw values, status, silence, audibility) are read up front;
spectrograms are read one preset at a time, each DataLoader worker with its own h5py handle.

Example::

    >>> from preset_model.data import split_ids
    >>> s = split_ids([f"{i:016x}" for i in range(1000)], fold=0)
    >>> len(s.test), len(s.train) + len(s.valid) + len(s.test)
    (206, 1000)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from dexed_data.schema import SCHEMA_HASH

from .encoding import get_encoding
from .errors import DataError

#: The note single-note models use (PAPER.md): MIDI 60, velocity 85.
SINGLE_NOTE = (60, 85)


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs from a ``dataset.h5``'s attributes and shapes.

    Attributes:
        path: the file.
        schema_hash: parameter-schema hash the file was written with.
        notes: ``(midi_pitch, velocity)`` of each of the K rendered notes.
        n_presets: rows in the file (before filtering).
        n_mels, frames: spectrogram size per note.
        mel_bounds: ``(mel_min_db, mel_max_db)``, the fixed dB bounds scaled to [-1, 1].
    """

    path: str
    schema_hash: str
    notes: tuple[tuple[int, int], ...]
    n_presets: int
    n_mels: int
    frames: int
    mel_bounds: tuple[float, float]

    def note_index(self, notes: int) -> tuple[int, ...]:
        """Indices of the notes a ``notes``-note model uses: all K, or (60, 85) alone for 1."""
        if notes == len(self.notes):
            return tuple(range(notes))
        if notes == 1 and SINGLE_NOTE in self.notes:
            return (self.notes.index(SINGLE_NOTE),)
        raise DataError(f"{self.path}: a {notes}-note model needs {'note ' + str(SINGLE_NOTE) if notes == 1 else str(notes) + ' notes'}, "
                        f"but the dataset was rendered on {', '.join(f'{a}:{b}' for a, b in self.notes)}; re-render or pick "
                        f"--notes {len(self.notes)}")


def open_checked(path: str | Path) -> h5py.File:
    """``path`` opened read-only, refused (:class:`DataError`, one line) unless it is a complete
    dataset that :func:`dexed_data.dataset.check_dataset` accepts (any parameter schema: the
    caller compares it, :func:`check_schema`). Every reader here opens the file through this."""
    from dexed_data.dataset import check_dataset
    from dexed_data.errors import DexedDataError
    from dexed_data.inputs import open_hdf5  # one clear line for an empty, text, foreign or truncated file

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the dataset file (dataset.h5) made by `dexed-data render`")
    if not path.exists():
        raise DataError(f"{path}: no such dataset file; build one with `dexed-data render`")
    h5 = open_hdf5(path, "dataset", DataError)   # a device or a pipe said as such
    try:
        check_dataset(h5, path, schema=False)
    except DexedDataError as exc:
        h5.close()
        raise DataError(str(exc)) from None
    except BaseException:
        h5.close()
        raise
    return h5


def read_info(path: str | Path) -> DatasetInfo:
    """Read and check a dataset (:func:`open_checked`). Raises :class:`DataError` on another format,
    a damaged file or a missing /mel."""
    path = Path(path)
    with open_checked(path) as h5:
        a = h5.attrs
        if "mel" not in h5:
            raise DataError(f"{path}: has no /mel spectrograms; render it with mel storage enabled")
        n, k, n_mels, frames = h5["mel"].shape
        return DatasetInfo(str(path), str(a["schema_hash"]), tuple((int(p), int(v)) for p, v in np.asarray(a["notes"])),
                           n, n_mels, frames, (float(a["mel_min_db"]), float(a["mel_max_db"])))


def check_schema(info: DatasetInfo, expected: str = SCHEMA_HASH) -> None:
    """Refuse a dataset written with another parameter schema than ``expected``."""
    if info.schema_hash != expected:
        raise DataError(f"{info.path}: written with parameter schema {info.schema_hash}, but this code (or checkpoint) "
                        f"uses schema {expected}; the parameters would not mean the same thing. Re-render the dataset "
                        f"with this version of dexed_data, or use a checkpoint trained on this schema")


@dataclass(frozen=True)
class Split:
    """A deterministic split by preset id: ``test`` held out, the rest in ``n_folds`` folds, ``fold`` is validation.

    Ids are hex strings (``/presets/id``). Presets of one sound-equivalence group share a split.
    """

    fold: int
    n_folds: int
    test_fraction: float
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def to_json(self) -> str:
        """The split as JSON (saved as ``split.json`` in every run folder)."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(d["fold"], d["n_folds"], d["test_fraction"], tuple(d["train"]), tuple(d["valid"]), tuple(d["test"]))


def _unit_hash(key: str) -> float:
    """A uniform number in [0, 1) from a string, stable across machines and Python versions."""
    return int(hashlib.sha256(b"preset-model-split:" + key.encode()).hexdigest()[:13], 16) / 16**13


def split_ids(ids, fold: int = 0, groups=None, n_folds: int = 5, test_fraction: float = 0.2) -> Split:
    """Split preset ``ids`` by a hash of each id (or of its group's key in ``groups``).

    A preset's set depends only on its id, never on the file's order or size: the test set
    is the same for every fold and every dataset that contains the preset.
    """
    if not 0 <= fold < n_folds:
        raise DataError(f"--fold must be in 0..{n_folds - 1}, got {fold}")
    keys = list(ids) if groups is None else list(groups)
    sets: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, key in zip(ids, keys):
        u = _unit_hash(key)
        if u < test_fraction:
            sets["test"].append(i)
        else:
            k = min(int((u - test_fraction) / (1 - test_fraction) * n_folds), n_folds - 1)
            sets["valid" if k == fold else "train"].append(i)
    return Split(fold, n_folds, test_fraction, *(tuple(sorted(sets[s])) for s in ("train", "valid", "test")))


def read_usable(path: str | Path, keep_duplicates: bool = False, keys: bool = True) -> tuple[list[str], np.ndarray, list[str] | None]:
    """Preset ids, usable rows and split keys (one key per near-copy group, so a group shares a split).

    Usable: rendered ok, not silent and, unless ``keep_duplicates``, not a duplicate by sound
    (``/duplicate_of >= 0``: its audio equals an earlier preset's). Keys come from
    :func:`preset_model.split.split_keys` (near-copy groups: same name, at most
    :data:`~dexed_data.nearcopy.NEAR_PARAMS` differing learnable parameters, every parameter within
    one step, same near fingerprint, or mel spectrograms within :data:`~preset_model.split.SOUND_COPY_DB`),
    so near-copies never straddle train and test. ``keys`` False: None instead of the keys, for a
    caller that has its split already (a run's): the sound links read every spectrogram once.
    """
    from .split import split_keys

    with open_checked(path) as h5:
        ids = [b.decode() for b in h5["presets/id"][:]]
        n = len(ids)
        rendered = h5["status"][:] == 1
        silent = h5["silent"][:].astype(bool)
        dup = h5["duplicate_of"][:].astype(np.int64) if "duplicate_of" in h5 else np.full(n, -1, np.int64)
        near_group = h5["presets/near_group"][:] if "presets/near_group" in h5 else None
        raw = h5["presets/raw"][:]
        names = h5["presets/name"][:] if near_group is None else None
        near = h5["near_fingerprint"][:] if "near_fingerprint" in h5 else None
        found = (list(split_keys(ids, near_group, raw, names, near, rendered & ~silent, h5["mel"] if "mel" in h5 else None))
                 if keys else None)
    ok = rendered & ~silent
    if not keep_duplicates:
        ok &= dup < 0
    return ids, np.flatnonzero(ok), found


def _too_small(path, usable: np.ndarray, keys: list[str], ids: list[str], split: Split, keep_duplicates: bool) -> str:
    """Why a dataset leaves no training or no validation preset, and what to do."""
    with h5py.File(path, "r") as h5:
        n = len(ids)
        failed = int((h5["status"][:] != 1).sum()) if "status" in h5 else 0
        silent = int(h5["silent"][:].astype(bool).sum()) if "silent" in h5 else 0
        dup_of = h5["duplicate_of"][:] if "duplicate_of" in h5 else np.full(n, -1)
        dups = int((dup_of >= 0).sum())
        heard = ((h5["status"][:] == 1) & ~h5["silent"][:].astype(bool) if "status" in h5 and "silent" in h5
                 else np.ones(n, bool))
        usable_dups = int(((dup_of >= 0) & heard).sum())
    groups = len({keys[r] for r in usable})
    dups = dups if not keep_duplicates else 0
    why = [f"{failed} failed"] * bool(failed) + [f"{silent} silent"] * bool(silent) + [f"{dups} duplicates by sound"] * bool(dups)
    def enough(rows, fold: int) -> bool:
        s = split_ids([ids[r] for r in rows], fold, groups=[keys[r] for r in rows])
        return len(s.train) >= 2 and bool(s.valid)

    other = [f for f in range(5) if f != split.fold and enough(usable, f)]
    # only where it helps: duplicates of one near-copy group go to one side of the split (audit Z16)
    keeping = dups and usable_dups and enough(np.flatnonzero(heard), split.fold)
    hints = ([f"--fold {' or '.join(map(str, other))} leaves some for both"] * bool(other)
             + [f"--keep-duplicates keeps the {usable_dups} duplicates"] * bool(keeping)
             + ["render more presets"])
    return (f"{path}: too few presets to train on: {len(usable)} usable of {n}"
            + (f" ({', '.join(why)} left out)" if why else "")
            + f", in {groups} near-copy group(s), which the split deals out whole: {len(split.train)} for training, "
            f"{len(split.valid)} for validation fold {split.fold}, {len(split.test)} for test (training needs 2 at "
            f"least, validation 1); " + "; or ".join(hints))


class SpectrogramDataset(Dataset):
    """Presets of a ``dataset.h5`` as ``(mel, target, mask)`` samples, read lazily or held in RAM.

    Args:
        path: the dataset file.
        rows: rows of the file to serve, in order.
        encoding: ``"num"``, ``"numcat"`` or ``"numcat++"``.
        note_index: which of the K notes to return (sorted, see :meth:`DatasetInfo.note_index`).
        mel_bounds: ``(min_db, max_db)``; dB values map linearly to [-1, 1] and are clipped.
        in_memory: read every served spectrogram once into RAM (float16 dB, as stored) instead of
            one preset per item from the file; see :func:`fits_in_memory`.

    Each item: ``mel (notes, mels, frames)`` float32 in [-1, 1], ``target (D,)`` float32 encoded
    preset, ``mask (D,)`` float32 loss weights (0 for operators inaudible on every used note).

    Example::

        >>> ds = SpectrogramDataset("dataset.h5", rows, "numcat++", (0, 1, 2, 3, 4, 5), (-120.0, 0.0))  # doctest: +SKIP
        >>> mel, target, mask = ds[0]  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, rows, encoding: str, note_index: tuple[int, ...],
                 mel_bounds: tuple[float, float], in_memory: bool = False) -> None:
        from dexed_data.inputs import check_mel_selection, row_numbers
        from dexed_data.outputs import file_identity

        self.path = str(path)
        self.rows = row_numbers(rows, path, DataError)
        self.note_index = tuple(sorted(note_index))
        lo, hi = mel_bounds
        if not hi > lo:
            raise DataError(f"{path}: mel bounds must satisfy min < max, got {mel_bounds}")
        self.lo, self.scale = float(lo), 2.0 / (float(hi) - float(lo))
        enc = get_encoding(encoding)
        with open_checked(self.path) as h5:   # raw values within their maxima, audibility (N, K, 6)
            check_mel_selection(h5, path, self.rows, self.note_index, DataError)
            raw = h5["presets/raw"][:][self.rows]
            audible = h5["audible"][:][self.rows]
        self._made_from = file_identity(self.path)
        self.targets = torch.from_numpy(enc.encode(raw))
        heard = audible[:, list(self.note_index)].any(axis=1) if audible.shape[1] > 1 else audible[:, 0]
        self.masks = torch.from_numpy(enc.operator_mask(heard))
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        k = self.note_index
        self._notes = slice(k[0], k[-1] + 1) if k == tuple(range(k[0], k[-1] + 1)) else list(k)
        self.mel_db = read_mels(self.path, self.rows, self.note_index) if in_memory else None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def bounds(self) -> tuple[float, float]:
        """``(min_db, max_db)`` mapped to [-1, 1]."""
        return self.lo, self.lo + 2.0 / self.scale

    def __getstate__(self) -> dict:  # workers open their own handle; an h5py handle does not pickle
        return {**self.__dict__, "_h5": None, "_pid": None}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mel_db is not None:
            db = self.mel_db[i].astype(np.float32)
        else:
            if self._pid != os.getpid():  # first use in this process (a forked worker must not share the parent's)
                from dexed_data.outputs import file_identity

                if file_identity(self.path) != self._made_from:   # the targets come from the file as it was
                    raise DataError(f"{self.path} was replaced or removed while it was being read (another command "
                                    "wrote it); once that command has finished, run this one again (fit: with "
                                    "--resume if it saved a checkpoint)")
                self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
            db = read_row(self._h5["mel"], self.rows[i], self._notes).astype(np.float32)
        mel = np.clip((db - self.lo) * self.scale - 1.0, -1.0, 1.0)
        return torch.from_numpy(mel), self.targets[i], self.masks[i]


def row_blocks(array, rows: np.ndarray, block: int):
    """Yield ``(i, j, array[rows[i:j]])`` for ascending ``rows``, each read as one slice of at most ``block``
    rows of ``array`` (an ``h5py`` dataset: contiguous reads are fast, and rows far apart are never read
    with everything between them). Data that HDF5 cannot read back is a :class:`DataError` naming the
    file and the row (:func:`unreadable`)."""
    i = 0
    while i < len(rows):
        lo = int(rows[i])
        j = int(np.searchsorted(rows, lo + block, side="left"))
        try:
            x = array[lo:int(rows[j - 1]) + 1]
        except OSError:
            # a compressed chunk that does not decode (a damaged copy), maybe of a row between the wanted
            # ones: those alone, each named if it fails (R13, R14)
            yield i, j, np.stack([read_row(array, int(r)) for r in rows[i:j]])
        else:
            yield i, j, x if len(x) == j - i else x[np.asarray(rows[i:j]) - lo]
        i = j


def read_mels(path: str | Path, rows, note_index, block: int = 512) -> np.ndarray:
    """``/mel`` of ``rows`` (any order, repeats allowed) and notes ``note_index``: ``(len(rows), notes,
    mels, frames)`` as stored, in the order of ``rows``.

    Reads contiguous blocks of the distinct rows in ascending order (fast for HDF5) and keeps the
    wanted ones.
    """
    wanted = np.asarray(rows, np.int64)
    rows, back = np.unique(wanted, return_inverse=True)
    if not np.array_equal(rows, wanted):   # not ascending, or repeats: read the distinct rows sorted
        return read_mels(path, rows, note_index, block)[back.reshape(-1)]
    notes = list(note_index)
    with h5py.File(path, "r") as h5:
        mel = h5["mel"]
        out = np.empty((len(rows), len(notes), *mel.shape[2:]), mel.dtype)
        for i, j, x in row_blocks(mel, rows, block):
            out[i:j] = x[:, notes]
    return out


def _missing_filter(array) -> int | None:
    """The first HDF5 filter ``array`` is stored with that this installation cannot decode, or None."""
    try:
        plist = array.id.get_create_plist()
        codes = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    except Exception:  # noqa: BLE001 - not an h5py dataset, or no filter information
        return None
    return next((c for c in codes if not h5py.h5z.filter_avail(c)), None)


def unreadable(array, row: int, exc: OSError) -> DataError:
    """The error for a ``row`` of an HDF5 ``array`` that HDF5 cannot read back: stored with a
    compression filter this installation lacks (another program's file), or a compressed chunk damaged
    on disk or in a copy. It names the dataset file and the row, where ``fit`` named its own run folder
    ("free space", R10)."""
    from dexed_data.inputs import first_line

    path = getattr(getattr(array, "file", None), "filename", "the dataset")
    name = getattr(array, "name", "/mel")
    code = _missing_filter(array)
    if code is not None:   # R13: an intact file was called damaged
        return DataError(f"{path}: {name} is compressed with HDF5 filter {code}, which this installation cannot "
                         "decode (another program wrote it so); write it again with gzip or lzf (e.g. `h5repack -f "
                         "GZIP=4 IN OUT`), or render it again with dexed-data render")
    return DataError(f"{path}: {name} of preset row {row} cannot be read ({first_line(exc)}): the file is damaged "
                     "(a cut-off or corrupted copy, a disk fault); copy it again, or render it again with "
                     "dexed-data render")


def read_row(array, row: int, notes=None) -> np.ndarray:
    """``array[row]`` (``array[row, notes]``) of an HDF5 dataset, or :func:`unreadable`'s error."""
    try:
        return array[row] if notes is None else array[row, notes]
    except OSError as exc:   # h5py's: a compressed chunk that does not decode (a damaged copy)
        raise unreadable(array, int(row), exc) from None


def fits_in_memory(n_rows: int, note_count: int, info: "DatasetInfo", share: float = 0.25) -> bool:
    """Whether ``n_rows`` presets' spectrograms (float16) take at most ``share`` of the available RAM."""
    need = n_rows * note_count * info.n_mels * info.frames * 2
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not on this platform
        return False
    return need <= share * available


def training_bounds(ds: SpectrogramDataset) -> tuple[float, float]:
    """``(min_db, max_db)`` over the spectrograms ``ds`` serves (the training split: PAPER.md's bounds).

    Reads them from RAM when held there, else one block of rows at a time from the file.
    """
    lo, hi = np.inf, -np.inf
    if ds.mel_db is not None:
        blocks = (ds.mel_db[i:i + 4096] for i in range(0, len(ds), 4096))
    else:
        blocks = (read_mels(ds.path, ds.rows[i:i + 1024], ds.note_index) for i in range(0, len(ds), 1024))
    for b in blocks:
        b = b[np.isfinite(b)]
        if b.size:
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
    if not np.isfinite(lo) or not hi > lo:
        raise DataError(f"{ds.path}: the training spectrograms have no range ({lo} … {hi} dB); nothing to learn from")
    return lo, hi


def make_datasets(path: str | Path, encoding: str, notes: int, fold: int = 0,
                  split: Split | None = None, keep_duplicates: bool = False,
                  in_memory: bool | None = None, mel_bounds: tuple[float, float] | None = None,
                  ) -> tuple[SpectrogramDataset, SpectrogramDataset, Split, DatasetInfo]:
    """Train and validation datasets of ``path`` for a model, and the split used (given or computed).

    Failed and silent presets are left out, and so are duplicates by sound unless
    ``keep_duplicates``. The spectrograms' dB bounds are ``mel_bounds`` when given (a resumed
    run's), else measured on the training split (:func:`training_bounds`); both datasets use
    them (``ds.lo``, ``ds.scale``; :attr:`SpectrogramDataset.bounds`). ``in_memory``: hold the
    spectrograms in RAM (None: when they fit in a quarter of the available memory).
    Raises :class:`DataError` if the file cannot be used or the validation fold is empty.
    """
    info = read_info(path)
    check_schema(info)
    note_index = info.note_index(notes)
    ids, usable, keys = read_usable(path, keep_duplicates, keys=split is None)   # a resumed run has its split
    if split is None:
        split = split_ids([ids[r] for r in usable], fold, groups=[keys[r] for r in usable])
    row_of = {ids[r]: r for r in usable}
    missing = [i for i in split.train + split.valid if i not in row_of]
    if missing:
        raise DataError(f"{path}: {len(missing)} presets of the saved split (e.g. {missing[0]}) are not usable rows "
                        f"of this dataset; resume on the dataset the run started with")
    if len(split.train) < 2 or not split.valid:   # batch normalisation needs two presets in a batch
        raise DataError(_too_small(path, usable, keys or read_usable(path, keep_duplicates)[2], ids, split, keep_duplicates))
    if in_memory is None:
        in_memory = fits_in_memory(len(split.train) + len(split.valid), len(note_index), info)
    make = lambda subset, bounds: SpectrogramDataset(path, sorted(row_of[i] for i in subset), encoding,  # noqa: E731
                                                     note_index, bounds, in_memory)
    train = make(split.train, mel_bounds or info.mel_bounds)
    bounds = tuple(mel_bounds) if mel_bounds is not None else training_bounds(train)
    train.lo, train.scale = bounds[0], 2.0 / (bounds[1] - bounds[0])
    return train, make(split.valid, bounds), split, info
