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
from .schema import SCHEMA_HASH, SOUND_BYTES, decode_names
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
    #: The plug-in file a ``dawdreamer`` dataset was rendered through (absolute path), else "".
    plugin: str = ""

    @property
    def engine_text(self) -> str:
        """The engine for people: its version (which names it) and the plug-in file, if any."""
        text = self.engine_version if self.engine_version.startswith(self.engine + " ") else \
            f"{self.engine} {self.engine_version}"
        return text + (f", plug-in {self.plugin}" if self.plugin else "")

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
            **({"plugin": self.plugin} if self.plugin else {}),
        }

    @classmethod
    def from_attrs(cls, attrs, path="dataset") -> "DatasetHeader":
        """The header in a file's root attributes, each checked for its type and range.

        Raises:
            DatasetError: an attribute is missing or malformed (named, with its value), for ``path``.
        """
        def get(name, convert, expected):
            return _attribute(attrs, name, convert, expected, path)

        stored = get("stored", _text, "text")
        try:
            storage = StorageConfig(tuple(a for a in stored.split(",") if a), get("compression", _text, "text"),
                                    get("audio_dtype", _text, "text"))
        except DatasetError as exc:   # says which value is not one of the storage choices
            raise _malformed(path, f"attributes stored, compression, audio_dtype: {exc}") from None
        header = cls(
            engine=get("engine", _text, "text"), engine_version=get("engine_version", _text, "text"),
            sample_rate=get("sample_rate", _sample_rate, "a whole number of Hz, 8,000–192,000"),
            notes=get("notes", _notes, "(pitch, velocity) pairs: whole numbers, shape (K, 2), pitch 0–127, "
                                       "velocity 1–127"),
            hold=get("hold", _number(0.0, above=True), "a number of seconds > 0"),
            release=get("release", _number(0.0), "a number of seconds ≥ 0"),
            fixed_params=get("fixed_params", _json_object, "a JSON object"),
            mel_config=get("mel_config", _mel_config, "a JSON object of the mel settings (n_fft, hop, n_mels, "
                                                      "sample_rate: whole numbers ≥ 1)"),
            operators=get("operators", _flag, "true or false"),
            storage=storage,
            shapes=get("shapes", _shapes, "a JSON object of whole numbers ≥ 1: notes, samples, mels, frames"),
            command=get("command", _text, "text"), selection_hash=get("selection_hash", _text, "text"),
            selection_size=get("selection_size", _whole(0), "a whole number ≥ 0"),
            plugin=get("plugin", _text, "text") if "plugin" in attrs else "",
        )
        if header.shapes.notes != len(header.notes):
            raise _malformed(path, f"attribute shapes has {header.shapes.notes} notes, attribute notes "
                                   f"{len(header.notes)}")
        _check_timing(header, path)
        return header


def _check_timing(h: "DatasetHeader", path) -> None:
    """The attributes that say how long a note is and how it was analysed agree with the arrays'
    shapes (a hand-edited ``hold`` made ``DatasetReader.audio`` re-render notes of another length
    than the stored spectrograms')."""
    from .engines import n_samples

    s, mel = h.shapes, h.mel_config
    t = n_samples(h.hold, h.release, h.sample_rate)
    if s.samples != t:
        raise _malformed(path, f"attribute shapes has {s.samples} samples per note, but hold {h.hold:g} s + "
                               f"release {h.release:g} s at {h.sample_rate} Hz make {t}")
    if mel.get("sample_rate", h.sample_rate) != h.sample_rate:
        raise _malformed(path, f"attribute mel_config has sample_rate {mel['sample_rate']}, attribute sample_rate "
                               f"{h.sample_rate}")
    if "n_mels" in mel and s.mels != mel["n_mels"]:
        raise _malformed(path, f"attribute shapes has {s.mels} mel bands, attribute mel_config {mel['n_mels']}")
    if "hop" in mel and s.frames != 1 + s.samples // mel["hop"]:
        raise _malformed(path, f"attribute shapes has {s.frames} frames, but {s.samples} samples at mel_config's "
                               f"hop {mel['hop']} make {1 + s.samples // mel['hop']}")


def _malformed(path, what: str) -> DatasetError:
    return DatasetError(f"{path}: malformed dataset, {what}; render it again")


def _attribute(attrs, name: str, convert, expected: str, path):
    """Root attribute ``name`` through ``convert``, or a :class:`DatasetError` saying what it should be."""
    if name not in attrs:
        raise _malformed(path, f"missing attribute {name}")
    value = attrs[name]
    try:
        return convert(value)
    except (TypeError, ValueError, OverflowError, KeyError):
        shown = repr(value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise _malformed(path, f"attribute {name} = {shown}: expected {expected}") from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _scalar(value) -> float:
    x = np.asarray(value)
    if x.ndim != 0 or x.dtype.kind not in "iuf":
        raise TypeError(value)
    return float(x)


def _whole(lo: int, hi: float = float("inf")):
    def convert(value) -> int:
        x = _scalar(value)
        if not (x.is_integer() and lo <= x <= hi):
            raise ValueError(value)
        return int(x)
    return convert


def _number(lo: float, above: bool = False, nan: bool = False):
    def convert(value) -> float:
        x = _scalar(value)
        if nan and np.isnan(x):
            return x
        if not (np.isfinite(x) and (x > lo if above else x >= lo)):
            raise ValueError(value)
        return x
    return convert


def _sample_rate(value) -> int:
    from .engines import ENGINE_MIN_SAMPLE_RATE, MAX_SAMPLE_RATE   # files made before the 16 kHz floor too

    return _whole(ENGINE_MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)(value)


def _flag(value) -> bool:
    x = np.asarray(value)
    if x.ndim != 0 or x.dtype.kind not in "biu" or int(x) not in (0, 1):
        raise TypeError(value)
    return bool(x)


def _notes(value) -> tuple[tuple[int, int], ...]:
    x = np.asarray(value)
    if x.ndim != 2 or x.shape[1] != 2 or len(x) < 1 or x.dtype.kind not in "iuf" or not np.all(x == np.round(x)):
        raise ValueError(value)
    if not (np.all((0 <= x[:, 0]) & (x[:, 0] <= 127)) and np.all((1 <= x[:, 1]) & (x[:, 1] <= 127))):
        raise ValueError(value)
    return tuple((int(p), int(v)) for p, v in x)


def _json_object(value) -> dict:
    out = json.loads(_text(value))
    if not isinstance(out, dict):
        raise TypeError(value)
    return out


def _mel_config(value) -> dict:
    out = _json_object(value)
    for key in ("n_fft", "hop", "n_mels", "sample_rate"):
        if key in out:
            _whole(1)(out[key])
    if "floor_db" in out:
        _number(float("-inf"))(out["floor_db"])
    return out


def _shapes(value) -> "Shapes":
    d = _json_object(value)
    return Shapes(**{k: _whole(1)(d[k]) for k in ("notes", "samples", "mels", "frames")})


def parse_shard(text) -> tuple[int, int]:
    """A shard file's ``shard`` attribute ``"K/N"`` → ``(K, N)``, 0 ≤ K < N; ValueError otherwise."""
    k, n = (int(x) for x in _text(text).split("/"))
    if not 0 <= k < n:
        raise ValueError(text)
    return k, n


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


def check_file(f: h5py.File, path, allow_incomplete: bool = False, schema: bool = True) -> None:
    """Refuse a file that is not a complete dataset of this format version and (``schema``) parameter schema."""
    from .inputs import format_attr

    a = f.attrs
    fmt = format_attr(f, DatasetError)
    if fmt == "dexed-catalogue":
        raise DatasetError(catalogue_not_dataset(path))
    if fmt != FORMAT:
        raise DatasetError(f"{path}: not a dexed dataset (format={fmt!r}); "
                           "render one with `dexed-data render presets.h5 -o dataset.h5`")
    try:
        version = int(a.get("format_version", -1))
    except (TypeError, ValueError):   # not a number at all
        version = None
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format version {a.get('format_version')} but this dexed_data reads "
                           f"version {FORMAT_VERSION}; re-render it with this version")
    if schema and a.get("schema_hash") != SCHEMA_HASH:
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
    from .inputs import format_attr

    stored = tuple(a for a in str(f.attrs.get("stored", "")).split(",") if a)
    missing = [name for name in REQUIRED + stored if not isinstance(f.get(name), h5py.Dataset)]
    if missing and format_attr(f) == FORMAT and not bool(f.attrs.get("complete", False)):
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


#: What to do about a dataset that cannot be read.
_FIX = "render it again"


def check_dataset(f: h5py.File, path, allow_incomplete: bool = False, schema: bool = True) -> DatasetInfo:
    """Refuse an open file that is not a dataset every reader here can use; return its attributes.

    Checked once, where a dataset is opened (:class:`DatasetReader`, ``dexed-data list`` and
    ``merge``, ``preset_model.data``): format, version, completeness and (``schema``) the
    parameter schema (:func:`check_file`); every attribute's type and range; every array's
    shape and dtype against the header (K notes, the ``shapes`` attribute); the small per-preset
    arrays' values (ids, statuses, duplicate and occurrence rows in range, rendered rows' raw
    values within their parameters' maxima when the schema is this code's). The big ``/mel`` and ``/audio``
    arrays are checked by their shapes only (nothing of them is read).

    Raises:
        DatasetError: one line naming the file, the attribute or array (and preset row, id) and what to do.
    """
    from .inputs import check_array, check_ids, check_raw_values, check_rows, damaged

    try:
        check_file(f, path, allow_incomplete, schema)
        check_datasets(f, path)
        a = f.attrs
        shard = _attribute(a, "shard", parse_shard, "K/N with 0 ≤ K < N", path) if "shard" in a else None
        info = DatasetInfo(str(path), int(a["format_version"]), str(a["schema_hash"]),
                           _attribute(a, "complete", _flag, "true or false", path),
                           DatasetHeader.from_attrs(a, path),
                           _attribute(a, "mel_min_db", _number(float("-inf"), nan=True), "a number of dB", path),
                           _attribute(a, "mel_max_db", _number(float("-inf"), nan=True), "a number of dB", path),
                           None if shard is None else f"{shard[0]}/{shard[1]}")
        h = info.header
        n, k, s = f["presets/id"].shape[0], len(h.notes), h.shapes

        def array(name, shape, kind):
            return check_array(f, name, shape, kind, path, "dataset", DatasetError, _FIX)

        wanted = {"presets/raw": ((n, SOUND_BYTES), "uint8"), "presets/id": ((n,), "bytes"),
                  "presets/name": ((n,), "bytes"), "presets/sound_group": ((n,), "int"),
                  "presets/catalogue_row": ((n,), "int"), "status": ((n,), "int"), "silent": ((n,), "bool"),
                  "audible": ((n, k, 6), "bool"), "operator_db": ((n, k, 6), "float"), "peak": ((n, k), "float"),
                  "rms": ((n, k), "float"), "error": ((n,), "text")}
        optional = {"presets/near_group": ((n,), "bytes"), "fingerprint": ((n, 16), "uint8"),
                    "near_fingerprint": ((n, 16), "uint8"), "duplicate_of": ((n,), "int"),
                    "mel": ((n, k, s.mels, s.frames), "float"), "audio": ((n, k, s.samples), "float")}
        for name, (shape, kind) in list(wanted.items()) + [x for x in optional.items() if x[0] in f]:
            array(name, shape, kind)
        m = array("occurrences/preset", (None,), "int").shape[0]
        for name, kind in (("path", "text"), ("message", "int"), ("voice", "int"), ("name", "bytes")):
            array(f"occurrences/{name}", (m,), kind)

        ids = check_ids(f["presets/id"][...], "presets/id", path, "dataset", DatasetError, _FIX)

        def rows(name, lo, hi, meaning):
            check_rows(f[name][...], name, lo, hi, path, "dataset", DatasetError, _FIX, meaning,
                       ids if name != "occurrences/preset" else None)

        rows("status", STATUS_OK if info.complete else STATUS_PENDING, STATUS_FAILED + 1,
             "1 (rendered) or 2 (failed)" + ("" if info.complete else " or 0 (pending)"))
        rows("presets/catalogue_row", 0, np.inf, "a row of the catalogue (≥ 0)")
        rows("presets/sound_group", 0, np.inf, "a row of the catalogue (≥ 0)")
        rows("occurrences/preset", 0, n, f"a row of /presets (0–{n - 1})")
        if "duplicate_of" in f:   # −1, or the earlier row it duplicates
            rows("duplicate_of", -1, np.arange(n), "-1 or an earlier row")
        bounds = (info.mel_min_db, info.mel_max_db)
        if info.complete and "mel" in f and not (np.isfinite(bounds).all() and bounds[0] <= bounds[1]) \
                and np.any((f["status"][...] == STATUS_OK) & ~f["silent"][...]):   # the scale readers map /mel with
            raise _malformed(path, f"attributes mel_min_db, mel_max_db are {bounds[0]}, {bounds[1]} while presets "
                                   "that sound were rendered: finite bounds, min ≤ max, are expected")
        rendered = f["status"][...] == STATUS_OK
        for name in ("peak", "rms"):     # a rendered note's level is a finite number ≥ 0: what info, report and
            values = f[name][...]        # the silence checks read (NaN was counted as usable and left out of plots)
            bad = np.flatnonzero(rendered & ~np.all(np.isfinite(values) & (values >= 0), axis=1))
            if bad.size:
                raise _malformed(path, f"/{name} of rendered preset row {bad[0]} (id {ids[bad[0]]}) is "
                                       f"{values[bad[0]].tolist()}: levels are finite numbers ≥ 0"
                                       + (f" ({bad.size} rows)" if bad.size > 1 else ""))
        if info.schema_hash == SCHEMA_HASH:   # another schema's maxima are not these (and that file is refused)
            # rendered rows only: a failed row keeps the values its engine refused (its /error says why)
            check_raw_values(np.where(rendered[:, None], f["presets/raw"][...], 0), ids, path, DatasetError,
                             "import and render it again")
    except (KeyError, OSError, ValueError, TypeError) as exc:   # data cut off, an array where a value was
        raise damaged(path, exc, DatasetError) from None
    return info


class DatasetReader:
    """Read a rendered dataset; small arrays are loaded at open, audio/mel per preset on demand.

    Example::

        >>> with DatasetReader("dataset.h5") as ds:            # doctest: +SKIP
        ...     x = ds.mel(ds.usable()[0])                     # (K, 257, frames) float32 dB
        ...     lo, hi = ds.mel_bounds                         # scale to [-1, 1] with these
    """

    def __init__(self, path, allow_incomplete: bool = False):
        from .inputs import damaged, open_hdf5
        from .outputs import file_identity

        self.path = str(path)
        self._f = open_hdf5(path, "dataset", DatasetError)
        #: the file this reader holds (a torch dataset made from it must read the same one)
        self.identity = file_identity(path)
        try:
            self.info = check_dataset(self._f, self.path, allow_incomplete)
            p = self._f["presets"]
            self.ids: list[str] = [x.decode() for x in p["id"][...]]
            self._row_of: dict[str, int] | None = None
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

    def _rows_by_id(self) -> dict[str, int]:
        if self._row_of is None:   # built once: a list scan per id made --ids files of many ids quadratic (A9)
            self._row_of = {}
            for r, i in enumerate(self.ids):
                self._row_of.setdefault(i, r)
        return self._row_of

    def has(self, preset_id: str) -> bool:
        """Whether a preset with id ``preset_id`` is in the file."""
        return isinstance(preset_id, str) and preset_id in self._rows_by_id()

    def index(self, preset_id: str) -> int:
        """Row of the preset with id ``preset_id``."""
        try:
            return self._rows_by_id()[preset_id]
        except (KeyError, TypeError):
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
