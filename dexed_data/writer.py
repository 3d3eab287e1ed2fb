"""Writing a dataset file: segment files, the file's layout, rows in place, finishing, copying blocks.

A render job (:mod:`dexed_data.render`) and a merge (:mod:`dexed_data.merge`) both go through
here, so that they give the same file:

1. :func:`create_layout` writes ``OUT.parts/dataset.h5`` (or ``.OUT.PID.tmp`` for a merge): the
   header, the preset table and the big arrays with their space reserved.
2. Rows arrive. Uncompressed (the default), each worker ``pwrite``s its rows straight into their
   place (:class:`RowSink`): every byte of the big arrays is written once, by the process that
   rendered it. Compressed, chunks go into the segment files and are copied at the end.
3. A :class:`SegmentWriter` file per segment records its rows' small arrays (status, levels,
   fingerprints, errors); published after the rows are durable, it is the job's journal.
4. :func:`finish_layout` gathers the small arrays, finds duplicates by sound and sets
   ``complete = True``; the file is then fsync'd and renamed to ``OUT``.
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

from .dataset import FAILED_FILL, STATUS_OK, STATUS_PENDING, DatasetHeader, PresetTable, Shapes
from .errors import DatasetError, OutputError
from .schema import encode_names, schema_table
from .storage import StorageConfig


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

        # the job's folder, deleted while it ran, is not made again for one stray segment
        write_bytes(self.path, image, "segment", parents=False)

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
    # room for the preset table, checked first: HDF5 meeting a full disk while creating the file could
    # not close it, and the process died of a segmentation fault after 110 lines of errors
    _check_space(partial, 2 * _table_bytes(presets, header) + METADATA_BYTES, f"creating {partial}",
                 "rerun the same command")
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
                for offset, size in row_slots(tmp, header).values():
                    os.posix_fallocate(fd, offset, size * n)
            finally:
                os.close(fd)
        publish(tmp, partial)
    except RuntimeError as exc:   # HDF5 reports a failed write (full disk, file size limit) this way
        from .outputs import failure_reason

        raise OutputError(f"cannot write {partial}: {failure_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def row_slots(path: Path, header: DatasetHeader) -> dict[str, tuple[int, int]]:
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

    def __init__(self, path: Path, header: DatasetHeader, slots: dict[str, tuple[int, int]] | None = None):
        self.path = Path(path)
        # given by the job (read once from the file), so that workers never open it with HDF5
        self.slots = row_slots(self.path, header) if slots is None else slots
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
    """Write a complete dataset to ``path`` via a hidden ``.NAME.PID.tmp`` and an atomic rename (``merge``).

    ``blocks`` must cover every row of ``presets`` exactly once. Rows are copied in output order:
    raw bytes into an in-place layout, encoded chunks untouched (``read_direct_chunk`` →
    ``write_direct_chunk``) into a compressed one, so the file's data depend only on the data,
    not on how or in how many pieces it was rendered.
    """
    path = Path(path)
    src_block, src_local = _sources(blocks, len(presets))
    from .outputs import make_parents, publish, temp_path

    partial = temp_path(path)     # hidden and per process: two merges on one output do not share it

    make_parents(path)
    _check_space(path, _bytes_needed(presets, blocks, header), f"cannot write {path}: it", "rerun")
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
        from .console import interrupts_deferred, outputs_published

        with interrupts_deferred():   # published: a signal changes nothing now (audit A7: it said "interrupted")
            publish(partial, path)
            outputs_published()
    except (OSError, OutputError) as exc:   # a full disk, a folder that vanished: nothing half-written stays behind
        from .outputs import failure_reason

        raise DatasetError(f"cannot write {path}: {failure_reason(exc)}; nothing was written") from None
    finally:
        partial.unlink(missing_ok=True)


#: Room kept for HDF5's own metadata and the file's attributes in the space checks: a merge of 8
#: one-note presets measured 52 kB over its arrays (a fixed 1 MB refused small jobs that fit).
METADATA_BYTES = 256_000


def _check_space(target: Path, need: int, what: str, then: str) -> None:
    """Refuse before HDF5 meets a full disk half-way through a write (it can crash there):
    ``need`` bytes must be free on ``target``'s disk."""
    free = shutil.disk_usage(target.parent).free
    if need > free:
        raise DatasetError(f"{what} may need up to {need / 1e6:,.1f} MB (a safe margin over its size) and only "
                           f"{free / 1e6:,.1f} MB are free on that disk; free space and {then}")


def _bytes_needed(presets: PresetTable, blocks: Sequence[Block], header: DatasetHeader) -> int:
    """A generous estimate of a dataset file's size: its big arrays as stored in the blocks, plus the
    small arrays and provenance (x 2) and :data:`METADATA_BYTES`."""
    big = sum(block.file[name].id.get_storage_size() for block in blocks for name in header.storage.arrays
              if name in block.file)
    return int(big + 2 * _table_bytes(presets, header) + METADATA_BYTES)


def _table_bytes(presets: PresetTable, header: DatasetHeader) -> int:
    """A dataset file's small arrays, about: the preset table, its provenance and the per-note values."""
    small = sum(np.asarray(v).nbytes if np.asarray(v).dtype.kind != "O" else 64 * len(v)
                for v in presets.occurrences.values())
    return small + len(presets) * (145 + 64 + 64 * header.shapes.notes)


def finish_layout(partial: Path, header: DatasetHeader, blocks: Sequence[Block]) -> None:
    """Complete a file made by :func:`create_layout`: the small arrays and errors from ``blocks``,
    the duplicates by sound over the whole file, the mel bounds, then ``complete = True``.

    Compressed big arrays are copied here from the blocks' chunks; in-place ones are already
    written. Safe to run again on a file it was interrupted on.
    """
    try:
        _finish(partial, header, blocks)
    except RuntimeError as exc:   # HDF5 reports a failed write (full disk) this way
        from .outputs import failure_reason

        raise OutputError(f"cannot finish {partial}: {failure_reason(exc)}") from None


def _finish(partial: Path, header: DatasetHeader, blocks: Sequence[Block]) -> None:
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
        # room for what is written here, checked first: HDF5 meeting a full disk half-way could not
        # close the file, and the process then died of a segmentation fault after 110 lines of errors
        copy_rows = not in_place(header.storage)
        need = 2 * sum(v.nbytes for v in values.values()) + 64 * n + METADATA_BYTES
        if copy_rows:
            need += sum(b.file[name].id.get_storage_size() for b in blocks for name in header.storage.arrays
                        if name in b.file)
        _check_space(Path(partial), need, f"cannot finish {partial}: writing the small arrays"
                     + (" and copying the compressed rows" if copy_rows else ""), "rerun the same command")
        if copy_rows:
            for name in header.storage.arrays:
                d = f[name]
                zeros = (0,) * (d.ndim - 1)
                for row in np.flatnonzero(status == STATUS_OK):
                    src = blocks[src_block[row]].file[name]
                    mask, data = src.id.read_direct_chunk((int(src_local[row]),) + zeros)
                    d.id.write_direct_chunk((int(row),) + zeros, data, filter_mask=mask)
        for name in small:
            _put(f, name, values[name])
        _put(f, "error", errors.astype(str).astype(object))
        # dedup by sound over the whole file, so a merge finds duplicates across shards
        from .fingerprint import duplicate_of

        _put(f, "duplicate_of", duplicate_of(values["fingerprint"], status == STATUS_OK))
        lo, hi = _combine_bounds(block.bounds for block in blocks)
        f.attrs["mel_min_db"], f.attrs["mel_max_db"] = lo, hi
        f.attrs["complete"] = True


def _put(f: h5py.File, name: str, values: np.ndarray) -> None:
    """Create the finished array ``name``; when an interrupted finish already made it, keep it,
    writing only if it does not hold ``values``. HDF5 never gives back the space of a deleted
    dataset, so deleting and creating again left a resumed file larger than it needs to be.
    (Arrays created by the run that finishes land where the file's free space then is: a file
    whose finish was interrupted holds the same data as an uninterrupted run's, in other bytes.)"""
    text = values.dtype == object
    if name in f:
        d = f[name]
        if d.shape == values.shape and (h5py.check_string_dtype(d.dtype) is not None if text else d.dtype == values.dtype):
            held = d.asstr()[...] if text else d[...]
            same = held == values
            if values.dtype.kind == "f":       # failed rows hold NaN
                same |= np.isnan(held) & np.isnan(values)
            if not np.all(same):               # all equal after an interrupted finish: nothing to write
                d[...] = values
            return
        del f[name]                            # another layout (not written by this version)
    f.create_dataset(name, data=values, dtype=h5py.string_dtype() if text else None, track_times=False)


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
            occ.create_dataset(key, data=a if a.dtype.kind == "S" else encode_names(a), track_times=False)
        elif a.dtype.kind in "OU":
            # (not .astype(str): one fixed-width array takes the longest path's room for every occurrence)
            occ.create_dataset(key, data=np.asarray([str(x) for x in a.tolist()], dtype=object).reshape(a.shape),
                               dtype=h5py.string_dtype(), track_times=False)
        else:
            occ.create_dataset(key, data=a, track_times=False)
