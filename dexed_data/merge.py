"""Joining the shard files of one render job (``--shard K/N``) into one dataset (``dexed-data merge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from .dataset import DatasetHeader, PresetTable, check_dataset, parse_shard, read_presets
from .errors import DatasetError
from .writer import Block, write_dataset

# Not "command": it spells the catalogue's (and --ids file's, plug-in's) path as each machine saw it,
# while selection_hash covers what was read from them (the merged file keeps the first shard's).
_JOB_ATTRS = ("engine", "engine_version", "sample_rate", "hold", "release", "fixed_params", "mel_config",
              "operators", "stored", "compression", "audio_dtype", "shapes", "selection_hash",
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
            parts = Path(str(p) + ".parts")
            if not Path(p).exists() and parts.is_dir():
                raise DatasetError(f"{p}: this shard is not finished ({parts} holds its render's work): rerun its "
                                   "render command to finish it (or wait for it), then merge")
            f = open_hdf5(p, "shard", DatasetError)
            files.append(f)
            check_dataset(f, p)   # attributes (a shard's "K/N" too), arrays and their values
            if "shard" not in f.attrs:
                raise DatasetError(f"{p}: not a shard file (rendered without --shard); nothing to merge")
        first = files[0].attrs
        for p, f in zip(shard_paths, files):
            for key in ("notes", *_JOB_ATTRS):   # each named by itself (a notes difference was called "engine")
                if not np.array_equal(np.asarray(f.attrs.get(key)), np.asarray(first.get(key))):
                    raise DatasetError(f"{p}: {key} differs from {shard_paths[0]}'s; shards must come from one "
                                       "render command")
        count = parse_shard(first["shard"])[1]
        for p, f in zip(shard_paths, files):
            if parse_shard(f.attrs["shard"])[1] != count:
                raise DatasetError(f"{p} is shard {f.attrs['shard']} but {shard_paths[0]} is shard {first['shard']}: "
                                   "they come from jobs split in different numbers of shards; merge the shards of "
                                   "one job")
        seen = sorted(parse_shard(f.attrs["shard"])[0] for f in files)
        if seen != list(range(count)):
            missing = sorted(set(range(count)) - set(seen))
            raise DatasetError(f"merge needs each of the {count} shards once; got shard indices {seen}"
                               + (f", missing {missing}" if missing else ""))
        tables = [read_presets(f) for f in files]
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
        lacking = [p for p, t in zip(shard_paths, tables) if t.near_group is None]
        if lacking and len(lacking) < len(tables):   # every shard of one job has it, or none (an older version)
            raise DatasetError(f"{lacking[0]}: this shard has no /presets/near_group, which the other shards of its "
                               "job have (edited, or written by another version); render it again "
                               "(`dexed-data render … --shard K/N`)")
        near = None if lacking else cat("near_group")
        table = PresetTable(cat("raw"), cat("ids"), cat("names"), cat("sound_group"),
                            merged_rows.astype(np.int32), occ, near)
        blocks = [Block(f, np.arange(len(t)), np.searchsorted(merged_rows, t.catalogue_row),
                        (float(f.attrs["mel_min_db"]), float(f.attrs["mel_max_db"])))
                  for f, t in zip(files, tables)]
        header = DatasetHeader.from_attrs(first, shard_paths[0])
        write_dataset(Path(out_path), header, table, blocks)
    except (KeyError, ValueError, TypeError) as exc:   # a shard whose attributes or data are malformed
        raise damaged(shard_paths[len(files) - 1] if files else out_path, exc, DatasetError) from None
    finally:
        for f in files:
            f.close()
    return Path(out_path)
