"""Import precision: no voices from data that only looks like a DX7 header; .mid files decode
exactly like .syx (bit 7 masked, split SysEx packets joined)."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np

from dexed_data.sysex import checksum, decode_bytes, midi_sysex

REPO = Path(__file__).resolve().parents[1]
BANK = (REPO / "presets" / "toolkit_bank_a.syx").read_bytes()


def _single_like(count: bytes, valid_checksum: bool, seed: int = 0) -> bytes:
    """Random data behind the start of a single-voice header (F0 43 00 00) and ``count``."""
    rng = np.random.default_rng(seed)
    payload = bytes(rng.integers(0, 128, 155, dtype=np.uint8))
    cs = checksum(payload) if valid_checksum else (checksum(payload) + 1) & 0x7F
    return b"\x00\x01" + b"\xF0\x43\x00\x00" + count + payload + bytes([cs]) + b"\x12\x34" * 10


def test_random_bytes_after_a_header_start_are_not_voices():
    for seed in range(20):
        result = decode_bytes(_single_like(b"\x05\x60", valid_checksum=False, seed=seed))
        assert result.voices == [] and result.messages == 0
        assert any(p.code == "unknown_message" and not p.repaired for p in result.problems)


def test_wrong_count_bytes_are_repaired_when_the_checksum_is_valid():
    result = decode_bytes(_single_like(b"\x05\x60", valid_checksum=True))
    assert len(result.voices) == 1
    assert {p.code for p in result.problems if p.repaired} >= {"bad_count_bytes"}
    # right count bytes but a wrong checksum: kept when the end byte F7 is where the length puts it,
    # not when nothing but the count bytes vouches for the length (a stub followed by other bytes)
    assert len(decode_bytes(_single_like(b"\x01\x1B", valid_checksum=False)).voices) == 0
    whole = _single_like(b"\x01\x1B", valid_checksum=False)
    whole = whole[:2 + 6 + 155 + 1] + b"\xF7" + whole[2 + 6 + 155 + 1:]
    result = decode_bytes(whole)
    assert len(result.voices) == 1 and "bad_checksum" in {p.code for p in result.problems}


def _smf(*events: bytes) -> bytes:
    """A format-0 MIDI file with the given (delta-time-less) events, delta 0 each."""
    track = b"".join(b"\x00" + e for e in events) + b"\x00\xFF\x2F\x00"
    return (b"MThd" + (6).to_bytes(4, "big") + b"\x00\x00\x00\x01\x00\x60"
            + b"MTrk" + len(track).to_bytes(4, "big") + track)


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes(out)


def _sysex_event(status: int, data: bytes) -> bytes:
    return bytes([status]) + _varlen(len(data)) + data


def test_mid_masks_bit7_like_syx():
    bank = bytearray(BANK)
    bank[6 + 5 * 128 + 3] |= 0x80          # a data byte with bit 7 set, as found in real banks
    syx = decode_bytes(bytes(bank))
    mid = decode_bytes(_smf(b"\x90\x3C\x40", b"\x3E\x40", _sysex_event(0xF0, bytes(bank[1:]))))
    assert len(mid.voices) == len(syx.voices) == 32
    assert all(np.array_equal(a.raw, b.raw) for a, b in zip(mid.voices, syx.voices))
    assert any(p.code == "bit7_set" for v in mid.voices for p in v.problems)


def test_mid_joins_split_sysex_packets():
    body = BANK[1:]
    packets = [_sysex_event(0xF0, body[:1000]), _sysex_event(0xF7, body[1000:3000]), _sysex_event(0xF7, body[3000:])]
    messages, error = midi_sysex(_smf(*packets))
    assert error is None and len(messages) == 1 and messages[0][1] == BANK
    result = decode_bytes(_smf(*packets))
    assert len(result.voices) == 32 and result.problems == []
    assert [v.name for v in result.voices] == [v.name for v in decode_bytes(BANK).voices]


def test_bytes_named_in_a_split_or_wrapped_mid_are_the_files_own():
    # a position inside a SysEx joined from packets was its index in the joined message, and a file in
    # a RIFF RMID wrapper was counted from its MThd: both named bytes that hold something else
    bank = bytearray(BANK)
    flagged = 6 + 20 * 128 + 3                          # a data byte of voice 21, in the third packet
    bank[flagged] |= 0x80
    bank[-2] = (bank[-2] + 1) & 0x7F                    # a wrong checksum, in the last packet
    body = bytes(bank[1:])
    data = _smf(_sysex_event(0xF0, body[:1000]), _sysex_event(0xF7, body[1000:2000]), _sysex_event(0xF7, body[2000:]))
    riff = b"RIFF" + (len(data) + 12).to_bytes(4, "little") + b"RMIDdata" + len(data).to_bytes(4, "little") + data
    for file in (data, riff):
        result = decode_bytes(file)
        problems = {p.code: p for v in [None, *result.voices] for p in (result.problems if v is None else v.problems)}
        assert set(problems) == {"bit7_set", "bad_checksum"}, [p.message for p in problems.values()]
        for p in problems.values():
            named = int(re.findall(r"byte (\d+)", p.message)[-1])   # its own; the first names the message
            assert named == p.offset, p.message
        assert file[problems["bit7_set"].offset] == bank[flagged]               # the flagged byte itself
        assert file[problems["bad_checksum"].offset] == bank[-2]                # the checksum byte itself
        at = result.voices[0].offset                                           # the event's F0 (R1), its
        assert file[at] == 0xF0 and file[at + 3:at + 5] == bytes(bank[1:3])    # 2 length bytes, the data


def test_truncated_mid_keeps_the_messages_before_the_cut():
    # and of the message cut short its complete voices, as a .syx cut there keeps them
    data = _smf(_sysex_event(0xF0, BANK[1:]), _sysex_event(0xF0, BANK[1:]))
    result = decode_bytes(data[:-2000])
    cut = 4104 - 2000 - 4                                # the second bank's bytes left (its end-of-track event lost)
    assert len(result.voices) == 32 + (cut - 6) // 128 == 48
    assert [p.code for p in result.problems] == ["midi_error", "truncated_bank"]

