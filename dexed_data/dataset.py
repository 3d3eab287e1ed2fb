"""The rendered dataset file (``dataset.h5``): layout, worker-side chunk encoding, writer, reader, merge.

One HDF5 file per dataset, readable with plain h5py (no filter plug-ins): the big per-preset arrays
(``/audio``, ``/mel``) are chunked one preset per chunk, stored raw or through HDF5's built-in
shuffle+LZF / shuffle+gzip filters; everything else is small. See ``docs/FORMAT.md``.

Chunks are encoded by the *workers* (:class:`ChunkEncoder`) and written by the single writer with
``write_direct_chunk``, so compression never runs serially in the writer. A dataset is assembled
from *blocks* (segment files of a render job, or shard files of a merge) by copying the encoded
chunks untouched, which is why a resumed run, a parallel run and a merge of shards all give the
same file as one uninterrupted serial run.

Example::

    >>> from dexed_data.dataset import DatasetReader
    >>> with DatasetReader("dataset.h5") as ds:          # doctest: +SKIP
    ...     i = ds.usable()[0]
    ...     ds.mel(i).shape, ds.raw[i].shape             # ds.audio(i) with --store audio,mel
    ((6, 257, 345), (145,))
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from .errors import DatasetError
from .schema import SCHEMA_HASH, format_fixed, schema_table

FORMAT = "dexed-dataset"
FORMAT_VERSION = 1

#: Per-preset arrays big enough to be chunked one preset per chunk; what ``--store`` chooses among.
BIG_ARRAYS = ("audio", "mel")
#: Per-preset small arrays, always stored: name → (dtype, shape after (N,), with K = notes).
STATUS_PENDING, STATUS_OK, STATUS_FAILED = 0, 1, 2
#: What the float arrays (``/mel``, ``/audio``, ``/peak``, ``/rms``, ``/operator_db``) hold in the
#: rows of failed presets: NaN, which no reader can take for sound (zeros in /mel are full scale).
FAILED_FILL = float("nan")
COMPRESSIONS = ("none", "lzf") + tuple(f"gzip-{n}" for n in range(1, 10))


# ------------------------------------------------------------------------------------------------
# storage choices and worker-side encoding
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    """What is stored for the big per-preset arrays and how.

    Attributes:
        arrays: subset of ``("audio", "mel")``; the small arrays (levels, peak, RMS, status) are always stored.
        compression: ``"none"`` (default: fastest, see docs/FORMAT.md), ``"lzf"`` (HDF5 shuffle+LZF,
            ~45 % smaller; same data but not the same file bytes from run to run: liblzf leaves
            its hash table uninitialised) or ``"gzip-N"`` (shuffle+deflate level N, ~50 % smaller,
            byte-reproducible, for sharing).
        audio_dtype: ``"float16"`` (default) or ``"float32"``; audio is never clipped in either.

    Example::

        >>> StorageConfig.parse("mel", "gzip-4")
        StorageConfig(arrays=('mel',), compression='gzip-4', audio_dtype='float16')
    """

    arrays: tuple[str, ...] = BIG_ARRAYS
    compression: str = "none"
    audio_dtype: str = "float16"

    def __post_init__(self) -> None:
        bad = [a for a in self.arrays if a not in BIG_ARRAYS]
        if bad or len(set(self.arrays)) != len(self.arrays):
            raise DatasetError(f"storage arrays {self.arrays!r}: choose among {BIG_ARRAYS} (comma-separated, no repeats)")
        if self.compression not in COMPRESSIONS:
            raise DatasetError(f"compression {self.compression!r}: use none, lzf or gzip-1 … gzip-9")
        if self.audio_dtype not in ("float16", "float32"):
            raise DatasetError(f"audio dtype {self.audio_dtype!r}: use float16 or float32")
        # keep the canonical order so that "mel,audio" and "audio,mel" are the same job
        object.__setattr__(self, "arrays", tuple(a for a in BIG_ARRAYS if a in self.arrays))

    @classmethod
    def parse(cls, store: str = "audio,mel", compression: str = "none", audio_dtype: str = "float16") -> "StorageConfig":
        """Build from CLI strings: ``store`` comma-separated (``"audio,mel"``, ``"mel"``)."""
        arrays = tuple(s.strip() for s in store.split(",") if s.strip())
        return cls(arrays, compression, audio_dtype)

    def dtype(self, name: str) -> np.dtype:
        """On-disk dtype of big array ``name`` (mel is always float16 dB)."""
        return np.dtype(self.audio_dtype if name == "audio" else "float16").newbyteorder("<")

    def filters(self) -> dict:
        """``h5py.Group.create_dataset`` keyword arguments for this compression."""
        if self.compression == "none":
            return {}
        if self.compression == "lzf":
            return {"compression": "lzf", "shuffle": True}
        return {"compression": "gzip", "compression_opts": int(self.compression[5:]), "shuffle": True}


class ChunkEncoder:
    """Encode one preset's array into the exact chunk bytes HDF5 stores for a :class:`StorageConfig`.

    Runs in the workers. Compressed chunks are produced by h5py itself on an in-memory file, so
    the bytes are whatever the filter pipeline writes and any h5py reads them back.

    Example::

        >>> enc = ChunkEncoder(StorageConfig(compression="none"))
        >>> mask, data = enc.encode("mel", np.zeros((6, 257, 345), np.float32))
        >>> mask, len(data)
        (0, 1063980)
    """

    def __init__(self, storage: StorageConfig):
        self.storage = storage
        self._count = 0

    def encode(self, name: str, array: np.ndarray) -> tuple[int, bytes]:
        """``array`` (one preset, e.g. ``(K, T)`` audio or ``(K, mels, frames)`` dB) → (filter mask, chunk bytes).

        The mask is HDF5's: non-zero when a filter was skipped because it did not make the chunk
        smaller (LZF on noise); ``write_direct_chunk`` must be given it.
        """
        a = as_dtype(array, self.storage.dtype(name))
        if self.storage.compression == "none":
            return 0, a.tobytes()
        self._count += 1
        with h5py.File(f"chunk-{os.getpid()}-{self._count}", "w", driver="core", backing_store=False) as f:
            d = f.create_dataset("x", shape=(1,) + a.shape, dtype=a.dtype, chunks=(1,) + a.shape,
                                 **self.storage.filters())
            d[0] = a
            mask, data = d.id.read_direct_chunk((0,) * (a.ndim + 1))
        return int(mask), bytes(data)


def as_dtype(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as a C-contiguous array of ``dtype``; float32 → float16 through torch, which gives
    the same IEEE round-to-nearest-even values ~30× faster than numpy (3 ms per preset in the workers)."""
    dtype = np.dtype(dtype)
    array = np.asarray(array)
    if dtype == np.float16 and array.dtype == np.float32:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).half().numpy()
    return np.ascontiguousarray(array, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# what one preset's render gives, and the file header
# ------------------------------------------------------------------------------------------------


@dataclass
class RowResult:
    """One preset's rendered data, as a worker returns it (chunks already encoded).

    ``row`` is the position in the job's selection; arrays are per note (K notes), operators OP1 first.
    """

    row: int
    status: int                               # STATUS_OK or STATUS_FAILED
    error: str = ""
    chunks: dict[str, tuple[int, bytes]] = field(default_factory=dict)   # "audio"/"mel" → (filter mask, chunk)
    operator_db: np.ndarray | None = None     # (K, 6) float32, NaN when the engine gives no operators
    audible: np.ndarray | None = None         # (K, 6) bool
    peak: np.ndarray | None = None            # (K,) float32, plug-in scale
    rms: np.ndarray | None = None             # (K,) float32
    silent: bool = False                      # near-silent on every note
    mel_min: float = float("nan")             # over the stored (float16) dB values
    mel_max: float = float("nan")
    fingerprint: np.ndarray | None = None     # (16,) uint8, exact audio fingerprint (dexed_data.fingerprint)
    near_fingerprint: np.ndarray | None = None  # (16,) uint8, near key


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


def _small_specs(k: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    return {
        "status": (np.dtype(np.uint8), ()),
        "silent": (np.dtype(bool), ()),
        "operator_db": (np.dtype("<f4"), (k, 6)),
        "audible": (np.dtype(bool), (k, 6)),
        "peak": (np.dtype("<f4"), (k,)),
        "rms": (np.dtype("<f4"), (k,)),
        "fingerprint": (np.dtype(np.uint8), (16,)),       # exact audio fingerprint, see dexed_data.fingerprint
        "near_fingerprint": (np.dtype(np.uint8), (16,)),
    }


def _combine_bounds(bounds: Iterable[tuple[float, float]]) -> tuple[float, float]:
    lo, hi = float("nan"), float("nan")
    for a, b in bounds:
        if not np.isnan(a):
            lo = a if np.isnan(lo) else min(lo, a)
        if not np.isnan(b):
            hi = b if np.isnan(hi) else max(hi, b)
    return lo, hi


# ------------------------------------------------------------------------------------------------
# segment files: the crash-safe unit of a render job
# ------------------------------------------------------------------------------------------------


class SegmentWriter:
    """Collect the rows ``[start, stop)`` of a job in memory; :meth:`finish` writes the segment file.

    With ``big=False`` the segment holds the small arrays only: the big ones went straight into
    their place in the dataset file (:class:`RowSink`, uncompressed storage), and the segment file
    is the journal entry saying that its rows are there.

    A segment file only exists under its final name once every row is in it (written atomically
    by :func:`dexed_data.outputs.write_bytes`), so a kill at any moment leaves whole segments only.
    The big arrays' chunks go to the file as they come; the small per-preset arrays are kept in
    memory and written by :meth:`finish` (one h5py write per preset and array costs the single
    writer ~5 ms per preset, as much as a tenth of a worker's render).
    """

    def __init__(self, path: Path, start: int, stop: int, storage: StorageConfig, shapes: Shapes,
                 big: bool = True):
        self.path, self.start, self.stop = Path(path), start, stop
        # In memory until finished (a segment is ~64 MB), then written as plain bytes: a full disk
        # fails in one ordinary write (clean error, no half-written HDF5 that can crash h5py).
        self._f = h5py.File(f"{self.path.name}-{os.getpid()}", "w", driver="core", backing_store=False,
                            track_order=False)
        n = stop - start
        self._f.attrs.update({"start": start, "stop": stop})
        self._big = {name: self._f.create_dataset(name, shape=(n,) + shapes.of(name), dtype=storage.dtype(name),
                                                  chunks=(1,) + shapes.of(name), track_times=False,
                                                  fillvalue=FAILED_FILL, **storage.filters())
                     for name in (storage.arrays if big else ())}
        self._zeros = {name: (0,) * len(shapes.of(name)) for name in storage.arrays}
        self._small = {name: np.full((n,) + shape, FAILED_FILL if dtype.kind == "f" else 0, dtype)
                       for name, (dtype, shape) in _small_specs(shapes.notes).items()}
        self._errors = [""] * n
        self._bounds: list[tuple[float, float]] = []
        self._filled = 0

    @property
    def full(self) -> bool:
        return self._filled == self.stop - self.start

    def add(self, r: RowResult) -> None:
        """Store one preset's result (any order)."""
        i = r.row - self.start
        self._small["status"][i] = r.status
        if r.status == STATUS_OK:
            for name, d in self._big.items():
                mask, data = r.chunks[name]
                d.id.write_direct_chunk((i,) + self._zeros[name], data, filter_mask=mask)
            for name, values in self._small.items():   # every small array is a RowResult field
                if name != "status":
                    values[i] = getattr(r, name)
            if not r.silent:
                self._bounds.append((r.mel_min, r.mel_max))
        else:
            self._errors[i] = r.error
        self._filled += 1

    def finish(self) -> None:
        """Write the small arrays and the segment's mel bounds, close and atomically publish the file."""
        for name, values in self._small.items():
            self._f.create_dataset(name, data=values, track_times=False)
        self._f.create_dataset("error", data=np.array(self._errors, dtype=object), dtype=h5py.string_dtype(),
                               track_times=False)
        lo, hi = _combine_bounds(self._bounds)
        self._f.attrs.update({"mel_min_db": lo, "mel_max_db": hi})
        self._f.flush()
        image = self._f.id.get_file_image()
        self._f.close()
        from .outputs import write_bytes

        write_bytes(self.path, image, "segment")

    def abandon(self) -> None:
        """Close without publishing (Ctrl-C, an error): nothing of the segment is on disk."""
        try:
            self._f.close()
        except Exception:  # noqa: BLE001 - closing a half-written temp file must not mask the interrupt
            pass


# ------------------------------------------------------------------------------------------------
# the dataset file: layout first, rows in place, small arrays last
# ------------------------------------------------------------------------------------------------


def in_place(storage: StorageConfig) -> bool:
    """Whether the big arrays are written straight into their final place (uncompressed storage:
    every row has the same size, so its bytes have a fixed address in the file)."""
    return storage.compression == "none"


def _contiguous(f: h5py.File, name: str, shape: tuple[int, ...], dtype: np.dtype) -> h5py.Dataset:
    """A contiguous dataset whose space is allocated at creation and never filled: its address
    is known at once and nothing is written for it (the file is sparse until rows arrive)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    dcpl.set_obj_track_times(False)   # no timestamps: the same job gives the same bytes
    space = h5py.h5s.create_simple(shape)
    return h5py.Dataset(h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl))


def create_layout(partial: Path, header: DatasetHeader, presets: PresetTable, extra_attrs: dict | None = None) -> None:
    """Create the unfinished dataset file ``partial``: attributes (``complete = False``), the preset
    table, and the big arrays with their space reserved.

    Uncompressed, ``/audio`` and ``/mel`` are contiguous and their whole extent is reserved with
    ``posix_fallocate`` (a disk too small fails here, before any rendering, and never half-way);
    rows are then written in place by :class:`RowSink`. Compressed, they are chunked one preset per
    chunk and filled by :func:`finish_layout`. The file appears whole or not at all
    (``partial.tmp``, fsync, rename).
    """
    from .outputs import publish

    tmp = partial.with_name(partial.name + ".tmp")
    n = len(presets)
    try:
        with h5py.File(tmp, "w") as f:
            attrs = header.attrs()
            attrs.update(extra_attrs or {})
            attrs.update(complete=False, mel_min_db=float("nan"), mel_max_db=float("nan"))
            f.attrs.update(attrs)
            _write_presets(f, presets)
            for name in header.storage.arrays:
                shape = (n,) + header.shapes.of(name)
                if in_place(header.storage):
                    _contiguous(f, name, shape, header.storage.dtype(name))
                else:
                    f.create_dataset(name, shape=shape, dtype=header.storage.dtype(name), chunks=(1,) + shape[1:],
                                     track_times=False, fillvalue=FAILED_FILL, **header.storage.filters())
        if in_place(header.storage):
            fd = os.open(tmp, os.O_RDWR)
            try:
                for offset, size in _slots(tmp, header).values():
                    os.posix_fallocate(fd, offset, size * n)
            finally:
                os.close(fd)
        publish(tmp, partial)
    except RuntimeError as exc:   # HDF5 reports a failed write (full disk, file size limit) this way
        from .errors import OutputError
        from .inputs import first_line

        raise OutputError(f"cannot write {partial}: {first_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _slots(path: Path, header: DatasetHeader) -> dict[str, tuple[int, int]]:
    """Big array name → (byte offset of row 0 in the file, bytes per row), for an in-place layout."""
    with h5py.File(path, "r") as f:
        out = {}
        for name in header.storage.arrays:
            d = f[name]
            offset = d.id.get_offset()
            if offset is None or d.chunks is not None:
                raise DatasetError(f"{path}: /{name} is not laid out for in-place writing; delete it and rerun")
            out[name] = (int(offset), int(np.prod(d.shape[1:])) * d.dtype.itemsize)
    return out


class RowSink:
    """Write rows of the big arrays straight into their place in an in-place layout (``pwrite``).

    Any process may hold one (the render workers do); rows are disjoint byte ranges, so writers
    never meet, and HDF5's own metadata is never touched. :meth:`sync` makes the rows durable
    before the segment file that records them is published.
    """

    def __init__(self, path: Path, header: DatasetHeader):
        self.path = Path(path)
        self.slots = _slots(self.path, header)
        self._nan = {name: np.full(header.shapes.of(name), FAILED_FILL, header.storage.dtype(name)).tobytes()
                     for name in header.storage.arrays}
        self._fd = os.open(self.path, os.O_WRONLY)

    def write_bytes(self, row: int, name: str, data) -> None:
        """Row ``row`` of ``name``: exactly one row's bytes, in the dataset's dtype."""
        offset, size = self.slots[name]
        view = memoryview(data).cast("B")
        if len(view) != size:
            raise DatasetError(f"row {row} of /{name}: {len(view)} bytes, expected {size}")
        at = offset + row * size
        while view:   # pwrite may write less than asked (signals, huge rows)
            done = os.pwrite(self._fd, view, at)
            view, at = view[done:], at + done

    def write(self, row: int, result: RowResult) -> None:
        """Row ``row`` from a worker's result: its encoded chunks, or NaN for a failed preset."""
        for name in self.slots:
            self.write_bytes(row, name, result.chunks[name][1] if result.status == STATUS_OK else self._nan[name])

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RowSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Block:
    """An open source of per-preset data: rows ``local`` of ``file`` become rows ``rows`` of the output.

    Its small arrays (status, levels, fingerprints, errors) always come from it; its big arrays
    only when the output's are not written in place already.
    """

    file: h5py.File
    local: np.ndarray   # row indices inside ``file``
    rows: np.ndarray    # row indices in the output, same length
    bounds: tuple[float, float]


def _sources(blocks: Sequence[Block], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Output row → (block index, row in that block); every row covered exactly once."""
    src_block = np.full(n, -1, dtype=np.int64)
    src_local = np.zeros(n, dtype=np.int64)
    for b, block in enumerate(blocks):
        if np.any(src_block[block.rows] != -1):
            raise DatasetError(f"{block.file.filename}: rows given twice; the parts overlap")
        src_block[block.rows] = b
        src_local[block.rows] = block.local
    if np.any(src_block < 0):
        raise DatasetError(f"{int(np.sum(src_block < 0))} of {n} presets are missing from the parts; "
                           "rerun the render (or give every shard to merge)")
    return src_block, src_local


def write_dataset(path: Path, header: DatasetHeader, presets: PresetTable, blocks: Sequence[Block],
                  extra_attrs: dict | None = None) -> None:
    """Write a complete dataset to ``path`` via ``path.partial`` and an atomic rename (``merge``).

    ``blocks`` must cover every row of ``presets`` exactly once. Rows are copied in output order:
    raw bytes into an in-place layout, encoded chunks untouched (``read_direct_chunk`` →
    ``write_direct_chunk``) into a compressed one, so the file's data depend only on the data,
    not on how or in how many pieces it was rendered.
    """
    path = Path(path)
    src_block, src_local = _sources(blocks, len(presets))
    partial = path.with_name(path.name + ".partial")
    from .outputs import make_parents, publish

    make_parents(path)
    need = _bytes_needed(presets, blocks, header)
    free = shutil.disk_usage(path.parent).free
    if need > free:   # refuse before HDF5 meets a full disk half-way (see SegmentWriter)
        raise DatasetError(f"cannot write {path}: it needs about {need / 1e6:,.1f} MB and only {free / 1e6:,.1f} MB "
                           f"are free on that disk; free space and rerun")
    try:
        create_layout(partial, header, presets, extra_attrs)
        if in_place(header.storage):
            with RowSink(partial, header) as sink:
                for row in range(len(presets)):
                    block = blocks[src_block[row]]
                    for name in header.storage.arrays:
                        value = block.file[name][int(src_local[row])]   # failed rows hold NaN already
                        sink.write_bytes(row, name, np.ascontiguousarray(value, header.storage.dtype(name)))
                sink.sync()
        finish_layout(partial, header, blocks)
        publish(partial, path)
    except OSError as exc:   # a full disk, a folder that vanished: nothing half-written stays behind
        from .inputs import first_line

        raise DatasetError(f"cannot write {path}: {first_line(exc)}; nothing was written") from None
    finally:
        partial.unlink(missing_ok=True)


def _bytes_needed(presets: PresetTable, blocks: Sequence[Block], header: DatasetHeader) -> int:
    """A generous estimate of a dataset file's size: its big arrays as stored in the blocks, plus the
    small arrays and provenance (x 2) and 1 MB of HDF5 metadata."""
    big = sum(block.file[name].id.get_storage_size() for block in blocks for name in header.storage.arrays
              if name in block.file)
    small = sum(np.asarray(v).nbytes if np.asarray(v).dtype.kind != "O" else 64 * len(v)
                for v in presets.occurrences.values())
    small += len(presets) * (145 + 64 + 64 * header.shapes.notes)
    return int(big + 2 * small + 1_000_000)


#: Datasets :func:`finish_layout` writes (a rerun after a kill during it writes them again).
_FINISHED = tuple(_small_specs(1)) + ("error", "duplicate_of")


def finish_layout(partial: Path, header: DatasetHeader, blocks: Sequence[Block]) -> None:
    """Complete a file made by :func:`create_layout`: the small arrays and errors from ``blocks``,
    the duplicates by sound over the whole file, the mel bounds, then ``complete = True``.

    Compressed big arrays are copied here from the blocks' chunks; in-place ones are already
    written. Safe to run again on a file it was interrupted on.
    """
    with h5py.File(partial, "r+") as f:
        n = f["presets/id"].shape[0]
        src_block, src_local = _sources(blocks, n)
        small = _small_specs(header.shapes.notes)
        values = {name: np.zeros((n,) + shape, dtype) for name, (dtype, shape) in small.items()}
        errors = np.empty(n, dtype=object)
        for block in blocks:
            for name in small:
                values[name][block.rows] = block.file[name][...][block.local]
            errors[block.rows] = [e.decode() if isinstance(e, bytes) else e for e in block.file["error"][...][block.local]]
        status = values["status"]
        if np.any(status == STATUS_PENDING):
            raise DatasetError(f"{int(np.sum(status == STATUS_PENDING))} presets were never rendered; rerun the render")
        if not in_place(header.storage):
            for name in header.storage.arrays:
                d = f[name]
                zeros = (0,) * (d.ndim - 1)
                for row in np.flatnonzero(status == STATUS_OK):
                    src = blocks[src_block[row]].file[name]
                    mask, data = src.id.read_direct_chunk((int(src_local[row]),) + zeros)
                    d.id.write_direct_chunk((int(row),) + zeros, data, filter_mask=mask)
        for name in _FINISHED:
            if name in f:
                del f[name]
        for name in small:
            f.create_dataset(name, data=values[name], track_times=False)
        f.create_dataset("error", data=errors.astype(str).astype(object), dtype=h5py.string_dtype(),
                         track_times=False)
        # dedup by sound over the whole file, so a merge finds duplicates across shards
        from .fingerprint import duplicate_of

        f.create_dataset("duplicate_of", data=duplicate_of(values["fingerprint"], status == STATUS_OK),
                         track_times=False)
        lo, hi = _combine_bounds(block.bounds for block in blocks)
        f.attrs["mel_min_db"], f.attrs["mel_max_db"] = lo, hi
        f.attrs["complete"] = True


def _write_presets(f: h5py.File, p: PresetTable) -> None:
    g = f.create_group("presets", track_order=False)
    g.create_dataset("raw", data=np.asarray(p.raw, np.uint8), track_times=False)
    g.create_dataset("id", data=np.asarray(p.ids, "S16"), track_times=False)
    g.create_dataset("name", data=np.asarray(p.names, "S10"), track_times=False)
    g.create_dataset("sound_group", data=np.asarray(p.sound_group, np.int32), track_times=False)
    g.create_dataset("catalogue_row", data=np.asarray(p.catalogue_row, np.int32), track_times=False)
    if p.near_group is not None:
        g.create_dataset("near_group", data=np.asarray(p.near_group, "S16"), track_times=False)
    # the parameter schema itself, so that plain-h5py readers can name the raw values
    f.create_group("schema", track_order=False).attrs["table"] = json.dumps(schema_table())
    occ = f.create_group("occurrences", track_order=False)
    for key in sorted(p.occurrences):
        a = np.asarray(p.occurrences[key])
        if key == "name":  # 10 DX7 name bytes, like /presets/name: real names hold NULs, which HDF5 strings cannot
            from .catalogue import _names_s10

            occ.create_dataset(key, data=a if a.dtype.kind == "S" else _names_s10(a), track_times=False)
        elif a.dtype.kind in "OU":
            occ.create_dataset(key, data=a.astype(str).astype(object), dtype=h5py.string_dtype(), track_times=False)
        else:
            occ.create_dataset(key, data=a, track_times=False)


def _read_presets(f: h5py.File) -> PresetTable:
    g, occ = f["presets"], f["occurrences"]
    occurrences = {}
    for key in occ:
        d = occ[key]
        if d.dtype.kind == "S":   # names: decoded as the catalogue does
            occurrences[key] = np.asarray([v.decode("ascii", "replace").ljust(10) for v in d[...]], dtype=object)
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


def check_file(f: h5py.File, path, allow_incomplete: bool = False) -> None:
    """Refuse a file that is not a complete dataset of this format version and schema."""
    a = f.attrs
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
            self.names: list[str] = [x.decode("ascii", "replace").ljust(10) for x in p["name"][...]]
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

    @property
    def file(self) -> h5py.File:
        """The open h5py file, for anything not wrapped here."""
        return self._f

    @property
    def mel_bounds(self) -> tuple[float, float]:
        """(min, max) dB over every rendered, non-silent preset: the fixed scaling bounds."""
        return self.info.mel_min_db, self.info.mel_max_db

    @property
    def errors(self) -> dict[str, str]:
        """Failed presets: id → reason."""
        err = self._f["error"].asstr()[...]
        return {self.ids[i]: err[i] for i in np.flatnonzero(self.status == STATUS_FAILED)}

    def index(self, preset_id: str) -> int:
        """Row of the preset with id ``preset_id``."""
        try:
            return self.ids.index(preset_id)
        except ValueError:
            raise DatasetError(f"{self.path}: no preset with id {preset_id!r}") from None

    def _big(self, name: str, i: int) -> np.ndarray:
        if name not in self._f:
            raise DatasetError(f"{self.path}: {name} is not stored (stored: {self.info.header.storage.arrays}); "
                               f"render with --store including {name}")
        return self._f[name][int(i)].astype(np.float32)

    def mel(self, i: int) -> np.ndarray:
        """Mel spectrograms of preset row ``i``: ``(K, mels, frames)`` float32 dB (floor −120)."""
        return self._big("mel", i)

    def audio(self, i: int) -> np.ndarray:
        """Audio of preset row ``i``: ``(K, T)`` float32 at plug-in scale, never clipped."""
        return self._big("audio", i)

    def usable(self, keep_duplicates: bool = False) -> np.ndarray:
        """Rows rendered OK, not near-silent and (unless ``keep_duplicates``) not a duplicate by
        sound of an earlier row: the default training set, ascending."""
        keep = (self.status == STATUS_OK) & ~self.silent
        if not keep_duplicates:
            keep &= self.duplicate_of < 0
        return np.flatnonzero(keep)


def describe(path) -> str:
    """A human summary of a dataset file (what ``dexed-data info`` prints for a dataset)."""
    with DatasetReader(path, allow_incomplete=True) as ds:
        h, info = ds.info.header, ds.info
        n = len(ds)
        ok = int(np.sum(ds.status == STATUS_OK))
        failed = int(np.sum(ds.status == STATUS_FAILED))
        silent = int(np.sum(ds.silent & (ds.status == STATUS_OK)))
        lines = [
            f"{path}: dexed dataset, format version {info.format_version}, schema {info.schema_hash}"
            + ("" if info.complete else "  ** INCOMPLETE **") + (f", shard {info.shard}" if info.shard else ""),
            f"  engine        {h.engine} {h.engine_version}, {h.sample_rate} Hz, hold {h.hold:g} s + release {h.release:g} s",
            f"  notes         {', '.join(f'{p}:{v}' for p, v in h.notes)}",
            f"  presets       {n} ({ok} ok, {failed} failed, {silent} near-silent; {len(ds.usable())} usable)",
            f"  mel bounds    {info.mel_min_db:.2f} … {info.mel_max_db:.2f} dB",
            f"  fixed params  {format_fixed(h.fixed_params)}",
        ]
        from .report import summarize  # dataset quality: dedup by sound, silence per note

        lines += summarize(ds).lines()
        for name in BIG_ARRAYS:
            if name in ds.file:
                d = ds.file[name]
                stored = d.id.get_storage_size()
                lines.append(f"  {name:<13} {d.shape} {d.dtype}, {h.storage.compression}, "
                             f"{stored / max(ok, 1) / 1e6:.3f} MB/preset, {stored / 1e9:.2f} GB")
            else:
                lines.append(f"  {name:<13} not stored")
        size = os.path.getsize(path)
        lines.append(f"  file size     {size / 1e9:.3f} GB")
        lines.append(f"  command       {h.command}")
        if failed:
            for pid, reason in list(ds.errors.items())[:5]:
                lines.append(f"  failed        {pid}: {reason}")
    return "\n".join(lines)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A 32-bit float mono WAV file of ``audio`` ``(T,)`` (not clipped), built in memory so that
    writing it goes through the one atomic, disk-full-safe path (libsndfile's own writes do not)."""
    import io

    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.asarray(audio, np.float32), int(sample_rate), subtype="FLOAT", format="WAV")
    return buf.getvalue()


def export_wav(path, out_dir, ids: Sequence[str] | None = None, limit: int | None = None,
               force: bool = False) -> list[Path]:
    """Write presets' audio as 32-bit float wav files (not clipped), one per note; returns the files.

    Files are named ``ID_NAME_PITCH-VELOCITY.wav`` (name made file-safe). ``ids`` picks presets in
    the order given; without ``ids``, the first ``limit`` (default 10) rendered presets. When the
    file stores no audio (the default), the presets are rendered again from ``/presets/raw`` with
    the file's settings: rendering is deterministic, so this is the audio the dataset was made from.

    Each file is written atomically; existing files of the same names are refused unless
    ``force`` (see :mod:`dexed_data.outputs`), all checked before the first file is written.

    Raises:
        DatasetError: unknown id, a preset that failed to render, or no audio stored and the
            file's engine cannot be rebuilt here (another engine version, a plug-in).
        OutputError: a file exists (without ``force``) or the folder cannot be written.
    """
    from .outputs import check_folder, write_bytes

    if limit is not None and limit < 1:
        raise DatasetError(f"--limit {limit}: must be ≥ 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        from .errors import OutputError

        raise OutputError(f"output folder {out_dir} is a file; give a folder")
    with DatasetReader(path) as ds:
        h = ds.info.header
        engine = None   # re-render when the file has no audio (rendering is deterministic)
        if "audio" not in ds.file:
            from .engines import EngineSpec, make_engine

            engine = make_engine(EngineSpec(h.engine, h.sample_rate)) if h.engine == "dexed" else None
            if engine is None or engine.version != h.engine_version:
                raise DatasetError(f"{path}: audio is not stored and cannot be re-rendered here (made with "
                                   f"{h.engine} {h.engine_version}); render with --store audio,mel")
        if ids is None:
            rows = list(np.flatnonzero(ds.status == STATUS_OK)[: 10 if limit is None else limit])
        else:
            rows = [ds.index(i) for i in ids][:limit]
            failed = [ds.ids[r] for r in rows if ds.status[r] != STATUS_OK]
            if failed:
                raise DatasetError(f"{path}: preset(s) {', '.join(failed[:5])} failed to render; no audio to export")
        def names(r: int) -> list[str]:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in ds.names[r].strip()) or "unnamed"
            return [f"{ds.ids[r]}_{safe}_{pitch}-{velocity}.wav" for pitch, velocity in ds.info.notes]

        check_folder(out_dir, [n for r in rows for n in names(r)], force=force)
        written = []
        for r in rows:
            audio = ds.audio(r) if engine is None else engine.render(ds.raw[r], h.notes, h.hold, h.release).audio
            for name, note in zip(names(r), audio):
                target = out_dir / name
                write_bytes(target, wav_bytes(note, ds.info.sample_rate), "wav file")
                written.append(target)
    return written


# ------------------------------------------------------------------------------------------------
# merging shards
# ------------------------------------------------------------------------------------------------

_JOB_ATTRS = ("engine", "engine_version", "sample_rate", "hold", "release", "fixed_params", "mel_config",
              "operators", "stored", "compression", "audio_dtype", "shapes", "command", "selection_hash",
              "selection_size", "segment_size")


def merge(shard_paths: Sequence, out_path, force: bool = False) -> Path:
    """Join the shard files of one job (``--shard K/N``, all N of them) into one dataset.

    The result equals the file a single run of the same command writes. Returns ``out_path``,
    which may not be one of the shards and is refused if it exists, unless ``force``
    (see :mod:`dexed_data.outputs`).
    """
    from .inputs import damaged, open_hdf5
    from .outputs import check_output

    if not shard_paths:
        raise DatasetError("merge: give the shard files to join")
    check_output(out_path, inputs=shard_paths, force=force)
    files: list[h5py.File] = []
    try:
        for p in shard_paths:
            f = open_hdf5(p, "shard", DatasetError)
            files.append(f)
            check_file(f, p)
            check_datasets(f, p)
            if "shard" not in f.attrs:
                raise DatasetError(f"{p}: not a shard file (rendered without --shard); nothing to merge")
        first = files[0].attrs
        for p, f in zip(shard_paths, files):
            for key in _JOB_ATTRS:
                if not np.array_equal(np.asarray(f.attrs.get(key)), np.asarray(first.get(key))) or \
                        not np.array_equal(f.attrs["notes"], first["notes"]):
                    raise DatasetError(f"{p}: {key} differs from {shard_paths[0]}'s; shards must come from one "
                                       "render command")
        count = int(str(first["shard"]).split("/")[1])
        seen = sorted(int(str(f.attrs["shard"]).split("/")[0]) for f in files)
        if seen != list(range(count)):
            missing = sorted(set(range(count)) - set(seen))
            raise DatasetError(f"merge needs each of the {count} shards once; got shard indices {seen}"
                               + (f", missing {missing}" if missing else ""))
        tables = [_read_presets(f) for f in files]
        cat_rows = np.concatenate([t.catalogue_row for t in tables]).astype(np.int64)
        order = np.argsort(cat_rows, kind="stable")
        merged_rows = cat_rows[order]
        if len(merged_rows) != int(first["selection_size"]) or np.any(np.diff(merged_rows) <= 0):
            raise DatasetError("merge: the shards do not partition one selection (rows missing or repeated)")

        def cat(attr):
            return np.concatenate([getattr(t, attr) for t in tables])[order]

        occ_parts = []
        for t in tables:
            o = dict(t.occurrences)
            o["preset"] = np.searchsorted(merged_rows, t.catalogue_row[np.asarray(o["preset"], np.int64)])
            occ_parts.append(o)
        keys = sorted(occ_parts[0])
        occ = {k: np.concatenate([np.asarray(o[k]) for o in occ_parts]) for k in keys}
        occ_order = np.argsort(occ["preset"], kind="stable")
        occ = {k: v[occ_order] for k, v in occ.items()}
        occ["preset"] = occ["preset"].astype(np.int32)
        near = cat("near_group") if all(t.near_group is not None for t in tables) else None
        table = PresetTable(cat("raw"), cat("ids"), cat("names"), cat("sound_group"),
                            merged_rows.astype(np.int32), occ, near)
        blocks = [Block(f, np.arange(len(t)), np.searchsorted(merged_rows, t.catalogue_row),
                        (float(f.attrs["mel_min_db"]), float(f.attrs["mel_max_db"])))
                  for f, t in zip(files, tables)]
        header = DatasetHeader.from_attrs(first)
        write_dataset(Path(out_path), header, table, blocks)
    except (KeyError, ValueError, TypeError) as exc:   # a shard whose attributes or data are malformed
        raise damaged(shard_paths[len(files) - 1] if files else out_path, exc, DatasetError) from None
    finally:
        for f in files:
            f.close()
    return Path(out_path)
