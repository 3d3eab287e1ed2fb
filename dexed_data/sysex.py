"""DX7 SysEx codec: find voice messages in messy files, unpack/pack voices, write banks.

Layouts come from ``../shared/reference/DX7.md`` and field positions from
:data:`dexed_data.schema.VOICE_PARAMS` (``packed = (byte, shift, bits)``, ``max``); nothing here
retypes a layout. A preset's *raw values* are a ``(145,)`` ``uint8`` vector in voice order (OP6
first); the 10-character name is kept apart.

Decoding never raises on content: everything odd becomes a :class:`Problem` that says what, where
(file, byte offset, voice) and what to do. Messages are located by their Yamaha header and expected
length, never by splitting on ``F7``, so a checksum byte of ``F7``/``F0`` cannot split a bank.

Round trips (see :data:`USED_BITS`):

* raw → :func:`pack_voice` → :func:`unpack_voice` is the identity for every in-range raw vector.
* packed → unpack → pack is the identity when bit 7 is clear, values are in range and the
  "don't care" bits are zero. Those dropped bits are: operator byte 11 bits 4–6 (only the two
  2-bit curves are read), operator byte 13 bits 5–6, operator byte 15 bit 6, byte 110 bits 5–6
  (algorithm is 5 bits) and byte 111 bits 4–6. Bytes 12 and 116 use all 7 bits.

Out-of-range values are clamped to the parameter's ``max`` (Dexed rescales a few fields instead;
clamping keeps every other voice byte-exact and is easy to explain).

Example::

    >>> bank = encode_bank(np.array([INIT_VOICE]), ["INIT VOICE"])
    >>> result = decode_bytes(bank)
    >>> len(result.voices), result.voices[0].name, result.problems
    (32, 'INIT VOICE', [])
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path

import numpy as np

from dexed_data.errors import SysexError
from dexed_data.schema import (
    NAME_LENGTH,
    PACKED_NAME_OFFSET,
    PACKED_SOUND_BYTES,
    PACKED_VOICE_BYTES,
    PARAM_BY_NAME,
    SOUND_BYTES,
    VOICE_BYTES,
    VOICE_MAX,
    VOICE_PARAMS,
)

VOICES_PER_BANK = 32
BANK_DATA_BYTES = VOICES_PER_BANK * PACKED_VOICE_BYTES  # 4096
BANK_MESSAGE_BYTES = 6 + BANK_DATA_BYTES + 2  # 4104
SINGLE_MESSAGE_BYTES = 6 + VOICE_BYTES + 2  # 163
BANK_HEADER = bytes([0xF0, 0x43, 0x00, 0x09, 0x20, 0x00])
SINGLE_HEADER = bytes([0xF0, 0x43, 0x00, 0x00, 0x01, 0x1B])
DEXED_OPERATORS_ON = 0x3F  # dexed-py's 156th byte: one bit per operator, all six on

#: Every Problem code this module emits.
PROBLEM_CODES = (
    "bad_checksum",       # repaired: data kept (stale and dummy checksums are common)
    "bad_count_bytes",    # repaired: e.g. a bank declaring `10 00` bytes but carrying 4096
    "missing_end",        # repaired: no F7 where the message should end
    "bit7_set",           # repaired: bit 7 of data bytes cleared
    "out_of_range",       # repaired: value clamped to the parameter's max
    "no_header",          # repaired: raw voice data without SysEx framing, decoded anyway
    "truncated_bank",     # repaired: a bank cut short; its complete voices kept, the others lost
    "truncated",          # rejected: the message ends before its first voice does
    "not_dx7",            # rejected: another Yamaha synth's dump (TX81Z/DX21 4-op, ...)
    "dx7ii_supplement",   # rejected: DX7II/TX802 supplement, performance or system data
    "unknown_message",    # rejected: any other SysEx message
    "stray_bytes",        # skipped: bytes outside any message, before the last one
    "trailing_garbage",   # skipped: bytes after the last message
    "no_sysex",           # rejected: no SysEx and no raw DX7 data in the file
    "midi_error",         # rejected: a MIDI file mido cannot parse
)

# Field positions derived from the schema, in voice order: shape (145,).
_BYTE = np.array([p.packed[0] for p in VOICE_PARAMS], dtype=np.intp)
_SHIFT = np.array([p.packed[1] for p in VOICE_PARAMS], dtype=np.uint8)
_MASK = np.array([(1 << p.packed[2]) - 1 for p in VOICE_PARAMS], dtype=np.uint8)
_NAMES = tuple(p.name for p in VOICE_PARAMS)
# One-hot (145, 118): packing is a matrix product because fields of one byte never overlap.
_PLACE = np.zeros((SOUND_BYTES, PACKED_SOUND_BYTES), dtype=np.int32)
_PLACE[np.arange(SOUND_BYTES), _BYTE] = 1

#: Bits of each packed byte (128,) that unpacking reads; the rest are "don't care".
USED_BITS: np.ndarray = np.full(PACKED_VOICE_BYTES, 0x7F, dtype=np.uint8)
USED_BITS[:PACKED_SOUND_BYTES] = (_MASK.astype(np.int32) << _SHIFT) @ _PLACE


def _init_voice() -> np.ndarray:
    values = {"ALGORITHM": 0, "OSC KEY SYNC": 1, "LFO SPEED": 35, "LFO KEY SYNC": 1,
              "P MODE SENS.": 3, "TRANSPOSE": 24}
    values |= {f"PITCH EG RATE {i}": 99 for i in range(1, 5)}
    values |= {f"PITCH EG LEVEL {i}": 50 for i in range(1, 5)}
    for op in range(1, 7):
        values |= {f"OP{op} EG RATE {i}": 99 for i in range(1, 5)}
        values |= {f"OP{op} EG LEVEL {i}": 99 for i in range(1, 4)}
        values |= {f"OP{op} BREAK POINT": 39, f"OP{op} F COARSE": 1, f"OP{op} OSC DETUNE": 7,
                   f"OP{op} OUTPUT LEVEL": 99 if op == 1 else 0}
    raw = np.zeros(SOUND_BYTES, dtype=np.uint8)
    for name, value in values.items():
        raw[PARAM_BY_NAME[name].voice_offset] = value
    raw.flags.writeable = False
    return raw


#: The DX7's INIT VOICE (145,) uint8: only OP1 sounds, a plain sine. Besides the obvious fields it
#: has the DX7's own defaults OSC KEY SYNC on, LFO speed 35, LFO key sync on, P MODE SENS. 3.
INIT_VOICE: np.ndarray = _init_voice()
INIT_NAME = "INIT VOICE"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something odd in a file: repaired and kept (``repaired=True``) or rejected.

    ``code`` is one of :data:`PROBLEM_CODES`; ``message`` is a sentence naming the file, the byte
    offset, the voice and what to do; ``param`` is the schema name for ``out_of_range``.
    """

    code: str
    message: str
    offset: int | None = None
    voice: int | None = None
    param: str | None = None
    repaired: bool = False
    #: items this one stands for: past :data:`LISTED_PER_CODE` of a code in a stretch of a file, the
    #: rest of that code is one problem (a stray disk image of F0 bytes made millions); 0 for the
    #: problem voices share past that many of their own (counted in ``FileResult.more_voice_problems``)
    count: int = 1


#: Problems that are bytes outside any message, ignored (``importer.SKIPPED_CODES``).
SKIPPED = frozenset({"stray_bytes", "trailing_garbage"})

#: Problems of one code listed one by one in a stretch of a file (a file, or a MIDI file's SysEx event).
LISTED_PER_CODE = 100


@dataclass(frozen=True, slots=True)
class DecodedVoice:
    """One voice found in a file.

    ``raw`` is ``(145,)`` uint8 in voice order after repair (read-only); ``packed_sound`` the 118
    packed sound bytes with bit 7 masked (for a single-voice dump, packed from ``raw``);
    ``offset`` the byte offset of its message in the file; ``problems`` the repairs applied to it.
    """

    raw: np.ndarray
    name: str
    packed_sound: bytes
    message_index: int
    voice_index: int
    offset: int
    problems: tuple[Problem, ...] = ()


@dataclass
class FileResult:
    """Everything decoded from one file: voices, the number of DX7 voice messages, problems.

    ``messages`` counts accepted banks and single voices (a headerless raw block counts as one);
    ``problems`` holds file- and message-level problems (voice repairs live on each voice).
    """

    path: str
    voices: list[DecodedVoice] = field(default_factory=list)
    messages: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: voices' own repairs past :data:`LISTED_PER_CODE` of a code in the file: code → how many,
    #: counted only (:func:`voice_problem_list` lists them with one line per code)
    more_voice_problems: Counter = field(default_factory=Counter)


# --------------------------------------------------------------------------- voice codec


def checksum(data: bytes) -> int:
    """Yamaha checksum of a message's data bytes: ``(-sum) & 0x7F`` (bit 7 cannot change it)."""
    return -sum(data) & 0x7F


def _decode_name(name_bytes: np.ndarray) -> str:
    # Bytes are already 7-bit, so latin-1 maps each to one char and never fails.
    return bytes(name_bytes).decode("latin-1")


def _encode_name(name: str) -> np.ndarray:
    """(10,) uint8: 7-bit (a character outside ASCII → '?'; masking its top bit turned 'é' into
    'i'), cut or space-padded to 10. ASCII bytes, NULs included, are kept as they are."""
    data = name.encode("latin-1", errors="replace")[:NAME_LENGTH].ljust(NAME_LENGTH, b" ")
    out = np.frombuffer(data, dtype=np.uint8).copy()
    out[out > 0x7F] = ord("?")
    return out


def unpack_voices(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack voices without validation: ``(n, 128)`` uint8 → raw ``(n, 145)`` uint8, names ``(n, 10)``.

    Bit 7 is masked and "don't care" bits dropped; values may still exceed the parameters'
    ``max`` (the caller clamps and reports, see :func:`unpack_voice`).
    """
    packed = np.asarray(packed, dtype=np.uint8) & 0x7F
    raw = (packed[:, _BYTE] >> _SHIFT) & _MASK
    return raw, packed[:, PACKED_NAME_OFFSET:PACKED_VOICE_BYTES]


def _check_raw(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.shape[-1:] != (SOUND_BYTES,):
        raise SysexError(f"raw voice values must have shape (..., {SOUND_BYTES}), got {raw.shape}")
    bad = np.argwhere((raw < 0) | (raw > VOICE_MAX))
    if len(bad):
        i = int(bad[0][-1])
        raise SysexError(f"cannot pack {_NAMES[i]} = {raw[tuple(bad[0])]}: valid values are "
                         f"0–{VOICE_MAX[i]}; clamp the raw values before encoding")
    return raw.astype(np.uint8)


def pack_voices(raws: np.ndarray, names: list[str]) -> np.ndarray:
    """Pack raw values ``(n, 145)`` and ``n`` names into ``(n, 128)`` uint8; don't-care bits are 0.

    Raises :class:`SysexError` for a value outside its parameter's range.
    """
    raws = _check_raw(np.atleast_2d(raws))
    if len(names) != len(raws):
        raise SysexError(f"got {len(raws)} voices but {len(names)} names; give one name per voice")
    out = np.empty((len(raws), PACKED_VOICE_BYTES), dtype=np.uint8)
    out[:, :PACKED_SOUND_BYTES] = (raws.astype(np.int32) << _SHIFT) @ _PLACE
    out[:, PACKED_NAME_OFFSET:] = [_encode_name(n) for n in names]
    return out


def _range_problems(raw: np.ndarray, where: str, offset: int | None,
                    voice: int | None, over: np.ndarray | None = None) -> list[Problem]:
    over = np.flatnonzero(raw > VOICE_MAX) if over is None else over
    return [Problem("out_of_range",
                    f"{where}: {_NAMES[i]} = {raw[i]} is above its maximum {VOICE_MAX[i]}; clamped "
                    f"to {VOICE_MAX[i]} (check the sound, or fix the voice in an editor)",
                    offset, voice, _NAMES[i], True) for i in over]


def _bit7_problem(hi: np.ndarray, where: str, offset: int, voice: int | None) -> Problem:
    first = int(np.flatnonzero(hi)[0])
    return Problem("bit7_set", f"{where}: {int(hi.sum())} data byte(s) had bit 7 set (first at "
                   f"byte {offset + first}); cleared, as Yamaha defines bit 7 as don't care — "
                   f"nothing to do unless the voice sounds wrong", offset + first, voice, None, True)


def unpack_voice(packed: bytes) -> tuple[np.ndarray, str, list[Problem]]:
    """Unpack one 128-byte packed voice → (raw ``(145,)`` uint8 clamped, 10-char name, problems).

    Problems are ``bit7_set`` and ``out_of_range`` (offsets relative to ``packed``).
    Raises :class:`SysexError` if ``packed`` is not 128 bytes long.
    """
    if len(packed) != PACKED_VOICE_BYTES:
        raise SysexError(f"a packed voice is {PACKED_VOICE_BYTES} bytes, got {len(packed)}")
    data = np.frombuffer(bytes(packed), dtype=np.uint8)
    raw, name = unpack_voices(data[None])
    problems = [_bit7_problem(data >= 0x80, "packed voice", 0, None)] if (data >= 0x80).any() else []
    problems += _range_problems(raw[0], "packed voice", None, None)
    return np.minimum(raw[0], VOICE_MAX), _decode_name(name[0]), problems


def pack_voice(raw: np.ndarray, name: str) -> bytes:
    """Pack raw values ``(145,)`` and a name into the 128-byte bank layout (inverse of unpack)."""
    return pack_voices(np.asarray(raw)[None], [name])[0].tobytes()


def encode_bank(raws: np.ndarray, names: list[str]) -> bytes:
    """Encode up to 32 voices ``(n, 145)`` as a 4104-byte bank (channel 0), padding with INIT VOICE."""
    raws = np.asarray(raws).reshape(-1, SOUND_BYTES)
    if len(raws) > VOICES_PER_BANK:
        raise SysexError(f"a bank holds {VOICES_PER_BANK} voices, got {len(raws)}; split them "
                         f"over several banks")
    pad = VOICES_PER_BANK - len(raws)
    raws = np.concatenate([raws, np.tile(INIT_VOICE, (pad, 1))]) if pad else raws
    data = pack_voices(raws, list(names) + [INIT_NAME] * pad).tobytes()
    return BANK_HEADER + data + bytes([checksum(data), 0xF7])


def to_dexed_sysex(raw: np.ndarray, name: str = "") -> bytes:
    """156 bytes for dexed-py's ``_RawDexedSynth.load_sysex``: 155 unpacked bytes + ``0x3F`` (ops on)."""
    return _check_raw(raw).tobytes() + _encode_name(name).tobytes() + bytes([DEXED_OPERATORS_ON])


def encode_single(raw: np.ndarray, name: str) -> bytes:
    """Encode one voice as a 163-byte single-voice dump (channel 0)."""
    data = to_dexed_sysex(raw, name)[:VOICE_BYTES]
    return SINGLE_HEADER + data + bytes([checksum(data), 0xF7])


# --------------------------------------------------------------------------- message scanning

# Kinds of Yamaha bulk dumps (format byte → what it is); DX7 voice formats handled apart.
_NOT_DX7_FORMATS = {0x03: "4-op single voice (TX81Z/DX21/DX27/DX100 VCED)",
                    0x04: "4-op 32-voice bank (TX81Z/DX21/DX27/DX100 VMEM)"}
_DX7II_FORMATS = {0x05: "DX7II/TX802 supplement of one voice (ACED)",
                  0x06: "DX7II/TX802 supplement of 32 voices (AMEM)"}
_DX7II_7E = (b"LM  8973", b"LM  8952", b"LM  MCRY", b"LM  FKSY")  # DX7II, TX802 and their tables
_FOUR_OP_7E = (b"LM  8976", b"LM  8023")  # TX81Z/DX11 performance and supplement data
_FMT_BANK, _FMT_SINGLE = 0x09, 0x00
_F0_RUN = re.compile(rb"\xF0+")
# Start of the next Yamaha message (dump, parameter change or request): ends a DX7 message early.
_NEXT_YAMAHA = re.compile(rb"\xF0\x43[\x00-\x2F]")


class _Scan:
    """Accumulates what one pass over a byte stream finds (offsets shifted by ``base``)."""

    def __init__(self, source: str, result: FileResult, full_voice: int | None = None):
        self.source, self.result, self.full_voice = source, result, full_voice
        self.yamaha_seen = False
        self._listed: Counter = Counter()        # code → problems listed one by one in this file
        self._folded: dict[str, list] = {}       # code → [how many more, the first one]
        self._voice_listed: Counter = Counter()  # code → voices' own problems listed one by one
        self._voice_more: dict[str, Problem] = {}   # code → what voices past those hold instead

    def voice_problems(self, hi: np.ndarray, raw: np.ndarray, where: str, start: int, voice: int,
                       index: int) -> tuple[Problem, ...]:
        """A voice's own repairs (bit 7 set, ``raw`` unclamped out of range): one problem per value up
        to :data:`LISTED_PER_CODE` of a code in the file, then counted in ``more_voice_problems``,
        the voice holding one problem shared by all such voices of the file (a 64 MB file of junk
        banks made 50 million problems, 140 MB of memory per MB of input). The file's voice
        ``full_voice`` (``index`` counts the file's voices from 0) gets all of its own, uncounted."""
        if index == self.full_voice:
            return tuple(([_bit7_problem(hi, where, start, voice)] if hi.any() else [])
                         + _range_problems(raw, where, start, voice))
        found = []
        if hi.any():
            if self._voice_listed["bit7_set"] < LISTED_PER_CODE:
                self._voice_listed["bit7_set"] += 1
                found.append(_bit7_problem(hi, where, start, voice))
            else:
                found.append(self._more("bit7_set", 1, "data bytes with bit 7 set, cleared"))
        over = np.flatnonzero(raw > VOICE_MAX)
        if over.size:
            room = max(0, LISTED_PER_CODE - self._voice_listed["out_of_range"])
            self._voice_listed["out_of_range"] += min(room, over.size)
            found += _range_problems(raw, where, start, voice, over[:room])
            if over.size > room:
                found.append(self._more("out_of_range", over.size - room, "values above their maximum, clamped to it"))
        return tuple(found)

    def _more(self, code: str, count: int, what: str) -> Problem:
        self.result.more_voice_problems[code] += count
        if code not in self._voice_more:   # count 0: it stands for nothing itself (counted in more_voice_problems)
            self._voice_more[code] = Problem(
                code, f"{self.source}: {what}, in this voice (in the voices past the first {LISTED_PER_CODE} such "
                "problems of the file, counted, not listed one by one)", None, None, None, True, 0)
        return self._voice_more[code]

    def problem(self, code: str, text: str, offset: int | None, repaired: bool = False) -> None:
        folded = self._folded.get(code)
        if folded is not None:            # past the listed ones: counted only (made for each, it was slow)
            folded[0] += 1
            return
        where = self.source if offset is None else f"{self.source}, byte {offset}"
        found = Problem(code, f"{where}: {text}", offset, None, None, repaired)
        if not repaired and self._listed[code] >= LISTED_PER_CODE:
            self._folded[code] = [1, found]
            return
        self._listed[code] += 1
        self.result.problems.append(found)

    def fold(self) -> None:
        """At the end of a stretch (a file, a MIDI file's SysEx event): the problems of each code past
        :data:`LISTED_PER_CODE` in the file, as one problem that counts them (a lone one as itself)."""
        for code, (more, first) in self._folded.items():
            if more == 1:
                self.result.problems.append(first)
                continue
            where = self.source if first.offset is None else f"{self.source}, byte {first.offset}"
            self.result.problems.append(Problem(
                code, f"{where}: {more:,} more of the same ({code}) from here on, not listed one by one; skipped",
                first.offset, None, None, False, more))
        self._folded.clear()


def _classify(data: bytes, s: int) -> tuple[str, str]:
    """(code, description) of a Yamaha bulk dump at ``s`` that is not a DX7 voice message."""
    fmt = data[s + 3]
    if fmt in _NOT_DX7_FORMATS:
        return "not_dx7", _NOT_DX7_FORMATS[fmt]
    if fmt in _DX7II_FORMATS:
        return "dx7ii_supplement", _DX7II_FORMATS[fmt]
    tag = data[s + 6:s + 14]
    if fmt == 0x7E and tag.startswith(_DX7II_7E):
        return "dx7ii_supplement", f"DX7II/TX802 data block '{tag.decode('latin-1')}'"
    if fmt == 0x7E and tag.startswith(_FOUR_OP_7E):
        return "not_dx7", f"4-op synth data block '{tag.decode('latin-1')}'"
    return "unknown_message", f"Yamaha bulk dump of format 0x{fmt:02X}"


def _skip_to_end(data: bytes, s: int) -> int:
    """Index after a generic message at ``s``: its F7, or the next F0 / end of data if unterminated."""
    f0 = data.find(b"\xF0", s + 1)
    end = len(data) if f0 < 0 else f0
    f7 = data.find(b"\xF7", s + 1, end)   # up to the next F0 only: a file of F0 bytes took quadratic time
    return f7 + 1 if f7 >= 0 else end


def _scan(data: bytes, base: int, scan: _Scan) -> None:
    """Find every message in ``data`` (a file, or one SysEx event of a MIDI file at ``base``)."""
    try:
        _scan_messages(data, base, scan)
    finally:
        scan.fold()


def _scan_messages(data: bytes, base: int, scan: _Scan) -> None:
    pos, n = 0, len(data)
    while pos < n:
        s = data.find(b"\xF0", pos)
        if s < 0:
            s = n
        if s > pos:
            last = data.find(b"\xF0", s) < 0
            code = "trailing_garbage" if last else "stray_bytes"
            scan.problem(code, f"{s - pos} byte(s) outside any SysEx message were ignored; "
                         f"nothing to do unless voices are missing", base + pos)
        if s >= n:
            return
        header = data[s:s + 6]
        # A Yamaha bulk dump: F0 43 0n ff hh ll (n = MIDI channel, ff = format, hhll = byte count).
        if len(header) == 6 and header[1] == 0x43 and header[2] < 0x10 and max(header[3:]) < 0x80:
            scan.yamaha_seen = True
            fmt = header[3]
            if fmt in (_FMT_BANK, _FMT_SINGLE):
                pos = _dx7_message(data, s, base, scan)
                continue
            code, what = _classify(data, s)
            end = s + 6 + (header[4] << 7 | header[5]) + 2
            pos = end if end <= n and data[end - 1] == 0xF7 else _skip_to_end(data, s)
            scan.problem(code, f"{what}, not DX7 voices; skipped (import the file with the "
                         f"synth it belongs to)", base + s)
            continue
        if len(header) >= 2 and header[1] == 0x43:
            scan.yamaha_seen = True
            what = "Yamaha parameter change or request message" if len(header) > 2 else "cut-off message"
        elif len(header) > 1 and header[1] == 0xF0:   # F0 F0 …: no message starts here, whatever the run's length
            pos = _F0_RUN.match(data, s).end() - 1   # the last may start a message
            scan.problem("unknown_message", f"{pos - s:,} F0 byte(s) that start no message (the next F0 does); "
                         "skipped", base + s)
            continue
        else:
            what = f"SysEx message of manufacturer 0x{header[1]:02X}" if len(header) > 1 else "lone F0 byte"
        pos = _skip_to_end(data, s)
        scan.problem("unknown_message", f"{what} ({pos - s} bytes), not a DX7 voice dump; "
                     f"skipped", base + s)


def _whole(data: bytes, s: int, cs_at: int, expected: tuple[int, int]) -> bool:
    """Whether the message at ``s`` has its exact count bytes and F7 right after its checksum byte at
    ``cs_at``, and either a valid checksum or no F7 before that one (stale checksums are common)."""
    return (cs_at + 1 < len(data) and data[cs_at + 1] == 0xF7 and tuple(data[s + 4:s + 6]) == expected
            and (data[cs_at] & 0x7F == checksum(data[s + 6:cs_at]) or data.find(b"\xF7", s + 6, cs_at + 1) < 0))


def _dx7_message(data: bytes, s: int, base: int, scan: _Scan) -> int:
    """Decode the DX7 bank or single voice at ``s``; return where scanning goes on."""
    n, is_bank = len(data), data[s + 3] == _FMT_BANK
    size = BANK_DATA_BYTES if is_bank else VOICE_BYTES
    kind = "32-voice bank" if is_bank else "single-voice dump"
    body, cs_at = s + 6, s + 6 + size
    # The message ends at the next Yamaha header or at the end of the data, whichever comes first;
    # its own length (not the next F7) tells where its checksum and F7 are.
    nxt = _NEXT_YAMAHA.search(data, body)
    stop = n if nxt is None else nxt.start()
    expected = (0x20, 0x00) if is_bank else (0x01, 0x1B)
    if stop < cs_at and _whole(data, s, cs_at, expected):
        # what looked like the next header is data bytes with bit 7 set (F0 43 0n) inside a message
        # whose count bytes, checksum and end byte are all where its length puts them: it is whole
        nxt = _NEXT_YAMAHA.search(data, cs_at + 2)
        stop = n if nxt is None else nxt.start()
    if stop < cs_at:
        whole = (stop - body) // PACKED_VOICE_BYTES if is_bank else 0
        if whole and tuple(data[s + 4:s + 6]) == (0x20, 0x00):
            # A bank cut short (a file copied or downloaded in part): its complete voices are kept.
            # With no checksum to vouch for them, the six exact header bytes must be there.
            scan.problem("truncated_bank", f"{kind} holds only {stop - body} of its {size} data bytes; "
                         f"its first {whole} complete voice(s) were imported, the other "
                         f"{VOICES_PER_BANK - whole} are lost (find a complete copy of the file)",
                         base + s, repaired=True)
            packed = np.frombuffer(data[body:body + whole * PACKED_VOICE_BYTES], dtype=np.uint8)
            _add_packed(packed.reshape(whole, PACKED_VOICE_BYTES), base + s, base + body, scan)
            return stop
        scan.problem("truncated", f"{kind} holds only {stop - body} of its {size} data bytes; its "
                     f"voices were not imported (find a complete copy of the file)", base + s)
        return stop
    count_ok = tuple(data[s + 4:s + 6]) == expected
    payload = data[body:cs_at]
    checksum_ok = cs_at < stop and data[cs_at] & 0x7F == checksum(payload)
    end_ok = (cs_at + 1 < stop and data[cs_at + 1] == 0xF7) or (cs_at < stop and data[cs_at] == 0xF7)
    # Four header bytes are weak evidence (any binary holds F0 43 0n 00 now and then): decode and
    # "repair" only when the message also carries its own count bytes (six exact header bytes) or a
    # valid checksum. Every damaged message of the CC0 corpus passes (its 217 files with wrong count
    # bytes all have valid checksums); of 3,964 system files (.so, .mo, .pyc), none does.
    if not (checksum_ok or count_ok):
        scan.problem("unknown_message", f"bytes that start like a DX7 {kind} but have "
                     + ("wrong count bytes, " if not count_ok else "") + "no valid checksum"
                     + ("" if end_ok else " and no end byte") + "; not decoded (not DX7 data)", base + s)
        return s + 2
    if not count_ok:
        scan.problem("bad_count_bytes", f"{kind} declares byte count {data[s + 4]:02X} "
                     f"{data[s + 5]:02X} instead of {expected[0]:02X} {expected[1]:02X} but carries "
                     f"all {size} data bytes; decoded anyway (re-save the file to fix)",
                     base + s, repaired=True)
    # A lone F7 right after the data is the end marker of a message that lost its checksum.
    lost_checksum = cs_at < stop and data[cs_at] == 0xF7 and (cs_at + 1 >= stop or data[cs_at + 1] != 0xF7)
    if cs_at >= stop or lost_checksum:
        scan.problem("bad_checksum", f"{kind} has no checksum byte; data kept (re-save the file "
                     f"to add one)", base + cs_at, repaired=True)
        end = cs_at + 1 if lost_checksum else cs_at
    else:
        end = cs_at + 1
        if not checksum_ok and not (end < stop and data[end] == 0xF7) and end != stop:
            # Nothing vouches for the length (no F7, no next message and no end of file where it
            # ends): a stub message followed by other bytes (librarian files), or a bank whose line
            # ends were converted (CR LF), would decode as garbage.
            scan.problem("unknown_message", f"bytes that start like a DX7 {kind} whose checksum and end byte "
                         f"are both wrong, so its length cannot be trusted (a message cut short and followed by "
                         f"other bytes, or a file converted as text); not decoded (find an intact copy of the "
                         f"file)", base + s)
            return s + 2
        if data[cs_at] & 0x7F != checksum(payload):
            scan.problem("bad_checksum", f"{kind} checksum is 0x{data[cs_at]:02X} but its data sums "
                         f"to 0x{checksum(payload):02X}; data kept, as stale or dummy checksums are "
                         f"common (re-save the file to fix)", base + cs_at, repaired=True)
        if end < stop and data[end] == 0xF7:
            end += 1
        else:
            scan.problem("missing_end", f"{kind} is not followed by its end byte F7; decoded "
                         f"anyway", base + end, repaired=True)
    array = np.frombuffer(payload, dtype=np.uint8)
    if is_bank:
        _add_packed(array.reshape(VOICES_PER_BANK, PACKED_VOICE_BYTES), base + s, base + body, scan)
    else:
        _add_unpacked(array[None], base + s, base + body, scan)
    return end


def _add_voices(raw: np.ndarray, names: np.ndarray, hi: np.ndarray, packed: np.ndarray | None,
                offset: int, body: int, stride: int, scan: _Scan) -> None:
    """Append one message's voices: raw ``(n, 145)`` unclamped, names ``(n, 10)``, ``hi`` bit-7 flags."""
    result, message = scan.result, scan.result.messages
    result.messages += 1
    clamped = np.minimum(raw, VOICE_MAX)
    clamped.flags.writeable = False
    if packed is None:  # single voices carry unpacked bytes; the packed form comes from raw
        packed = pack_voices(clamped, [""] * len(raw))
    flagged = set(np.flatnonzero(hi.any(axis=1) | (raw > VOICE_MAX).any(axis=1)).tolist())
    for i in range(len(raw)):
        name = _decode_name(names[i])
        problems: tuple[Problem, ...] = ()
        if i in flagged:
            where = f"{scan.source}, voice {i + 1} ('{name}') of the message at byte {offset}"
            problems = scan.voice_problems(hi[i], raw[i], where, body + i * stride, i, len(result.voices))
        result.voices.append(DecodedVoice(clamped[i], name, packed[i, :PACKED_SOUND_BYTES].tobytes(),
                                          message, i, offset, problems))


def _add_packed(packed: np.ndarray, offset: int, body: int, scan: _Scan) -> None:
    raw, names = unpack_voices(packed)
    _add_voices(raw, names, packed >= 0x80, packed & 0x7F, offset, body, PACKED_VOICE_BYTES, scan)


def _add_unpacked(voices: np.ndarray, offset: int, body: int, scan: _Scan) -> None:
    masked = voices & 0x7F
    _add_voices(masked[:, :SOUND_BYTES], masked[:, SOUND_BYTES:VOICE_BYTES], voices >= 0x80, None,
                offset, body, VOICE_BYTES, scan)


# --------------------------------------------------------------------------- raw data and MIDI

# Largest valid value of each packed sound byte (118,): what an in-range voice can hold there.
_PACKED_MAX = (VOICE_MAX.astype(np.int32) << _SHIFT) @ _PLACE


def _plausible(sound_ok: np.ndarray, names: np.ndarray) -> bool:
    """Raw data looks like DX7 voices: ≥ 95 % of sound bytes valid and most names printable."""
    printable = ((names >= 0x20) & (names < 0x7F)).all(axis=1).mean()
    return bool(sound_ok.mean() >= 0.95 and printable >= 0.5)


def _raw_voices(data: bytes, scan: _Scan) -> bool:
    """Decode headerless voice data: 128-byte packed voices, or 155-byte unpacked ones."""
    n = len(data)
    if n < BANK_DATA_BYTES:
        return False
    array = np.frombuffer(data, dtype=np.uint8)
    if n % VOICE_BYTES == 0 and n % PACKED_VOICE_BYTES:
        voices = array.reshape(-1, VOICE_BYTES)
        if _plausible(voices[:, :SOUND_BYTES] <= VOICE_MAX, voices[:, SOUND_BYTES:]):
            scan.problem("no_header", f"{len(voices)} unpacked voices without SysEx framing; "
                         f"decoded as raw data (check the names look right)", 0, repaired=True)
            _add_unpacked(voices, 0, 0, scan)
            return True
    count = n // PACKED_VOICE_BYTES
    voices = array[:count * PACKED_VOICE_BYTES].reshape(count, PACKED_VOICE_BYTES)
    if not _plausible(voices[:, :PACKED_SOUND_BYTES] <= _PACKED_MAX, voices[:, PACKED_NAME_OFFSET:]):
        return False
    scan.problem("no_header", f"{count} packed voices without SysEx framing; decoded as raw "
                 f"bank data (check the names look right)", 0, repaired=True)
    for first in range(0, count, VOICES_PER_BANK):
        start = first * PACKED_VOICE_BYTES
        _add_packed(voices[first:first + VOICES_PER_BANK], start, start, scan)
    if n > count * PACKED_VOICE_BYTES:
        scan.problem("trailing_garbage", f"{n - count * PACKED_VOICE_BYTES} byte(s) after the "
                     f"last whole voice were ignored", count * PACKED_VOICE_BYTES)
    return True


class _MidiFormatError(Exception):
    """A Standard MIDI File that cannot be walked to its end (truncated, bad chunk or event)."""


def _varlen(data: bytes, i: int) -> tuple[int, int]:
    """A MIDI variable-length quantity at ``i`` → (value, index after it)."""
    value = 0
    for k in range(4):
        if i >= len(data):
            raise _MidiFormatError(f"cut off inside a length at byte {i}")
        b = data[i]
        i += 1
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, i
    raise _MidiFormatError(f"a length longer than 4 bytes at byte {i - 4}")


def midi_sysex(data: bytes) -> tuple[list[tuple[int, bytes, list[tuple[int, int]]]], str | None]:
    """The SysEx messages of a Standard MIDI File, as raw bytes: ``([(offset, F0 … F7, spans), ...], error)``.

    Read from the file's bytes (not through a MIDI library that clips data bytes to 7 bits), so a
    data byte with bit 7 set reaches the decoder as it is, exactly like in a .syx file. A SysEx
    split into an ``F0`` packet and ``F7`` continuation packets (legal in MIDI files) is joined
    into one message. ``offset`` is the file position of its ``F0`` (the event's status byte; it
    was the byte before the data, a length byte: R1); ``spans`` lists, per packet, ``(index in the
    message, file position)`` of its first data byte, so that a position in the joined message can
    be named in the file (:func:`_file_position`). ``error`` says which parts could not be read
    (a damaged track, a file cut short); the messages of every other track are returned, and of a
    SysEx cut short what is there.
    """
    out: list[tuple[int, bytes, list[tuple[int, int]]]] = []
    errors: list[str] = []
    pos, tracks = 0, 0
    # a header chunk longer than 6 bytes is legal ("read and honour the length"); the walk skips the rest
    declared = int.from_bytes(data[10:12], "big") if data[:4] == b"MThd" and \
        int.from_bytes(data[4:8], "big") >= 6 else None
    if declared is None:
        return out, "no valid MThd header"
    while pos + 8 <= len(data):
        kind, length = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        body, end = pos + 8, pos + 8 + length
        cut = end > len(data)
        end = min(end, len(data))                     # read what is there, then say the file is cut off
        if kind == b"MTrk":
            tracks += 1
            try:
                _track_sysex(data, body, end, out)
            except _MidiFormatError as exc:           # the next chunk is still found by its length
                errors.append(f"track {tracks}: {exc}")
        if cut:
            errors.append(f"chunk {kind.decode('latin-1')!r} at byte {pos} runs past the end of the file")
        pos = end
    if not errors and tracks < declared:
        errors.append(f"{tracks} of its {declared} tracks found")
    return out, "; ".join(errors) or None


def _track_sysex(data: bytes, i: int, end: int, out: list) -> None:
    running = None
    open_at, parts = None, []   # a SysEx whose F0 packet did not end with F7: its (file position, bytes)

    def close() -> None:
        nonlocal open_at, parts
        if open_at is not None:
            spans, at = [], 1
            for pos, packet in parts:
                spans.append((at, pos))
                at += len(packet)
            out.append((open_at, b"\xF0" + b"".join(packet for _, packet in parts), spans))
        open_at, parts = None, []

    while i < end:
        _, i = _varlen(data, i)   # delta time
        if i >= end:
            raise _MidiFormatError(f"track cut off at byte {i}")
        status = data[i]
        if status in (0xF0, 0xF7):
            length, j = _varlen(data, i + 1)
            packet = data[j:min(j + length, end)]
            if j + length > end:   # cut short: what is there is kept (a bank's complete voices)
                if status == 0xF0:
                    close()
                    open_at, parts = i, [(j, packet)]
                elif open_at is not None:
                    parts.append((j, packet))
                close()
                raise _MidiFormatError(f"SysEx event at byte {i} runs past the end of its track")
            if status == 0xF0:
                close()
                open_at, parts = i, [(j, packet)]
            elif open_at is not None:   # a continuation packet
                parts.append((j, packet))
            elif packet.startswith(b"\xF0"):   # an escape packet holding a message, F0 included
                open_at, parts = j, [(j + 1, packet[1:])]
            if open_at is not None and packet.endswith(b"\xF7"):
                close()
            running = None
            i = j + length
        elif status == 0xFF:
            if i + 1 >= end:
                raise _MidiFormatError(f"meta event cut off at byte {i}")
            length, j = _varlen(data, i + 2)
            i = j + length
        else:
            if status >= 0x80:
                running, i = status, i + 1
            elif running is None:
                raise _MidiFormatError(f"data byte 0x{status:02X} without a status at byte {i}")
            if running >= 0xF0:
                raise _MidiFormatError(f"system message 0x{running:02X} inside a track at byte {i}")
            i += 1 if 0xC0 <= running < 0xE0 else 2
    close()


def _scan_midi(data: bytes, scan: _Scan, at: int = 0) -> None:
    """Scan the SysEx messages of a Standard MIDI File (see :func:`midi_sysex`) that starts at byte
    ``at`` of the file (a RIFF RMID wrapper's offset); every byte named is the file's."""
    messages, error = midi_sysex(data[at:])
    if error is not None:
        scan.problem("midi_error", _BYTE_AT.sub(lambda m: f"byte {int(m[1]) + at}",
                                             f"MIDI file has parts that cannot be read ({error}); ")
                     + (f"the {len(messages)} SysEx message(s) found were read" if messages else
                        "export its SysEx to a .syx file with a MIDI editor"), at)
    try:   # folded once for the whole file: 50,000 events of one problem each gave 50,000 problems
        for base, message, spans in messages:
            problems, voices = len(scan.result.problems), len(scan.result.voices)
            folds = {code: first for code, (_, first) in scan._folded.items()}
            _scan_messages(message, 0, scan)   # an unterminated one as it is: an F7 added would be its last data byte
            place = lambda k: at + _file_position(k, base, spans)   # noqa: E731 - positions of this message's bytes
            scan.result.problems[problems:] = [_placed(p, place) for p in scan.result.problems[problems:]]
            scan.result.voices[voices:] = [replace(v, offset=place(v.offset), problems=tuple(_placed(p, place) for p in
                                                                                              v.problems))
                                           for v in scan.result.voices[voices:]]
            for code, entry in scan._folded.items():   # a fold begun in this message: its first one placed too
                if folds.get(code) is not entry[1]:
                    entry[1] = _placed(entry[1], place)
    finally:
        scan.fold()


#: A byte position as problem messages write it.
_BYTE_AT = re.compile(r"\bbyte (\d+)(?![\dxX])")


def _file_position(k: int, base: int, spans: list[tuple[int, int]]) -> int:
    """Where byte ``k`` of a SysEx joined from MIDI packets (:func:`midi_sysex`) lies in the file:
    its ``F0`` (k = 0) at ``base``, the others in their packet."""
    if k <= 0 or not spans:
        return base + k
    start, pos = next(span for span in reversed(spans) if span[0] <= k)
    return pos + (k - start)


def _placed(p: Problem, place) -> Problem:
    """``p`` with its byte positions, given within a joined MIDI SysEx, moved to the file's."""
    if p.count == 0:   # a voice's stand-in for problems counted only: no position, shared by many voices
        return p
    return replace(p, message=_BYTE_AT.sub(lambda m: f"byte {place(int(m[1]))}", p.message),
                   offset=None if p.offset is None else place(p.offset))


#: MacBinary's header length: the file's data fork follows it (its length at bytes 83–86).
_MACBINARY = 128


def _is_midi(data: bytes) -> int | None:
    """Offset of ``MThd`` in a Standard MIDI File (also inside a RIFF RMID wrapper), else None."""
    if data.startswith(b"MThd"):
        return 0
    if data[:1] == b"\x00" and data[_MACBINARY:_MACBINARY + 4] == b"MThd":   # a MacBinary file from a classic Mac
        return _MACBINARY
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        at = data.find(b"MThd", 12)
        return at if at >= 0 else None
    return None


def decode_bytes(data: bytes, source: str = "<bytes>", full_voice: int | None = None) -> FileResult:
    """Find and decode every DX7 voice in ``data`` (any file content); never raises on content.

    Handles 32-voice banks, single-voice dumps, several messages per file, Standard MIDI Files
    (detected by content), raw headerless voice data and damaged messages; see :data:`PROBLEM_CODES`.
    ``source`` names the file in problem messages. The voices' own problems past :data:`LISTED_PER_CODE`
    of a code are counted (:class:`FileResult`), but for voice ``full_voice`` (from 0: one voice loaded).
    """
    data = bytes(data)
    result = FileResult(source)
    scan = _Scan(source, result, full_voice)
    midi_at = _is_midi(data)
    if midi_at == _MACBINARY and data[:1] == b"\x00":   # MacBinary (not a RIFF RMID with MThd at 128): its data
        # fork only, whose length the header gives (a resource fork follows)
        fork = int.from_bytes(data[83:87], "big")
        data = data[:_MACBINARY + fork] if 0 < fork <= len(data) - _MACBINARY else data
    if midi_at is not None:
        _scan_midi(data, scan, midi_at)
    else:
        _scan(data, 0, scan)
    if midi_at is not None and not result.problems and not result.messages:
        scan.problem("no_sysex", "MIDI file without any SysEx message; skip this file", None)
    if result.messages or scan.yamaha_seen or midi_at is not None:
        return result
    # No Yamaha message at all: maybe voice data saved without its SysEx framing.
    problems = list(result.problems)
    result.problems.clear()
    if not _raw_voices(data, scan):
        # The whole file was "outside any message"; saying so again adds nothing.
        result.problems[:] = [p for p in problems if p.code not in SKIPPED]
        scan.problem("no_sysex", "no DX7 SysEx message and no raw DX7 voice data found (text or "
                     "another format); skip this file", None)
    return result


#: Files larger than this are not read: the largest SysEx collections are a few MB, and decoding
#: holds several times a file's size in memory (a stray disk image would exhaust it).
MAX_FILE_BYTES = 64 << 20


def decode_file(path: str | PathLike[str], full_voice: int | None = None) -> FileResult:
    """Read and decode one file (.syx, .mid, raw, anything); see :func:`decode_bytes`.

    Raises :class:`SysexError` only if the file cannot be read, is not a regular file, or is
    larger than :data:`MAX_FILE_BYTES`.
    """
    import stat

    try:
        st = Path(path).stat()
        if not stat.S_ISREG(st.st_mode):
            raise SysexError(f"{path}: not a regular file (a device or pipe); give a SysEx file")
        if st.st_size > MAX_FILE_BYTES:
            raise SysexError(f"{path}: {st.st_size / 2**20:,.0f} MB, larger than any SysEx collection (the limit "
                             f"is {MAX_FILE_BYTES >> 20} MB); not read")
        data = Path(path).read_bytes()
    except OSError as error:
        raise SysexError(f"cannot read {path}: {error.strerror}; check the path and permissions") from error
    return decode_bytes(data, str(path), full_voice)


def voice_problem_list(result: FileResult) -> list[Problem]:
    """The voices' own problems of a decoded file as listed (import report, ``info``): each listed one,
    then one per code for the ones past :data:`LISTED_PER_CODE` (a bank of FF bytes gave 3,136)."""
    return ([p for v in result.voices for p in v.problems if p.count]
            + [Problem(code, f"{result.path}: {n:,} more of the same ({code}) in the voices after these, not listed "
                       "one by one", None, None, None, True, n) for code, n in result.more_voice_problems.items()])


#: Voice names ``info`` lists for one file (a 64 MB file of banks printed 523,264 lines, audit A6).
LISTED_NAMES = 1024


def describe_sysex(path: str | PathLike[str]) -> dict:
    """Summary of a SysEx (or any) file for ``dexed-data info``: messages, voices, names, problems."""
    result = decode_file(path)
    # the voices' own repairs too (out of range, bit 7), which the import counts (audit Y8: "no problem")
    found = result.problems + voice_problem_list(result)
    counted = sum(p.count for p in found)   # a folded problem stands for many
    return {"file": str(path), "format": "sysex", "messages": result.messages, "voices": len(result.voices),
            "names": [v.name for v in result.voices[:LISTED_NAMES]] + (
                [f"... and {len(result.voices) - LISTED_NAMES:,} more (import the file, then `dexed-data list` shows "
                 "them all)"] if len(result.voices) > LISTED_NAMES else []),
            # bytes outside any message are skipped, as the import's summary says, not rejected
            "problems": [f"{p.code}{' (repaired)' if p.repaired else ' (skipped)' if p.code in SKIPPED else ' (rejected)'}: "
                         f"{p.message}" for p in found],
            **({"problem_count": counted} if counted != len(found) else {})}
