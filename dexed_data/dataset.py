"""The rendered dataset file (``dataset.h5``): its format and reading it.

One HDF5 file per dataset, readable with plain h5py (no filter plug-ins): the big per-preset arrays
(``/audio``, ``/mel``) are contiguous when uncompressed (rows written in place by the render
workers) or chunked one preset per chunk through HDF5's built-in shuffle+LZF / shuffle+gzip
filters; everything else is small. See ``docs/FORMAT.md``. Writing: :mod:`dexed_data.writer`;
storage choices: :mod:`dexed_data.storage`; shards: :mod:`dexed_data.merge`.

Example::

    >>> from dexed_data.dataset import DatasetReader
    >>> with DatasetReader("dataset.h5") as ds:          # doctest: +SKIP
    ...     i = ds.usable()[0]
    ...     ds.mel(i).shape, ds.raw[i].shape             # ds.audio(i) with --store audio,mel
    ((6, 257, 345), (145,))
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import DatasetError
from .schema import SCHEMA_HASH, decode_names
from .storage import StorageConfig

FORMAT = "dexed-dataset"
FORMAT_VERSION = 1

#: ``/status`` values: not rendered yet (only inside an unfinished file), rendered, failed.
STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2
#: What the float arrays (``/mel``, ``/audio``, ``/peak``, ``/rms``, ``/operator_db``) hold in the
#: rows of failed presets: NaN, which no reader can take for sound (zeros in /mel are full scale).
FAILED_FILL = float("nan")


@dataclass(frozen=True)
class Shapes:
    """Per-preset array shapes: K notes, T samples per note, mel bands and frames."""

    notes: int
    samples: int
    mels: int
    frames: int

    def of(self, name: str) -> tuple[int, ...]:
        return (self.notes, self.samples) if name == "audio" else (self.notes, self.mels, self.frames)


@dataclass(frozen=True)
class DatasetHeader:
    """Everything in the root attributes that describes how the data was made (not the results)."""

    engine: str
    engine_version: str
    sample_rate: int
    notes: tuple[tuple[int, int], ...]
    hold: float
    release: float
    fixed_params: dict
    mel_config: dict
    operators: bool
    storage: StorageConfig
    shapes: Shapes
    command: str
    selection_hash: str
    selection_size: int

    def attrs(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "schema_hash": SCHEMA_HASH,
            "engine": self.engine, "engine_version": self.engine_version,
            "sample_rate": int(self.sample_rate),
            "notes": np.asarray(self.notes, dtype=np.int32).reshape(-1, 2),
            "hold": float(self.hold), "release": float(self.release),
            "fixed_params": json.dumps(self.fixed_params, sort_keys=True),
            "mel_config": json.dumps(self.mel_config, sort_keys=True),
            "operators": bool(self.operators),
            "stored": ",".join(self.storage.arrays), "compression": self.storage.compression,
            "audio_dtype": self.storage.audio_dtype,
            "shapes": json.dumps(self.shapes.__dict__, sort_keys=True),
            "command": self.command, "selection_hash": self.selection_hash,
            "selection_size": int(self.selection_size),
        }

    @classmethod
    def from_attrs(cls, attrs) -> "DatasetHeader":
        return cls(
            engine=str(attrs["engine"]), engine_version=str(attrs["engine_version"]),
            sample_rate=int(attrs["sample_rate"]),
            notes=tuple((int(p), int(v)) for p, v in np.asarray(attrs["notes"]).reshape(-1, 2)),
            hold=float(attrs["hold"]), release=float(attrs["release"]),
            fixed_params=json.loads(attrs["fixed_params"]), mel_config=json.loads(attrs["mel_config"]),
            operators=bool(attrs["operators"]),
            storage=StorageConfig(tuple(a for a in str(attrs["stored"]).split(",") if a),
                                  str(attrs["compression"]), str(attrs["audio_dtype"])),
            shapes=Shapes(**json.loads(attrs["shapes"])), command=str(attrs["command"]),
            selection_hash=str(attrs["selection_hash"]), selection_size=int(attrs["selection_size"]),
        )


@dataclass
class PresetTable:
    """The presets of a dataset file (rows in catalogue order) and where they came from.

    ``raw`` has the paper's fixed voice bytes applied. ``sound_group`` keeps the catalogue's
    numbering (the catalogue row of the class representative; compare with ``catalogue_row``),
    so that shards and their merge agree. ``occurrences["preset"]`` is a row of this table.
    """

    raw: np.ndarray                  # (n, 145) uint8
    ids: np.ndarray                  # (n,) |S16
    names: np.ndarray                # (n,) |S10
    sound_group: np.ndarray          # (n,) int32
    catalogue_row: np.ndarray        # (n,) int32
    occurrences: dict[str, np.ndarray]
    near_group: np.ndarray | None = None   # (n,) |S16 id of the first preset of the near-copy group (catalogue-wide)

    def __len__(self) -> int:
        return len(self.ids)


def read_presets(f: h5py.File) -> PresetTable:
    g, occ = f["presets"], f["occurrences"]
    occurrences = {}
    for key in occ:
        d = occ[key]
        if d.dtype.kind == "S":   # names: decoded as the catalogue does
            occurrences[key] = np.asarray(decode_names(d[...]), dtype=object)
        elif h5py.check_string_dtype(d.dtype):
            occurrences[key] = d.asstr()[...].astype(object)
        else:
            occurrences[key] = d[...]
    return PresetTable(g["raw"][...], g["id"][...], g["name"][...], g["sound_group"][...],
                       g["catalogue_row"][...], occurrences, g["near_group"][...] if "near_group" in g else None)


def select_occurrences(occurrences: dict[str, np.ndarray], preset_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Keep the occurrences of catalogue presets ``preset_rows`` (sorted), renumbered to 0..len-1.

    Order: by new preset row, ties in the order given (stable), the same for a shard and a whole run.
    """
    preset = np.asarray(occurrences["preset"], np.int64)
    pos = np.searchsorted(preset_rows, preset)
    pos_clipped = np.minimum(pos, max(len(preset_rows) - 1, 0))
    keep = (pos < len(preset_rows)) & (np.asarray(preset_rows)[pos_clipped] == preset) if len(preset_rows) else np.zeros(len(preset), bool)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(pos[idx], kind="stable")]
    out = {k: np.asarray(v)[idx] for k, v in occurrences.items()}
    out["preset"] = pos[idx].astype(np.int32)
    return out


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """The root attributes of a dataset file, typed."""

    path: str
    format_version: int
    schema_hash: str
    complete: bool
    header: DatasetHeader
    mel_min_db: float
    mel_max_db: float
    shard: str | None

    @property
    def notes(self) -> tuple[tuple[int, int], ...]:
        return self.header.notes

    @property
    def sample_rate(self) -> int:
        return self.header.sample_rate


def catalogue_not_dataset(path) -> str:
    """What to say when a catalogue is given where a rendered dataset is needed."""
    return f"{path}: a catalogue of presets, not a rendered dataset; render it first: `dexed-data render {path} -o dataset.h5`"


def check_file(f: h5py.File, path, allow_incomplete: bool = False) -> None:
    """Refuse a file that is not a complete dataset of this format version and schema."""
    a = f.attrs
    if a.get("format") == "dexed-catalogue":
        raise DatasetError(catalogue_not_dataset(path))
    if a.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a dexed dataset (format={a.get('format')!r}); "
                           "render one with `dexed-data render presets.h5 -o dataset.h5`")
    if int(a.get("format_version", -1)) != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format version {a.get('format_version')} but this dexed_data reads "
                           f"version {FORMAT_VERSION}; re-render it with this version")
    if a.get("schema_hash") != SCHEMA_HASH:
        raise DatasetError(f"{path}: parameter schema {a.get('schema_hash')} differs from this code's {SCHEMA_HASH}; "
                           "re-render the dataset with this version")
    if not allow_incomplete and not bool(a.get("complete", False)):
        raise DatasetError(f"{path}: the dataset is incomplete (its render was interrupted); rerun the same "
                           "render command to finish it")


#: Datasets every dataset file holds (besides ``/audio`` and ``/mel``, listed in its ``stored`` attribute).
REQUIRED = ("presets/raw", "presets/id", "presets/name", "presets/sound_group", "presets/catalogue_row",
            "status", "silent", "audible", "operator_db", "peak", "rms", "error")


def check_datasets(f: h5py.File, path) -> None:
    """Refuse a file whose attributes are right but whose datasets are missing or of the wrong size."""
    stored = tuple(a for a in str(f.attrs.get("stored", "")).split(",") if a)
    missing = [name for name in REQUIRED + stored if not isinstance(f.get(name), h5py.Dataset)]
    if missing and f.attrs.get("format") == FORMAT and not bool(f.attrs.get("complete", False)):
        where = Path(str(path))    # a render's own unfinished file: X.h5.parts/dataset.h5
        final = where.parent.name[:-len(".parts")] if where.parent.name.endswith(".parts") else None
        raise DatasetError(f"{path}: the dataset is incomplete (its render was interrupted before it wrote "
                           f"/{missing[0]}); rerun the same render command to finish it"
                           + (f", then read {where.parent.parent / final}" if final else ""))
    if missing:
        raise DatasetError(f"{path}: malformed dataset, missing /{', /'.join(missing[:4])}"
                           + (" ..." if len(missing) > 4 else "") + "; render it again")
    n = f["presets/id"].shape[0]
    wrong = [name for name in REQUIRED[4:] + stored if f[name].shape[:1] != (n,)]
    if wrong:
        raise DatasetError(f"{path}: malformed dataset, /{wrong[0]} does not have one row per preset ({n}); "
                           "render it again")


class DatasetReader:
    """Read a rendered dataset; small arrays are loaded at open, audio/mel per preset on demand.

    Example::

        >>> with DatasetReader("dataset.h5") as ds:            # doctest: +SKIP
        ...     x = ds.mel(ds.usable()[0])                     # (K, 257, frames) float32 dB
        ...     lo, hi = ds.mel_bounds                         # scale to [-1, 1] with these
    """

    def __init__(self, path, allow_incomplete: bool = False):
        from .inputs import damaged, open_hdf5

        self.path = str(path)
        self._f = open_hdf5(path, "dataset", DatasetError)
        try:
            check_file(self._f, self.path, allow_incomplete)
            check_datasets(self._f, self.path)
            a = self._f.attrs
            self.info = DatasetInfo(self.path, int(a["format_version"]), str(a["schema_hash"]),
                                    bool(a["complete"]), DatasetHeader.from_attrs(a),
                                    float(a["mel_min_db"]), float(a["mel_max_db"]),
                                    str(a["shard"]) if "shard" in a else None)
            p = self._f["presets"]
            self.ids: list[str] = [x.decode() for x in p["id"][...]]
            self.names: list[str] = decode_names(p["name"][...])
            self.raw: np.ndarray = p["raw"][...]
            self.sound_group: np.ndarray = p["sound_group"][...]
            self.status: np.ndarray = self._f["status"][...]
            self.silent: np.ndarray = self._f["silent"][...]
            self.audible: np.ndarray = self._f["audible"][...]
            self.operator_db: np.ndarray = self._f["operator_db"][...]
            self.peak: np.ndarray = self._f["peak"][...]
            self.rms: np.ndarray = self._f["rms"][...]
            n = len(self.ids)
            self.fingerprint: np.ndarray = (self._f["fingerprint"][...] if "fingerprint" in self._f
                                            else np.zeros((n, 16), np.uint8))
            self.duplicate_of: np.ndarray = (self._f["duplicate_of"][...] if "duplicate_of" in self._f
                                             else np.full(n, -1, np.int32))
        except (KeyError, OSError, ValueError, TypeError) as exc:   # cut-off data, malformed attributes
            self._f.close()
            raise damaged(self.path, exc, DatasetError) from None
        except Exception:
            self._f.close()
            raise

    def __len__(self) -> int:
        return len(self.ids)

    def __enter__(self) -> "DatasetReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def __reduce__(self):
        raise DatasetError(f"{self.path}: a dataset reader holds an open HDF5 file and cannot be pickled; for "
                           "DataLoader workers use its .torch_dataset() (which opens the file in each worker), "
                           "or pass the path and open it there")

    @property
    def file(self) -> h5py.File:
        """The open h5py file, for anything not wrapped here."""
        if not self._f.id.valid:
            raise DatasetError(f"{self.path}: the dataset was closed; open it again (dexed_data.open_dataset)")
        return self._f

    def _row(self, i) -> int:
        """``i`` as a row index of this file, or a :class:`DatasetError` saying what a row is."""
        try:
            if isinstance(i, (bool, np.bool_)):
                raise TypeError
            i = operator.index(i)          # ints, numpy ints, 0-d integer arrays and tensors
        except TypeError:
            raise DatasetError(f"{self.path}: a row is a whole number 0–{len(self) - 1}, got {i!r} "
                               "(a preset id: use .index(id))") from None
        if not -len(self) <= i < len(self):
            raise DatasetError(f"{self.path}: row {i} is out of range; this dataset has {len(self)} rows "
                               f"(0–{len(self) - 1})")
        return i % len(self)

    @property
    def mel_bounds(self) -> tuple[float, float]:
        """(min, max) dB over every rendered, non-silent preset: the fixed scaling bounds."""
        return self.info.mel_min_db, self.info.mel_max_db

    @property
    def errors(self) -> dict[str, str]:
        """Failed presets: id → reason."""
        err = self.file["error"].asstr()[...]
        return {self.ids[i]: err[i] for i in np.flatnonzero(self.status == STATUS_FAILED)}

    def index(self, preset_id: str) -> int:
        """Row of the preset with id ``preset_id``."""
        try:
            return self.ids.index(preset_id)
        except ValueError:
            raise DatasetError(f"{self.path}: no preset with id {preset_id!r}") from None

    def _big(self, name: str, i: int) -> np.ndarray:
        i = self._row(i)
        if name not in self.file:
            raise DatasetError(f"{self.path}: {name} is not stored (stored: {self.info.header.storage.arrays}); "
                               f"render with --store including {name}")
        return self._f[name][i].astype(np.float32)

    def mel(self, i: int) -> np.ndarray:
        """Mel spectrograms of preset row ``i``: ``(K, mels, frames)`` float32 dB (floor −120)."""
        return self._big("mel", i)

    def audio(self, i: int) -> np.ndarray:
        """Audio of preset row ``i``: ``(K, T)`` float32 at plug-in scale, as rendered (not clipped by storage)."""
        return self._big("audio", i)

    def usable(self, keep_duplicates: bool = False) -> np.ndarray:
        """Rows rendered OK, not near-silent and (unless ``keep_duplicates``) not a duplicate by
        sound of an earlier row: the default training set, ascending."""
        keep = (self.status == STATUS_OK) & ~self.silent
        if not keep_duplicates:
            keep &= self.duplicate_of < 0
        return np.flatnonzero(keep)
