"""Catalogue presets → DX7 SysEx files (``dexed-data export``): 32-voice banks or single-voice dumps.

Example::

    >>> from dexed_data.export import export_sysex
    >>> export_sysex("/tmp/doc_presets.h5", "/tmp/doc_bank.syx", force=True)   # doctest: +SKIP
    [PosixPath('/tmp/doc_bank.syx')]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from . import sysex
from .catalogue import read_catalogue
from .errors import CatalogueError, OutputError
from .inputs import unreachable
from .schema import FIXED_TRANSPOSE, TRANSPOSE_OFFSET, apply_fixed

__all__ = ["export_sysex", "Exported", "numbered", "following"]


def numbered(output, k: int) -> Path:
    """The ``k``-th file (from 1) of an export to ``output``: ``bank.syx``, ``bank_2.syx``, ..."""
    output = Path(output)
    return output if k == 1 else output.with_name(f"{output.stem}_{k}{output.suffix}")


def numbered_name(output):
    """A test of a file name: whether it is one of ``numbered(output, k)``'s, for any ``k``."""
    return re.compile(re.escape(Path(output).stem) + r"(_[1-9][0-9]*)?" + re.escape(Path(output).suffix)).fullmatch


def following(output, count: int) -> list[Path]:
    """Existing files of the numbered names after the first ``count`` (an earlier, longer export's,
    or a user's own): named to the user, never deleted."""
    found = []
    while (path := numbered(output, count + len(found) + 1)).is_file():
        found.append(path)
    return found


class Exported(list):
    """The files an export wrote, in order (a list of paths), and ``own_transpose``: how many of its
    voices have a TRANSPOSE other than the rendered one (24), so that, written as imported, they
    play at another pitch than their audio in a dataset (0 with ``as_rendered``)."""

    own_transpose: int = 0


def export_sysex(catalogue, output, *, ids: Sequence[str] | None = None, limit: int | None = None,
                 single: bool = False, force: bool = False, inputs: Sequence = (),
                 as_rendered: bool = False, progress: bool = False) -> Exported:
    """Write presets of a catalogue as DX7 SysEx files; returns the files written (:class:`Exported`).

    Args:
        catalogue: path of ``presets.h5``.
        output: first output file, e.g. ``bank.syx``.
        ids: ids in the wanted order; ``None`` means every preset (in id order).
        limit: keep at most this many (after ``ids``).
        single: one single-voice message (163 bytes) per file instead of 32-voice banks.
        force: replace existing files (see :mod:`dexed_data.outputs`; never the catalogue itself).
        inputs: other files the command read (an ``--ids`` file): never replaced either.
        as_rendered: write each voice with the fixed parameters a dataset renders it with
            (TRANSPOSE 24, :func:`schema.apply_fixed`), so it plays as its dataset audio sounds;
            by default a voice is written as it was imported (its own TRANSPOSE).
        progress: a progress bar of the files written, on stderr (:func:`dexed_data.console.progress`).

    Files are numbered by one rule: ``bank.syx``, ``bank_2.syx``, ``bank_3.syx``... each holding
    up to 32 voices (a bank; a last partial bank is padded by :func:`sysex.encode_bank`) or one
    voice with ``single``. Only these files are written or replaced: other files of the same
    numbered names (an earlier, longer export; a user's own banks) are left alone.

    Raises:
        CatalogueError: unknown ids, nothing selected, a negative limit.
        OutputError: an output exists (without ``force``), is the catalogue, or cannot be written.
    """
    from .outputs import check_outputs, not_a_syx_name, together, write_bytes

    if limit is not None and limit < 1:
        raise CatalogueError(f"--limit {limit}: must be ≥ 1")
    cat = read_catalogue(catalogue)
    rows = list(range(len(cat))) if ids is None else list(dict.fromkeys(cat.rows(list(ids))))   # an id given twice: once
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise CatalogueError(f"{catalogue}: no presets selected to export")
    output = Path(output)
    why = unreachable(output)      # a folder on its way that cannot be entered, a name too long: one line
    if why is not None:
        raise OutputError(f"cannot write {output}: {why}")
    if output.is_dir() or not output.name:     # ".", "/", "outd": the numbered names need a file name
        raise OutputError(f"output {output} is a folder; give a file name")
    size = 1 if single else 32
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    targets = [numbered(output, k) for k in range(1, len(chunks) + 1)]
    # all checked before the first is written; a killed export's temporary files of any numbered name
    # go too (A9: a shorter rerun removed only those of its own names, 26 MB stayed)
    check_outputs(targets, inputs=[catalogue, *inputs], force=force, family=numbered_name(output))
    why = not_a_syx_name(output)   # after the inputs: "is also an input" says more
    if why is not None:
        raise OutputError(f"-o {output}: {why}")
    raw = apply_fixed(cat.raw) if as_rendered else cat.raw
    written = Exported()
    written.own_transpose = int((raw[rows, TRANSPOSE_OFFSET] != FIXED_TRANSPOSE).sum())
    from .console import progress as progress_bar

    with together(last=True), progress_bar(progress and len(targets) > 1, total=len(targets), unit=" files",
                                           desc="export", leave=False) as bar:   # every file, or none
        for target, chunk in zip(targets, chunks):
            if single:
                data = sysex.encode_single(raw[chunk[0]], cat.names[chunk[0]])
            else:
                data = sysex.encode_bank(raw[chunk], [cat.names[r] for r in chunk])
            write_bytes(target, data)
            written.append(target)
            bar.update()
    return written
