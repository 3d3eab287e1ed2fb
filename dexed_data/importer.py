"""Importing SysEx: files and folders → a catalogue (``presets.h5``), every file accounted for.

Importing walks files and folders, decodes every file with :mod:`dexed_data.sysex` (any extension:
``.syx``, ``.SYX``, ``.mid``, no extension, text files...) and accounts for every file and every
message: each ends up *imported*, *repaired*, *duplicate* or *rejected with a reason*. Nothing in
the input can make the import crash; a decoder bug on one file rejects that file
(``decoder_error``) and the import goes on. The catalogue file itself is written by
:func:`dexed_data.catalogue.write_catalogue`.

Dedup levels (all counted in the report; rows of the catalogue are level 3):

1. ``packed_as_found``: the 118 packed sound bytes exactly as they are in the file (bit 7
   included; packed bytes 118–127, the name, ignored). Single-voice messages carry unpacked
   bytes; their packed form is computed from the decoded values.
2. ``packed_masked``: the same bytes with bit 7 masked (Yamaha: "don't care").
3. ``raw_values``: the 145 unpacked sound values after repair, i.e. what a synth sees (the
   "don't care" bits of packed bytes dropped). **One catalogue row per unique raw vector.**
4. ``sound_equivalent``: raw values canonicalised by :func:`dexed_data.sound_key.sound_key`,
   which sets parameters that provably cannot change the rendered sound to 0. Rows of one class
   share ``/presets/sound_group``; rows are kept, so a dataset can choose to render one per group.

Paths in provenance are POSIX paths relative to the import root: with one PATH argument that is
a folder, relative to that folder; with one PATH that is a file, its file name; with several PATH
arguments, relative to each argument's parent folder (so the argument's own name is kept, e.g.
``dx7-cc0/Original Yamaha/DX7 ROM1/ROM1A.syx``). A file reached twice (same resolved path) is
read once.

Example::

    >>> from dexed_data.importer import import_sysex
    >>> rep = import_sysex(["presets/toolkit_bank_a.syx"], "/tmp/doc_import.h5", force=True)
    >>> rep.summary["voices_imported"], rep.summary["unique"]["raw_values"]
    (32, 32)
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import sysex
from .catalogue import write_catalogue
from .errors import CatalogueError
from .rows import count_unique_rows, unique_rows
from .schema import PACKED_SOUND_BYTES, SCHEMA_HASH, SOUND_BYTES, VOICE_MAX, pad_name
from .sound_key import sound_key

__all__ = ["DEDUP_LEVELS", "ImportReport", "collect_files", "import_sysex", "same_files"]

REPORT_FORMAT = "dexed-import-report"

DEDUP_LEVELS: dict[str, str] = {
    "packed_as_found": "118 packed sound bytes exactly as found in the file (bit 7 included, name ignored)",
    "packed_masked": "118 packed sound bytes with bit 7 masked (Yamaha: don't care)",
    "raw_values": "145 unpacked sound values after repair (what a synth sees); one catalogue row each",
    "sound_equivalent": "raw values with provably inaudible parameters canonicalised (sound_key); "
                        "classes are /presets/sound_group",
}


def collect_files(paths: Sequence, repeats: list | None = None) -> list[tuple[Path, str]]:
    """Every file under ``paths`` as ``(path, relative POSIX path)``, sorted by relative path.

    Folders are walked recursively (every file, any extension, hidden ones included), following
    links to folders (a link back to a folder above it, a loop, is not followed again); paths are
    relative to the single folder given, or to each argument's parent when several are given.
    A path reached twice (the same folder given twice) is listed once; two paths to one file (hard
    or symbolic links, a file given and inside a folder given) are both listed, and
    :func:`same_files` tells which repeats which. Different files that would get the same relative
    path (``a/bank/x.syx`` and ``b/bank/x.syx`` given as ``a/bank b/bank``) are both listed, named
    relative to the folder holding all the files found. A folder reached again by another link
    within one argument is walked once, at its first path in sorted order; ``repeats`` (if given)
    gets ``(relative path, relative path of its first)`` for each other path to it (without that,
    links that each lead twice to the next folder made 2^N paths).

    Raises:
        DexedDataError: a PATH does not exist, or is neither a file nor a folder (a device, a pipe).
    """
    from .inputs import unreachable

    paths = [Path(p) for p in paths]
    blocked = [f"{p}: {why}" for p, why in ((p, unreachable(p)) for p in paths) if why is not None]
    if blocked:
        raise CatalogueError(f"cannot read {'; '.join(blocked)}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CatalogueError(f"no such file or folder: {', '.join(missing)}")
    odd = [str(p) for p in paths if not (p.is_file() or p.is_dir())]
    if odd:   # /dev/zero or a pipe would be read for ever, or give nothing
        raise CatalogueError(f"{', '.join(odd)}: not a file or a folder (a device, pipe or socket); "
                             "give SysEx files or folders holding them")
    several = len(paths) > 1
    found: dict[tuple[str, str], Path] = {}    # (relative path, absolute path): a path reached twice, once
    again: dict[tuple[str, str], tuple[str, str]] = {}   # the same for folders walked already, → their first
    for root in paths:
        base = root.parent if (several or root.is_file()) else root
        at = lambda p: (Path(os.path.relpath(p, base)).as_posix(), os.path.abspath(p))   # noqa: E731
        for file in ([root] if root.is_file() else _walk(root)):
            if isinstance(file, tuple):      # a folder walked already, at file[1]
                again.setdefault(at(file[0]), at(file[1]))
                continue
            found.setdefault(at(file), Path(file))
    # Different files with one relative path (a/bank/x.syx and b/bank/x.syx given as a/bank b/bank) are
    # named from the folder the arguments share instead, whatever their order: both are imported.
    # (again while a new name is another file's: names from that folder are unique, so this ends)
    shared = os.path.commonpath([absolute for _, absolute in found]) if found else ""
    names = {key: key[0] for key in found}
    while True:
        files_named: dict[str, set[str]] = {}
        for (_, absolute), name in names.items():
            files_named.setdefault(name, set()).add(absolute)
        renamed = {key: Path(os.path.relpath(key[1], shared)).as_posix() if len(files_named[name]) > 1 else name
                   for key, name in names.items()}
        if renamed == names:
            break
        names = renamed
    if repeats is not None:   # named as the files are: from the shared folder where two would share a name
        named: dict[str, set[str]] = {}
        for rel, absolute in [*again, *again.values()]:
            named.setdefault(rel, set()).add(absolute)
        common = os.path.commonpath([shared, *(absolute for _, absolute in again)]) if shared else ""
        name = lambda key: Path(os.path.relpath(key[1], common)).as_posix() if len(named[key[0]]) > 1 and common \
            else key[0]   # noqa: E731
        repeats.extend(sorted((name(key), name(first)) for key, first in again.items()))
    return sorted(((found[key], name) for key, name in names.items()), key=lambda t: (t[1], str(t[0])))


def _walk(root: Path):
    """The files below ``root``, the folders that could not be listed (reported as unreadable), and
    ``(folder, first path)`` for a folder reached again by another link.

    Like ``os.walk(followlinks=True)``, in the sorted order of the paths, but a link to a folder that
    holds it (a loop) is skipped, and a folder reached again is walked once, at its first path (audit
    A6: 16 levels of two links each to the next level gave 65,536 paths to one file, 30 levels would
    never end). A folder whose walk met a path the system refused (too long, or through more than 40
    links), in it or below it, is walked once more where a shorter path reaches it (R6, R8, R9: those
    files were lost), so at most twice (R7)."""
    stack = [(str(root), ())]
    seen: dict[tuple[int, int], str] = {}
    lossy: set[tuple[int, int]] = set()      # folders whose walk met a path the system refused
    again: set[tuple[int, int]] = set()      # walked a second time already
    while stack:
        folder, above = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in above:
                continue                                  # a loop: its files are read where it points
            if key in seen:
                if key not in lossy or key in again or len(os.fsencode(folder)) >= len(os.fsencode(seen[key])):
                    if key in lossy:   # (R9: what holds this path may reach it shorter elsewhere)
                        lossy.update(above)
                    yield Path(folder), Path(seen[key])
                    continue
                again.add(key)
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):   # (ELOOP: more than 40 links on the way)
                lossy.update(above)
            yield Path(folder)                            # listed, so that it is reported as unreadable
            continue
        seen[key] = folder
        inside = (*above, key)
        folders = []
        for e in entries:
            try:
                is_folder = e.is_dir()                    # follows links
            except OSError as exc:
                is_folder = False
                if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):   # it cannot be read at this path
                    lossy.update(inside)
            if is_folder:
                folders.append(e)
            else:
                if len(os.fsencode(e.path)) >= _PATH_MAX:   # it cannot be read at this path
                    lossy.update(inside)
                yield Path(e.path)
        # popped in the order of their paths ("NAME/…": "Synth-backup/" before "Synth/")
        stack.extend((e.path, inside) for e in sorted(folders, key=lambda e: e.name + "/", reverse=True))


#: Longest path the system takes (bytes, its terminating NUL included): Linux's PATH_MAX.
_PATH_MAX = 4096


def same_files(files: list[tuple[Path, str]]) -> dict[str, str]:
    """``{relative path: relative path of the same file listed before it}`` for the files of
    :func:`collect_files` reached by two paths (hard or symbolic links): each file is read once,
    under its first path in sorted order, so the catalogue does not depend on the walk's order."""
    first: dict[tuple[int, int], str] = {}
    out: dict[str, str] = {}
    for path, rel in files:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out_of = first.setdefault((st.st_dev, st.st_ino), rel)
            if out_of != rel:
                out[rel] = out_of
    return out


@dataclass
class ImportReport:
    """What an import did: per-file outcomes and totals (the JSON report and the terminal summary).

    Attributes:
        summary: ``files_seen``, ``files_by_outcome``, ``messages`` (DX7 voice messages found),
            ``voices`` (decoded), ``voices_imported``, ``voices_repaired``, ``voices_rejected``,
            ``repaired_by_reason`` (code → imported voices that needed it; message repairs count
            every voice of the message), ``rejected_by_reason`` (code → rejected items: a
            message for truncated/not_dx7/dx7ii_supplement/unknown_message, a file for
            no_sysex/midi_error/unreadable/decoder_error/too_large, a voice for ``strict:<code>`` and
            out_of_range_unrepaired), ``skipped_by_reason`` (stray bytes or trailing garbage
            ignored around messages), ``duplicates`` (imported voices − unique rows) and
            ``unique`` (count at each of :data:`DEDUP_LEVELS`).
        files: one dict per file seen: ``path``, ``outcome`` (``imported``, ``repaired``,
            ``partly_rejected``, ``rejected``, ``no_dx7_data`` (no SysEx and no DX7 data at all),
            ``same_file``: a second path to a
            file read under its first path, a link), ``messages``, ``voices``,
            ``imported``, ``duplicates``, ``repaired`` / ``rejected`` (reason → count), ``problems``.
    """

    summary: dict
    files: list[dict] = field(default_factory=list)
    output: str = ""
    command: str = ""
    strict: bool = False

    def to_dict(self) -> dict:
        return {"format": REPORT_FORMAT, "format_version": 1, "schema_hash": SCHEMA_HASH,
                "command": self.command, "output": self.output, "strict": self.strict,
                "dedup_levels": DEDUP_LEVELS, "summary": self.summary, "files": self.files}

    def write_json(self, path) -> None:
        """Write the report as JSON (UTF-8, indented)."""
        from .outputs import h5_text, write_text

        def text(x):   # a path's bytes that are not UTF-8 as \xNN, as the catalogue stores them
            if isinstance(x, str):
                return h5_text(x)
            if isinstance(x, dict):
                return {text(k): text(v) for k, v in x.items()}
            return [text(v) for v in x] if isinstance(x, (list, tuple)) else x

        # Compact: the per-file problem lists are long, and only the compact encoder is C-fast.
        write_text(path, json.dumps(text(self.to_dict()), ensure_ascii=False) + "\n", "report")

    def format_summary(self) -> str:
        """The summary as a few human lines for the terminal."""
        s = self.summary
        u = s["unique"]

        def line(label: str, value, detail: str = "") -> str:
            return f"{label:<20}{value:>8}" + (f"   {detail}" if detail else "")

        def reasons(counts: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

        lines = [
            line("files seen", s["files_seen"], "files: " + reasons(s["files_by_outcome"])),
            line("messages", s["messages"], "DX7 voice messages decoded (banks, single voices, raw blocks)"),
            line("voices", s["voices"], f"imported {s['voices_imported']}, repaired {s['voices_repaired']}, "
                 f"rejected {s['voices_rejected']}"),
            line("duplicates", s["duplicates"], "voices"),
            line("unique presets", u["raw_values"], f"by raw values; by packed bytes as found "
                 f"{u['packed_as_found']}, bit 7 masked {u['packed_masked']}, sound-equivalent {u['sound_equivalent']}"),
        ]
        # each count in its own unit: the reasons of rejection concern files, messages or voices
        rejected = Counter(s["rejected_by_reason"])
        partly = s.get("partly_read_by_reason", {})
        rejected.subtract(partly)   # those files gave voices: not rejected files
        by_unit = {unit: {k: v for k, v in rejected.items() if _rejection_unit(k) == unit and v > 0}
                   for unit in ("files", "messages", "voices")}
        for label, counts in (("repaired (voices)", s["repaired_by_reason"]),
                              *((f"rejected ({unit})", by_unit[unit]) for unit in ("files", "messages", "voices")),
                              ("partly read (files)", partly),
                              ("skipped (byte runs)", s["skipped_by_reason"])):
            if counts:
                lines.append(f"{label:<20}{'':>8}   {reasons(counts)}")
        if self.output:
            lines.append(f"{'wrote':<20}{'':>8}   {self.output}")
        return "\n".join(lines)


#: Rejection reasons that count files (the others count messages, or voices: see _rejection_unit).
FILE_REJECTIONS = frozenset({"no_sysex", "midi_error", "unreadable", "decoder_error", "too_large"})
#: Files larger than this are not read (``too_large``): :data:`dexed_data.sysex.MAX_FILE_BYTES`.
MAX_FILE_BYTES = sysex.MAX_FILE_BYTES


def _rejection_unit(code: str) -> str:
    if code in FILE_REJECTIONS:
        return "files"
    if code.startswith("strict:") or code == "out_of_range_unrepaired":
        return "voices"
    return "messages"


def _problem_dict(p) -> dict:
    return {"code": p.code, "message": p.message, "offset": p.offset, "voice": p.voice,
            "param": getattr(p, "param", None), "repaired": bool(p.repaired),
            **({"count": p.count} if getattr(p, "count", 1) != 1 else {})}   # one problem for many (sysex.LISTED_PER_CODE)



_BANK_HEADER_LEN = 6
#: Problems that are not about DX7 data: bytes around messages that were ignored.
SKIPPED_CODES = sysex.SKIPPED
#: Repairs that concern every voice of the file (headerless raw data), not one message.
FILE_WIDE_REPAIRS = frozenset({"no_header"})
#: Rejections that lose DX7 voice data (the others reject data that is not DX7 voices).
VOICE_LOSS_CODES = ("truncated", "strict:", "out_of_range_unrepaired", "midi_error", "decoder_error")


def _as_found(data: bytes, v) -> bytes:
    """The voice's 118 packed sound bytes exactly as in the file (bit 7 included), when findable.

    ``DecodedVoice.packed_sound`` has bit 7 masked, so the bytes are read back from the file: a
    bank message at ``offset`` (in a MIDI file ``offset`` points one byte before the event's data,
    so only the bytes after F0 are checked), or headerless packed data. The bytes are used only
    if they mask to ``packed_sound``; otherwise (single voices) the masked bytes stand in.
    """
    masked = bytes(v.packed_sound)
    for start in (v.offset + _BANK_HEADER_LEN + 128 * v.voice_index, v.offset + 128 * v.voice_index):
        if 0 <= start and start + PACKED_SOUND_BYTES <= len(data):
            found = data[start:start + PACKED_SOUND_BYTES]
            if found == masked or bytes(b & 0x7F for b in found) == masked:
                return found
    return masked


def _message_of(offsets: list[int], at: int | None) -> int | None:
    """Offset of the message containing byte ``at`` (the last message starting at or before it)."""
    if at is None:
        return None
    i = bisect.bisect_right(offsets, at) - 1
    return offsets[i] if i >= 0 else None


@dataclass(frozen=True)
class _DecodedFile:
    """One file read and decoded: its place in the sorted file list, relative path, bytes and result."""

    index: int
    rel: str
    data: bytes
    result: sysex.FileResult


@dataclass
class _FileProblems:
    """A file's problems sorted by what they concern (voices' own problems are on the voices)."""

    message_repairs: dict[int, set[str]] = field(default_factory=dict)   # message offset → repair codes
    file_repairs: set[str] = field(default_factory=set)                  # repairs of every voice of the file
    rejected: Counter = field(default_factory=Counter)                   # reason → rejected items
    skipped: Counter = field(default_factory=Counter)                    # reason → byte runs ignored

    @classmethod
    def of(cls, result: sysex.FileResult) -> "_FileProblems":
        """Message-level repairs are located by byte offset (bad checksum, count bytes, missing end);
        file-wide ones (no header), or ones outside any message, concern every voice."""
        out = cls()
        offsets = sorted({v.offset for v in result.voices})
        for p in result.problems:
            if p.code in SKIPPED_CODES:
                out.skipped[p.code] += p.count
            elif not p.repaired:
                out.rejected[p.code] += p.count
            elif p.code in FILE_WIDE_REPAIRS or _message_of(offsets, p.offset) is None:
                out.file_repairs.add(p.code)
            else:
                out.message_repairs.setdefault(_message_of(offsets, p.offset), set()).add(p.code)
        return out

    def of_voice(self, v: sysex.DecodedVoice) -> set[str]:
        """Repair codes of voice ``v``: its own (bit 7, out of range), its message's and the file's."""
        if v.problems or v.offset in self.message_repairs:
            return ({p.code for p in v.problems if p.repaired} | self.message_repairs.get(v.offset, set())
                    | self.file_repairs)
        return self.file_repairs


def _judge_voices(voices: list, raws: np.ndarray, problems: _FileProblems,
                  strict: bool) -> tuple[np.ndarray, Counter, int]:
    """Which voices of a file to keep: ``keep (n,) bool``, the repairs of the kept ones (code →
    voices) and how many kept voices needed a repair.

    Rejections (values the decoder left out of range; with ``strict``, any repair) are added to
    ``problems.rejected``.
    """
    unrepaired = (raws > VOICE_MAX).any(axis=1)  # the decoder should have clamped these
    keep = np.ones(len(voices), bool)
    repaired: Counter = Counter()
    n_repaired = 0
    for i, v in enumerate(voices):
        codes = problems.of_voice(v)
        if unrepaired[i]:
            problems.rejected["out_of_range_unrepaired"] += 1
            keep[i] = False
        elif strict and codes:
            for c in sorted(codes):
                problems.rejected[f"strict:{c}"] += 1
            keep[i] = False
        elif codes:
            repaired.update(codes)
            n_repaired += 1
    return keep, repaired, n_repaired


def _outcome(n_kept: int, repaired: Counter, rejected: Counter) -> str:
    """A file's outcome in the report (see :class:`ImportReport`)."""
    lost = any(c.startswith(VOICE_LOSS_CODES) for c in rejected)
    if n_kept:
        return "partly_rejected" if lost else ("repaired" if repaired else "imported")
    # (unknown_message is also a damaged DX7 message: a file with one is "rejected", not "no DX7 data")
    if rejected and set(rejected) != {"no_sysex"}:
        return "rejected"
    return "no_dx7_data"


def _entry(rel: str, outcome: str, *, messages: int = 0, voices: int = 0, imported: int = 0,
           repaired: dict | None = None, rejected: dict | None = None, skipped: dict | None = None,
           problems: list[dict] | None = None) -> dict:
    """One file's entry in the report (``duplicates`` is filled in once every file is read)."""
    return {"path": rel, "outcome": outcome, "messages": messages, "voices": voices, "imported": imported,
            "duplicates": 0, "repaired": repaired or {}, "rejected": rejected or {}, "skipped": skipped or {},
            "problems": problems or []}


class _Voices:
    """The kept voices of every file, collected into flat arrays (one append per file)."""

    def __init__(self) -> None:
        self.raw: list[np.ndarray] = []
        self.packed: list[np.ndarray] = []
        self.masked: list[np.ndarray] = []
        self.names: list[str] = []
        self.file: list[np.ndarray] = []
        self.message: list[int] = []
        self.voice: list[int] = []

    def add(self, f: _DecodedFile, voices: list, raws: np.ndarray) -> None:
        """Add the kept ``voices`` of file ``f`` (``raws``: their raw values, ``(n, 145)``)."""
        n = len(voices)
        self.raw.append(raws)
        self.masked.append(np.frombuffer(b"".join(v.packed_sound for v in voices), np.uint8)
                           .reshape(n, PACKED_SOUND_BYTES))
        self.packed.append(np.frombuffer(b"".join(_as_found(f.data, v) for v in voices), np.uint8)
                           .reshape(n, PACKED_SOUND_BYTES))
        self.file.append(np.full(n, f.index, np.int32))
        self.names.extend(pad_name(v.name) for v in voices)
        self.message.extend(int(v.message_index) for v in voices)
        self.voice.extend(int(v.voice_index) for v in voices)

    def arrays(self) -> dict[str, np.ndarray]:
        """``raw (M, 145)``, ``packed`` / ``masked (M, 118)`` uint8, ``file``, ``message``, ``voice (M,)`` int32."""
        def cat(parts, shape, dtype):
            return np.concatenate(parts) if parts else np.zeros(shape, dtype)

        return {"raw": cat(self.raw, (0, SOUND_BYTES), np.uint8),
                "packed": cat(self.packed, (0, PACKED_SOUND_BYTES), np.uint8),
                "masked": cat(self.masked, (0, PACKED_SOUND_BYTES), np.uint8),
                "file": cat(self.file, (0,), np.int32),
                "message": np.asarray(self.message, np.int32),
                "voice": np.asarray(self.voice, np.int32)}


class _Import:
    """One import while its files are read: the kept voices, the totals, one report entry per file."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.voices = _Voices()
        self.totals: Counter = Counter()
        self.repaired_by: Counter = Counter()
        self.rejected_by: Counter = Counter()
        self.skipped_by: Counter = Counter()
        self.entries: list[dict] = []

    def add_failed(self, rel: str, reason: str, message: str) -> None:
        """A file that could not be read or decoded at all."""
        self.rejected_by[reason] += 1
        self.entries.append(_entry(rel, "rejected", rejected={reason: 1}, problems=[
            {"code": reason, "message": message, "offset": None, "voice": None, "param": None, "repaired": False}]))

    def add_same(self, rel: str, first: str, what: str = "file") -> None:
        """A second path to a file (or folder) already read (a hard or symbolic link): accounted, not read again."""
        self.entries.append(_entry(rel, "same_file", problems=[
            {"code": "same_file", "message": f"{rel}: the same {what} as {first} (a link to it, or given twice); read once, as {first}",
             "offset": None, "voice": None, "param": None, "repaired": False}]))

    def add_file(self, f: _DecodedFile) -> None:
        """Keep a decoded file's voices (repairs attributed to voices), count them, add its entry."""
        voices = list(f.result.voices)
        problems = _FileProblems.of(f.result)
        repaired: Counter = Counter()   # voices per repair code
        n_kept = 0
        if voices:
            raws = np.stack([v.raw for v in voices]).astype(np.uint8, copy=False)
            keep, repaired, n_repaired = _judge_voices(voices, raws, problems, self.strict)
            n_kept = int(keep.sum())
            self.totals["voices_repaired"] += n_repaired
            self.totals["voices_rejected"] += len(voices) - n_kept
            if n_kept:
                self.voices.add(f, [v for v, k in zip(voices, keep) if k], raws[keep])
        self.totals["messages"] += int(f.result.messages)
        self.totals["voices"] += len(voices)
        self.totals["voices_imported"] += n_kept
        self.repaired_by.update(repaired)
        self.rejected_by.update(problems.rejected)
        self.skipped_by.update(problems.skipped)
        all_problems = list(f.result.problems) + sysex.voice_problem_list(f.result)
        self.entries.append(_entry(
            f.rel, _outcome(n_kept, repaired, problems.rejected), messages=int(f.result.messages),
            voices=len(voices), imported=n_kept, repaired=dict(sorted(repaired.items())),
            rejected=dict(sorted(problems.rejected.items())), skipped=dict(sorted(problems.skipped.items())),
            problems=[_problem_dict(p) for p in all_problems]))

    def _partly_read(self) -> Counter:
        """File-level reasons of the files that gave voices although part of them could not be read
        (a damaged MIDI track): counted in ``rejected_by_reason`` too, but not rejected files."""
        partly: Counter = Counter()
        for e in self.entries:
            if e["outcome"] in ("partly_rejected", "repaired", "imported"):
                partly.update({k: v for k, v in e["rejected"].items() if k in FILE_REJECTIONS})
        return partly

    def summary(self, n_unique: int, unique_raw: np.ndarray, packed: np.ndarray, masked: np.ndarray) -> dict:
        """The :attr:`ImportReport.summary` once every file is read and deduplicated."""
        t = self.totals
        return {
            "files_seen": len(self.entries),
            "files_by_outcome": dict(sorted(Counter(e["outcome"] for e in self.entries).items())),
            "messages": t["messages"],
            "voices": t["voices"],
            "voices_imported": t["voices_imported"],
            "voices_repaired": t["voices_repaired"],
            "voices_rejected": t["voices_rejected"],
            "repaired_by_reason": dict(sorted(self.repaired_by.items())),
            "rejected_by_reason": dict(sorted(self.rejected_by.items())),
            "skipped_by_reason": dict(sorted(self.skipped_by.items())),
            "partly_read_by_reason": dict(sorted(self._partly_read().items())),
            "duplicates": t["voices_imported"] - n_unique,
            "unique": {
                "packed_as_found": count_unique_rows(packed),
                "packed_masked": count_unique_rows(masked),
                "raw_values": n_unique,
                "sound_equivalent": count_unique_rows(sound_key(unique_raw)) if n_unique else 0,
            },
        }


_HINTS = {errno.EACCES: "; check permissions", errno.EPERM: "; check permissions",
          errno.ENAMETOOLONG: "; the path is longer than the system allows: move the files to a shorter path",
          errno.ENOENT: " (a broken link, or removed during the import)", errno.ELOOP: " (a loop of links)"}


def _decode_one(path: Path, rel: str):
    """Read and decode one file: ``(bytes, FileResult)``, or ``(None, reason, message)`` on failure."""
    folder = False
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):   # a folder the walk could not enter
            folder = True
            os.listdir(path)
            raise OSError(errno.EACCES, "cannot list the folder")
        if not stat.S_ISREG(st.st_mode):
            return None, "unreadable", f"{rel}: not a regular file (a device, pipe or socket); skipped"
        if st.st_size > MAX_FILE_BYTES:
            return None, "too_large", (f"{rel}: {st.st_size / 2**20:,.0f} MB, larger than any SysEx collection "
                                       f"(the limit is {MAX_FILE_BYTES >> 20} MB); not read")
        data = path.read_bytes()
    except OSError as exc:
        what = "cannot list this folder, so its files were not read" if folder else "cannot read"
        return None, "unreadable", f"{rel}: {what} ({exc.strerror or exc}){_HINTS.get(exc.errno, '')}"
    try:
        return data, sysex.decode_bytes(data, source=rel)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the import
        return None, "decoder_error", (f"{rel}: the decoder failed ({type(exc).__name__}: {exc}); "
                                       "please report this file")


def _progress(total: int, enabled: bool):
    from dexed_data.console import progress

    return progress(enabled, total=total, unit="file", desc="import-sysex", leave=False)


def _read_files(files: list[tuple[Path, str]], strict: bool, progress: bool, repeats=()) -> _Import:
    """Read, decode and account for every file, in order (a second path to a file once); ``repeats``:
    ``(path, first path)`` of folders reached again (:func:`collect_files`)."""
    state = _Import(strict)
    again = list(reversed(sorted(repeats)))      # each listed where its path sorts among the files'
    same = same_files(files)
    with _progress(len(files), progress) as bar:
        for index, (path, rel) in enumerate(files):
            while again and again[-1][0] < rel:
                state.add_same(*again.pop(), "folder")
            if rel in same:
                state.add_same(rel, same[rel])
                bar.update(1)
                continue
            decoded = _decode_one(path, rel)
            if decoded[0] is None:
                state.add_failed(rel, *decoded[1:])
            else:
                state.add_file(_DecodedFile(index, rel, *decoded))
            bar.update(1)
    while again:
        state.add_same(*again.pop(), "folder")
    return state


def _first_voices(v: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each unique raw vector's first voice in (path, message, voice) order, and each voice's unique row.

    ``v``: :meth:`_Voices.arrays`. Returns ``first_voice (U,)`` (indices into the voices, one per
    distinct raw vector, in content order) and ``inverse (M,)`` (each voice's entry in ``first_voice``).
    """
    raw = v["raw"]
    first, inverse = unique_rows(raw)
    order_in_file = np.lexsort((v["voice"], v["message"], v["file"])) if raw.shape[0] else np.zeros(0, np.intp)
    first_occ = np.full(first.size, raw.shape[0], np.int64)
    np.minimum.at(first_occ, inverse[order_in_file], np.arange(raw.shape[0]))
    first_voice = order_in_file[first_occ] if first.size else first_occ
    return first_voice, inverse


def import_sysex(paths: Sequence, output, *, strict: bool = False, report=None, progress: bool = False,
                 command: str = "", force: bool = False) -> ImportReport:
    """Import SysEx files and folders into a catalogue at ``output`` (see the module docstring).

    Args:
        paths: files and/or folders; folders are walked recursively, every file is tried.
        output: the ``presets.h5`` to write (replaced atomically).
        strict: reject every voice that needed any repair (reason ``strict:<code>``), and every
            voice of a file with a file-level repair.
        report: optional path of the JSON report to write.
        progress: show progress on stderr (:func:`dexed_data.console.progress`).
        command: command line stored in the file and the report.
        force: replace an existing ``output`` / ``report`` (see :mod:`dexed_data.outputs`).

    Returns:
        The :class:`ImportReport` (also written to ``report`` when given).

    Raises:
        DexedDataError: a PATH does not exist, or the output or report cannot be written (exists
        without ``force``, is one of the inputs, bad folder, full disk). Bad input content never
        raises: it is reported.
    """
    from .errors import OutputError
    from .outputs import check_output, together

    repeats: list[tuple[str, str]] = []
    files = collect_files(paths, repeats)
    sources = [p for p, _ in files]
    check_output(output, inputs=sources, force=force, what="catalogue")
    if report is not None:
        if os.path.realpath(report) == os.path.realpath(output):
            raise OutputError(f"--report {report} and -o {output} name the same file; give the report its own name "
                              "(e.g. import.json)")
        check_output(report, inputs=sources + [Path(output)], force=force, what="report")
    state = _read_files(files, strict, progress, repeats)
    v = state.voices.arrays()
    # One row per unique raw vector; the name is the first occurrence's in (path, message, voice)
    # order, which is the accumulation order because files are sorted by path.
    first_voice, inverse = _first_voices(v)
    unique_raw = v["raw"][first_voice]
    unique_names = [state.voices.names[i] for i in first_voice]
    is_first = np.zeros(v["raw"].shape[0], bool)
    is_first[first_voice] = True
    dup_per_file = np.bincount(v["file"][~is_first], minlength=len(files))
    for e, dups in zip(state.entries, dup_per_file):
        e["duplicates"] = int(dups)

    rel_paths = [rel for _, rel in files]
    occurrences = {"preset": inverse, "path": [rel_paths[i] for i in v["file"]], "message": v["message"],
                   "voice": v["voice"], "name": state.voices.names}
    summary = state.summary(int(first_voice.size), unique_raw, v["packed"], v["masked"])
    rep = ImportReport(summary=summary, files=state.entries, output=str(output) if first_voice.size else "",
                       command=command, strict=strict)
    if not first_voice.size:   # an empty catalogue helps no one: say what was found instead
        found = Counter(e["outcome"] for e in state.entries)
        what = (f"{len(files)} file(s) read, by outcome: " + ", ".join(f"{k} {n}" for k, n in sorted(found.items()))
                if files else "no file in it")
        # each rejected file's reason: the first of its problems that rejected something (not one skipped or repaired)
        why = [next((p["message"] for p in e["problems"] if p["code"] in e["rejected"] and not p["repaired"]),
                    e["problems"][0]["message"]) for e in state.entries if e["outcome"] == "rejected" and e["problems"]]
        if why and len(why) <= 3:        # what went wrong with each, not only that something did
            what += "; " + "; ".join(why)
        elif state.rejected_by:
            what += "; rejected for: " + ", ".join(f"{k} {n}" for k, n in state.rejected_by.most_common(5))
        written = "nothing written"
        if report is not None:   # the report still says why each file gave nothing
            rep.write_json(report)
            written = f"no catalogue written; {report} says why each file gave no voice"
        raise CatalogueError(f"no DX7 voice imported from {', '.join(map(str, paths))} ({what}); {written}. "
                             "Give DX7 SysEx files (banks of 32 voices or single voices) or folders holding them"
                             + (", or drop --strict" if strict and state.rejected_by else ""))
    with together(last=True):   # the catalogue and its report, both or neither
        write_catalogue(output, unique_raw, unique_names, occurrences, command=command)
        if report is not None:
            rep.write_json(report)
    return rep

