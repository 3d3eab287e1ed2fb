"""dexed_data.sysex: round trips, golden ROM1A values, every malformation, fuzzing, dexed-py agreement."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dexed_data.errors import SysexError
from dexed_data.schema import PARAM_BY_NAME, VOICE_MAX, voice_index
from dexed_data.sysex import (
    BANK_HEADER,
    INIT_VOICE,
    PROBLEM_CODES,
    USED_BITS,
    checksum,
    decode_bytes,
    decode_file,
    encode_bank,
    encode_single,
    pack_voice,
    to_dexed_sysex,
    unpack_voice,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

raw_voices = arrays(np.uint8, VOICE_MAX.shape, elements=st.integers(0, 127)).map(
    lambda a: np.minimum(a, VOICE_MAX))
names = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=10, max_size=10)


def codes(result) -> list[str]:
    return [p.code for p in result.problems]


def bank_of(seed: int = 0, n: int = 32) -> tuple[np.ndarray, list[str], bytes]:
    """A reproducible random bank of in-range voices: (raws (n, 145), names, 4104 bytes)."""
    rng = np.random.default_rng(seed)
    raws = rng.integers(0, VOICE_MAX.astype(int) + 1, size=(n, 145)).astype(np.uint8)
    voice_names = [f"VOICE {i:<4}" for i in range(n)]
    return raws, voice_names, encode_bank(raws, voice_names)


def with_checksum(message: bytearray) -> bytearray:
    message[-2] = checksum(bytes(message[6:-2]))
    return message


# --------------------------------------------------------------------------- round trips


@FAST
@given(raw=raw_voices, name=names)
def test_raw_pack_unpack_is_identity(raw, name):
    packed = pack_voice(raw, name)
    assert len(packed) == 128
    back, back_name, problems = unpack_voice(packed)
    assert np.array_equal(back, raw) and back_name == name and problems == []


@FAST
@given(packed=arrays(np.uint8, (128,), elements=st.integers(0, 127)))
def test_packed_unpack_pack_is_identity_on_used_bits(packed):
    raw, name, problems = unpack_voice(packed.tobytes())
    if not problems:  # in range: only the documented don't-care bits may change
        assert pack_voice(raw, name) == (packed & USED_BITS).tobytes()


@FAST
@given(raw=raw_voices, noise=arrays(np.uint8, (128,), elements=st.integers(0, 255)))
def test_dont_care_bits_and_bit7_never_change_values(raw, noise):
    packed = np.frombuffer(pack_voice(raw, "NOISE"), dtype=np.uint8)
    back, _, _ = unpack_voice((packed | (noise & ~USED_BITS)).tobytes())
    assert np.array_equal(back, raw)


@FAST
@given(raws=st.lists(raw_voices, min_size=0, max_size=32), data=st.data())
def test_encode_bank_decode_is_identity(raws, data):
    voice_names = [data.draw(names) for _ in raws]
    bank = encode_bank(np.array(raws, dtype=np.uint8).reshape(-1, 145), voice_names)
    assert len(bank) == 4104 and bank[:6] == BANK_HEADER
    result = decode_bytes(bank)
    assert result.problems == [] and result.messages == 1 and len(result.voices) == 32
    for raw, name, voice in zip(raws, voice_names, result.voices):
        assert np.array_equal(voice.raw, raw) and voice.name == name and voice.problems == ()
    for voice in result.voices[len(raws):]:
        assert np.array_equal(voice.raw, INIT_VOICE) and voice.name == "INIT VOICE"


@FAST
@given(raw=raw_voices, name=names)
def test_encode_single_decode_is_identity(raw, name):
    message = encode_single(raw, name)
    assert len(message) == 163
    (voice,) = decode_bytes(message).voices
    assert np.array_equal(voice.raw, raw) and voice.name == name
    assert voice.packed_sound == pack_voice(raw, name)[:118]
    assert to_dexed_sysex(raw, name) == message[6:161] + b"\x3f"


def test_a_name_outside_ascii_is_written_with_question_marks_not_other_letters():
    # the top bit was masked: "CAFÉ ÑU" became "CAFi QU"; a NUL stays a NUL (real banks have them)
    (voice,) = decode_bytes(encode_single(INIT_VOICE, "CAFÉ ÑU\0€")).voices
    assert voice.name == "CAF? ?U\0? "


def test_dont_care_bits_are_documented_and_dropped():
    assert USED_BITS[11] == 0x0F and USED_BITS[13] == 0x1F and USED_BITS[15] == 0x3F
    assert USED_BITS[110] == 0x1F and USED_BITS[111] == 0x0F and USED_BITS[116] == 0x7F
    packed = bytearray(pack_voice(INIT_VOICE, "INIT VOICE"))
    packed[11] |= 0x70
    raw, _, problems = unpack_voice(bytes(packed))
    assert np.array_equal(raw, INIT_VOICE) and problems == []


def test_init_voice_and_encoders_validate():
    at = {name: INIT_VOICE[voice_index(name)] for name in
          ("OP1 OUTPUT LEVEL", "OP2 OUTPUT LEVEL", "ALGORITHM", "TRANSPOSE", "OP3 BREAK POINT",
           "OP4 OSC DETUNE", "OP5 F COARSE", "PITCH EG LEVEL 1", "OP6 EG LEVEL 4", "OP6 EG RATE 1")}
    assert at == {"OP1 OUTPUT LEVEL": 99, "OP2 OUTPUT LEVEL": 0, "ALGORITHM": 0, "TRANSPOSE": 24,
                  "OP3 BREAK POINT": 39, "OP4 OSC DETUNE": 7, "OP5 F COARSE": 1,
                  "PITCH EG LEVEL 1": 50, "OP6 EG LEVEL 4": 0, "OP6 EG RATE 1": 99}
    bad = INIT_VOICE.copy()
    bad[voice_index("OP1 OSC DETUNE")] = 15
    with pytest.raises(SysexError, match="OP1 OSC DETUNE"):
        pack_voice(bad, "X")
    with pytest.raises(SysexError, match="32 voices"):
        encode_bank(np.tile(INIT_VOICE, (33, 1)), ["X"] * 33)
    assert len(to_dexed_sysex(INIT_VOICE)) == 156


# --------------------------------------------------------------------------- real data


def test_rom1a_golden_values(rom1a_path):
    result = decode_file(rom1a_path)
    assert result.problems == [] and result.messages == 1 and len(result.voices) == 32
    voice = result.voices[10]
    assert voice.name == "E.PIANO 1 " and voice.voice_index == 10 and voice.offset == 0
    assert voice.raw[voice_index("ALGORITHM")] == 4  # algorithm 5
    assert voice.raw[voice_index("FEEDBACK")] == 6
    assert voice.raw[voice_index("TRANSPOSE")] == 24
    assert result.voices[0].name == "BRASS   1 " and result.voices[0].raw[voice_index("ALGORITHM")] == 21


def test_agrees_with_dexed_py(rom1a_path):
    import dexed

    patches = dexed.Patch.load_bank(str(rom1a_path))
    for patch, voice in zip(patches, decode_file(rom1a_path).voices, strict=True):
        assert patch.to_sysex()[:155] == to_dexed_sysex(voice.raw, voice.name)[:155]
        assert patch.to_packed()[:118] == voice.packed_sound


# --------------------------------------------------------------------------- malformations


def test_bad_checksum_is_repaired():
    raws, _, bank = bank_of()
    damaged = bytearray(bank)
    damaged[-2] ^= 0x55
    result = decode_bytes(bytes(damaged), "bad.syx")
    (problem,) = result.problems
    assert problem.code == "bad_checksum" and problem.repaired and problem.offset == 4102
    assert "bad.syx" in problem.message and "4102" in problem.message
    assert np.array_equal(np.stack([v.raw for v in result.voices]), raws)


def test_count_bytes_10_00_is_repaired():
    raws, _, bank = bank_of()
    result = decode_bytes(bank[:4] + b"\x10\x00" + bank[6:])
    assert codes(result) == ["bad_count_bytes"] and len(result.voices) == 32
    assert np.array_equal(result.voices[31].raw, raws[31])


def test_checksum_byte_f7_or_f0_does_not_split_the_message():
    _, _, bank = bank_of()
    for byte in (0xF7, 0xF0):
        damaged = bank[:-2] + bytes([byte, 0xF7])
        result = decode_bytes(damaged + bank)
        assert result.messages == 2 and len(result.voices) == 64
        assert set(codes(result)) <= {"bad_checksum"}


def test_truncated_bank_keeps_its_whole_voices_and_the_next_message():
    raws, _, bank = bank_of()
    result = decode_bytes(bank[:2000] + bank, "cut.syx")   # 15 whole voices, then a complete bank
    assert codes(result) == ["truncated_bank"] and result.problems[0].repaired
    assert "first 15 complete voice(s) were imported, the other 17 are lost" in result.problems[0].message
    assert len(result.voices) == 15 + 32 and result.voices[15].offset == 2000
    assert all(np.array_equal(v.raw, r) for v, r in zip(result.voices[:15], raws))
    assert codes(decode_bytes(bank[:-100])) == ["truncated_bank"] and len(decode_bytes(bank[:-100]).voices) == 31
    cut = decode_bytes(bank[:100])                          # not one whole voice: rejected
    assert codes(cut) == ["truncated"] and not cut.problems[0].repaired and cut.voices == []


def test_missing_checksum_keeps_data():
    _, _, bank = bank_of()
    result = decode_bytes(bank[:-2] + b"\xF7")
    assert codes(result) == ["bad_checksum"] and len(result.voices) == 32


def test_four_op_bank_is_not_dx7():
    _, _, bank = bank_of()
    vmem = with_checksum(bytearray(bank))
    vmem[3] = 0x04  # TX81Z/DX21 VMEM: same size, other synth
    result = decode_bytes(bytes(vmem))
    assert codes(result) == ["not_dx7"] and result.voices == [] and result.messages == 0


def test_dx7ii_supplement_is_skipped():
    _, _, bank = bank_of()
    aced = bytes([0xF0, 0x43, 0x00, 0x05, 0x00, 0x31]) + bytes(49) + b"\x00\xF7"
    amem = bytes([0xF0, 0x43, 0x00, 0x06, 0x08, 0x60]) + bytes(1120) + b"\x00\xF7"
    result = decode_bytes(aced + bank + amem)
    assert codes(result) == ["dx7ii_supplement", "dx7ii_supplement"]
    assert result.messages == 1 and len(result.voices) == 32 and result.voices[0].offset == len(aced)


def test_trailing_garbage_and_stray_bytes():
    _, _, bank = bank_of()
    result = decode_bytes(b"header" + bank + b"\x00junk")
    assert codes(result) == ["stray_bytes", "trailing_garbage"] and len(result.voices) == 32
    assert result.voices[0].offset == 6


def test_a_file_of_f0_bytes_or_of_many_foreign_messages_is_read_in_linear_time_and_memory():
    # audit Y1: a BMP of light grey (F0 F0 F0 …) took 90 s and 1.5 GB for 2.3 MB: each F0 looked for
    # its F7 to the end of the file, and each made a problem of its own
    import time

    _, _, bank = bank_of()
    t0 = time.perf_counter()
    result = decode_bytes(b"BM" + b"\xF0" * (1 << 20) + bank)  # the bank's own F0 ends the run
    assert len(result.voices) == 32 and time.perf_counter() - t0 < 10
    assert [(p.code, p.count) for p in result.problems] == [("stray_bytes", 1), ("unknown_message", 1)]
    assert "1,048,576 F0 byte(s) that start no message (the next F0 does)" in result.problems[1].message
    assert "1 F0 byte(s) that start no message" in decode_bytes(b"\xF0" + bank).problems[0].message   # F0 F0 43 …
    result = decode_bytes(b"\xF0\x41\xF7" * 1000 + bank + b"\xF0\x41\xF7" * 3)   # many whole foreign messages
    assert len(result.voices) == 32 and len(result.problems) == 101
    assert sum(p.count for p in result.problems) == 1003                      # each still counted
    folded = result.problems[100]
    assert folded.count == 903 and folded.offset == 300 and "903 more of the same (unknown_message)" in folded.message
    # regression review R1: in a MIDI file each SysEx event is a stretch; past 100 in the file, an
    # event's lone problem was replaced by "1 more of the same … from here on" and the next listed again
    roland = [_sysex_event(b"\xF0\x41\x10\x42\x12\x00\xF7")[:-4] for _ in range(150)]
    result = decode_bytes(_smf(b"".join(roland) + _sysex_event(bank)))
    assert len(result.voices) == 32 and len(result.problems) == 101 and sum(p.count for p in result.problems) == 150
    assert not any("more of the same" in p.message for p in result.problems[:100])
    # left out at stop 34: the events past 100 are folded for the whole file, as in any other file
    # (50,000 one-problem events gave 50,000 problems), from the 101st event's own position
    assert result.problems[100].count == 50 and result.problems[100].offset == result.problems[99].offset + 9
    assert f"byte {result.problems[100].offset}: 50 more of the same (unknown_message)" in result.problems[100].message


def test_several_messages_in_one_file():
    _, _, first = bank_of(1)
    _, _, second = bank_of(2)
    single = encode_single(INIT_VOICE, "SINGLE    ")
    other = bytes([0xF0, 0x41, 0x10, 0x42, 0xF7])  # a Roland message
    result = decode_bytes(first + other + single + second)
    assert result.messages == 3 and len(result.voices) == 65
    assert codes(result) == ["unknown_message"]
    assert [v.message_index for v in result.voices[31:34]] == [0, 1, 2]
    assert result.voices[32].name == "SINGLE    " and result.voices[33].voice_index == 0


def test_midi_file_with_sysex(tmp_path):
    import mido

    raws, _, bank = bank_of()
    midi = mido.MidiFile()
    track = mido.MidiTrack()
    track.append(mido.Message("sysex", data=bank[1:-1]))
    midi.tracks.append(track)
    path = tmp_path / "bank.dat"  # detected by content, not by extension
    midi.save(str(path))
    result = decode_file(path)
    assert result.problems == [] and len(result.voices) == 32
    assert np.array_equal(result.voices[5].raw, raws[5])
    raw = path.read_bytes()   # the voice's message is placed at its event's F0 (regression review R1: it was
    at = result.voices[0].offset   # a length byte, 2 bytes past the F0 for a bank)
    assert raw[at] == 0xF0 and raw[at + 3:at + 8] == bank[1:6]   # F0, 2 length bytes, the data
    assert codes(decode_bytes(b"MThd\x00\x00\x00\x06garbage")) == ["midi_error"]


def _smf(*tracks: bytes) -> bytes:
    """A Standard MIDI File of these track bodies."""
    head = b"MThd\x00\x00\x00\x06\x00\x01" + len(tracks).to_bytes(2, "big") + b"\x00\x60"
    return head + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks)


def _sysex_event(message: bytes) -> bytes:
    n = len(message) - 1                                  # F0's event length, a variable-length quantity
    length = bytes([n & 0x7F])
    while n > 0x7F:
        n >>= 7
        length = bytes([(n & 0x7F) | 0x80]) + length
    return b"\x00\xF0" + length + message[1:] + b"\x00\xFF\x2F\x00"


def test_a_longer_midi_header_and_a_macbinary_wrapper_are_read():
    # audit Y1: a header chunk longer than 6 bytes (legal: "read and honour the length") was refused,
    # and a MIDI file with a classic Mac's 128-byte MacBinary header read as junk SysEx
    raws, _, bank = bank_of()
    whole = _smf(_sysex_event(bank))
    longer = b"MThd\x00\x00\x00\x08" + whole[8:14] + b"\x00\x00" + whole[14:]
    mac = bytearray(bytes(65) + b"Midi" + bytes(59))
    mac[83:87] = len(whole).to_bytes(4, "big")                 # the data fork's length; a resource fork follows
    fork = bytes(-len(whole) % 128) + b"\x00\x00\x01\x00" + bytes(300)
    for data in (longer, bytes(65) + b"Midi" + bytes(59) + whole, bytes(mac) + whole + fork):
        result = decode_bytes(data)
        assert codes(result) == [] and len(result.voices) == 32 and np.array_equal(result.voices[3].raw, raws[3])
    assert codes(decode_bytes(b"MThd\x00\x00\x00\x04\x00\x01" + whole[14:])) == ["midi_error"]   # too short
    # regression review R2: a RIFF RMID whose MThd sits at byte 128 is not a MacBinary file to cut short
    info = bytearray(100)
    info[63:67] = (73).to_bytes(4, "big")                # file bytes 83–86: a MacBinary "data fork length"
    body = b"RMID" + b"LIST" + (100).to_bytes(4, "little") + bytes(info) + b"data" + len(whole).to_bytes(4, "little")
    rmid = b"RIFF" + (len(body) + len(whole)).to_bytes(4, "little") + body + whole
    assert rmid.index(b"MThd") == 128
    result = decode_bytes(rmid)
    assert codes(result) == [] and len(result.voices) == 32


def test_midi_bank_cut_short_keeps_its_complete_voices_and_a_bad_track_spares_the_others():
    raws, _, bank = bank_of()
    whole = _smf(_sysex_event(bank))
    assert codes(decode_bytes(whole)) == [] and len(decode_bytes(whole).voices) == 32
    cut = decode_bytes(whole[:2000])                     # as a .syx cut there: its complete voices
    assert len(cut.voices) == len(decode_bytes(bank[:2000 - 22]).voices) == 15
    assert codes(cut) == ["midi_error", "truncated_bank"]
    assert np.array_equal(cut.voices[14].raw, raws[14])
    two = decode_bytes(_smf(b"\x00\x45\x10\x00\xFF\x2F\x00", _sysex_event(bank)))   # track 1 is damaged
    assert len(two.voices) == 32 and codes(two) == ["midi_error"] and "track 1" in two.problems[0].message


def test_midi_never_makes_up_a_byte_and_reads_escaped_sysex():
    raws, _, bank = bank_of()
    short = decode_bytes(_smf(_sysex_event(bank[:-3])))    # the last data byte, checksum and F7 lost
    assert len(short.voices) == 31 and "truncated_bank" in codes(short)   # as the same cut in a .syx
    assert len(decode_bytes(bank[:-3]).voices) == 31
    n = len(bank)                                          # the whole message in an F7 escape event
    escape = b"\x00\xF7" + bytes([0x80 | n >> 7, n & 0x7F]) + bank + b"\x00\xFF\x2F\x00"
    result = decode_bytes(_smf(escape))
    assert len(result.voices) == 32 and codes(result) == [] and np.array_equal(result.voices[5].raw, raws[5])


def test_a_whole_bank_with_header_like_data_bytes_is_not_cut():
    # bytes F0 43 05 (bit 7 set) inside a bank whose count bytes, checksum and F7 are all in place
    raws, _, bank = bank_of()
    data = bytearray(bank)
    at = 6 + 128 * 5 + 12
    data[at:at + 3] = b"\xF0\x43\x05"
    data[-2] = checksum(bytes(data[6:-2]))
    result = decode_bytes(bytes(data))
    assert len(result.voices) == 32 and result.messages == 1
    assert {p.code for v in result.voices for p in v.problems} == {"bit7_set"} and codes(result) == []
    data[-2] ^= 1                                        # a stale checksum: the count bytes and F7 still vouch
    result = decode_bytes(bytes(data))
    assert len(result.voices) == 32 and codes(result) == ["bad_checksum"]
    assert "holds only" not in " ".join(p.message for p in result.problems)
    data[at + 3] = 0xF7                                  # and an F7 before its end: nothing vouches for it: cut
    assert len(decode_bytes(bytes(data)).voices) < 32


def test_a_message_whose_checksum_and_end_byte_are_both_wrong_is_not_decoded():
    # a 21-byte single-voice stub, then a librarian's text (the corpus's ROM*.VBk files): not a voice
    stub = bytes([0xF0, 0x43, 0, 0, 1, 0x1B]) + bytes(range(1, 21)) + b"\xF7" + b"Saved by MyLibrarian 2.0. " * 8
    result = decode_bytes(stub)
    assert result.voices == [] and "checksum and end byte are both wrong" in result.problems[0].message
    raws, _, bank = bank_of()
    crlf = decode_bytes(bank.replace(b"\n", b"\r\n"))   # a bank converted as text: shifted, not decoded
    assert b"\n" in bank and crlf.voices == []
    # each of the three alone still vouches for the length: a checksum, an F7, the next message or the end
    for data in (bytearray(bank[:-1]) + b"\x00" * 40,                     # checksum right, no F7
                 bytearray(bank[:-2]) + bytes([bank[-2] ^ 1]) + b"\xF7",   # stale checksum, F7
                 bytearray(bank[:-2]) + bytes([bank[-2] ^ 1]) + bank,      # stale checksum, then the next bank
                 bytearray(bank[:-2]) + bytes([bank[-2] ^ 1])):            # stale checksum, then the end of file
        result = decode_bytes(bytes(data))
        assert len(result.voices) >= 32 and np.array_equal(result.voices[31].raw, raws[31]), codes(result)


def test_raw_bank_without_header():
    raws, _, bank = bank_of()
    for data in (bank[6:4102], bank[6:4102] + b"\x00\x01\x02"):
        result = decode_bytes(data)
        assert codes(result)[0] == "no_header" and len(result.voices) == 32
        assert np.array_equal(result.voices[7].raw, raws[7])
    unpacked = b"".join(to_dexed_sysex(raw, "UNPACKED  ")[:155] for raw in raws)
    result = decode_bytes(unpacked)
    assert codes(result) == ["no_header"] and np.array_equal(result.voices[3].raw, raws[3])


def test_bit7_is_masked_and_flagged():
    raws, _, bank = bank_of()
    damaged = bytearray(bank)
    damaged[6 + 128 * 3 + 20] |= 0x80
    result = decode_bytes(bytes(damaged))
    (problem,) = result.voices[3].problems
    assert problem.code == "bit7_set" and problem.voice == 3 and problem.offset == 6 + 128 * 3 + 20
    assert np.array_equal(result.voices[3].raw, raws[3])
    assert all(v.problems == () for i, v in enumerate(result.voices) if i != 3)


def test_out_of_range_is_clamped_and_names_the_parameter():
    _, _, bank = bank_of()
    damaged = bytearray(bank)
    byte, shift, _ = PARAM_BY_NAME["OP2 OSC DETUNE"].packed
    damaged[6 + 128 * 5 + byte] |= 15 << shift
    damaged[6 + 128 * 5 + 117] = 100  # transpose
    result = decode_bytes(bytes(with_checksum(damaged)), "range.syx")
    problems = {p.param: p for p in result.voices[5].problems}
    assert set(problems) == {"OP2 OSC DETUNE", "TRANSPOSE"}
    assert all(p.code == "out_of_range" and p.repaired and p.voice == 5 for p in problems.values())
    # the sixth voice: counted from 1 in messages, as FILE.syx:N and `dexed-data list` count it
    assert "range.syx" in problems["TRANSPOSE"].message and "voice 6 (" in problems["TRANSPOSE"].message
    assert result.voices[5].raw[voice_index("OP2 OSC DETUNE")] == 14
    assert result.voices[5].raw[voice_index("TRANSPOSE")] == 48


def test_names_keep_odd_characters():
    _, _, bank = bank_of()
    damaged = bytearray(bank)
    damaged[6 + 118:6 + 128] = b"\x00\x7f\xe9ABCDEFG"
    result = decode_bytes(bytes(with_checksum(damaged)))
    assert result.voices[0].name == "\x00\x7fiABCDEFG"
    assert result.voices[0].problems[0].code == "bit7_set"


def test_text_and_empty_files_have_no_sysex():
    for data in (b"", b"A DX7 bank was here.\n" * 300, bytes(range(32, 127)) * 50):
        result = decode_bytes(data, "notes.txt")
        assert codes(result)[-1] == "no_sysex" and result.voices == []
        assert "notes.txt" in result.problems[-1].message


# --------------------------------------------------------------------------- fuzzing


def check_result(result) -> None:
    assert all(p.code in PROBLEM_CODES for p in result.problems)
    for voice in result.voices:
        assert voice.raw.shape == (145,) and voice.raw.dtype == np.uint8
        assert (voice.raw <= VOICE_MAX).all() and len(voice.name) == 10
        assert len(voice.packed_sound) == 118 and max(voice.packed_sound) < 0x80


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=9000))
def test_decode_bytes_never_raises_on_random_bytes(data):
    check_result(decode_bytes(data))


_BANK = bank_of(3)[2]
_SINGLE = encode_single(INIT_VOICE, "FUZZ")


@settings(max_examples=150, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 8400), st.integers(0, 255), st.sampled_from("sdi")),
                      max_size=8),
       cut=st.integers(0, 8400), prefix=st.binary(max_size=8))
def test_decode_bytes_never_raises_on_mutated_banks(edits, cut, prefix):
    data = bytearray(prefix + _BANK + _SINGLE + _BANK)
    for at, value, kind in edits:
        at %= len(data) + 1
        if kind == "s" and at < len(data):
            data[at] = value
        elif kind == "d":
            del data[at:at + value % 16]
        else:
            data[at:at] = bytes([value, 0xF0, 0x43, 0x00, value % 16])[: value % 6]
    check_result(decode_bytes(bytes(data[:cut] if cut % 3 == 0 else data)))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600))
def test_decode_bytes_never_raises_on_broken_midi(data):
    check_result(decode_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk" + data))


def test_voices_repairs_past_the_listed_ones_are_counted_not_made_one_by_one(tmp_path):
    """Audit A5: a 64 MB file of junk banks made one problem per value out of range (50 million,
    140 MB of memory per MB of input). Past LISTED_PER_CODE of a code in a file they are counted,
    and each voice holds one problem shared by the file's other such voices, so repairs stay known."""
    import json

    from typer.testing import CliRunner

    from dexed_data.cli import app
    from dexed_data.sysex import LISTED_PER_CODE, voice_problem_list

    rng = np.random.default_rng(4)
    packed = rng.integers(0, 128, (8, 32, 128), dtype=np.uint8)
    data = b"".join(BANK_HEADER + b.tobytes() + bytes([checksum(b.tobytes()), 0xF7]) for b in packed)
    data = bytearray(data)
    for i in range(150):                              # bit 7 in 150 voices' first byte (voices 0–149)
        data[6 + (i // 32) * 4104 + (i % 32) * 128] |= 0x80
    result = decode_bytes(bytes(data), "junk.syx")
    from dexed_data.sysex import unpack_voices

    raw, _ = unpack_voices(packed.reshape(-1, 128))
    over = int((raw > VOICE_MAX).sum())
    assert len(result.voices) == 256 and over > 10 * LISTED_PER_CODE
    listed = [p for v in result.voices for p in v.problems if p.count]
    assert sum(p.code == "out_of_range" for p in listed) == LISTED_PER_CODE
    assert sum(p.code == "bit7_set" for p in listed) == LISTED_PER_CODE
    assert result.more_voice_problems == {"out_of_range": over - LISTED_PER_CODE, "bit7_set": 150 - LISTED_PER_CODE}
    stand_ins = {id(p) for v in result.voices for p in v.problems if not p.count}
    assert len(stand_ins) == 2                        # one per code for the whole file
    for i, v in enumerate(result.voices):             # every voice still says what was repaired in it
        want = {c for c, has in (("out_of_range", (raw[i] > VOICE_MAX).any()), ("bit7_set", i < 150)) if has}
        assert {p.code for p in v.problems} == want, i
        assert np.array_equal(v.raw, np.minimum(raw[i], VOICE_MAX))
    shown = voice_problem_list(result)
    assert len(shown) == 2 * LISTED_PER_CODE + 2 and sum(p.count for p in shown) == over + 150
    assert f"{over - LISTED_PER_CODE:,} more of the same (out_of_range)" in shown[-2].message + shown[-1].message
    # the import's report and counts, and info, say the same
    (tmp_path / "junk.syx").write_bytes(bytes(data))
    res = CliRunner().invoke(app, ["import-sysex", str(tmp_path / "junk.syx"), "-o", str(tmp_path / "p.h5"),
                                   "--report", str(tmp_path / "r.json"), "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    (entry,) = report["files"]
    assert len(entry["problems"]) == 2 * LISTED_PER_CODE + 2
    assert sum(p.get("count", 1) for p in entry["problems"] if p["code"] == "out_of_range") == over
    repaired_voices = int(((raw > VOICE_MAX).any(1) | (np.arange(256) < 150)).sum())
    assert report["summary"]["voices_repaired"] == repaired_voices
    assert entry["repaired"]["out_of_range"] == int((raw > VOICE_MAX).any(1).sum()) and entry["repaired"]["bit7_set"] == 150
    res = CliRunner().invoke(app, ["info", str(tmp_path / "junk.syx")])
    assert res.exit_code == 0 and f"problem_count: {over + 150}" in res.output, res.output[-400:]
    # A6: info lists the first LISTED_NAMES names (523,264 lines for a 64 MB file), then counts the rest
    from dexed_data.sysex import LISTED_NAMES, describe_sysex

    (tmp_path / "many.syx").write_bytes(bytes(data) * 5)
    names = describe_sysex(tmp_path / "many.syx")["names"]
    assert len(names) == LISTED_NAMES + 1 and names[-1].startswith(f"... and {5 * 256 - LISTED_NAMES:,} more")
    # R5: one voice loaded (FILE.syx:N, as interpolate and match take them) still names each repair
    from dexed_data.voice import load_voice

    loaded = load_voice(f"{tmp_path / 'junk.syx'}:200")
    clamped = np.flatnonzero(raw[199] > VOICE_MAX)
    assert len(loaded.repairs) == len(clamped) > 1 and all("voice 8 (" in r and "clamped to" in r for r in loaded.repairs)
    assert sum("(repaired)" in line for line in res.output.splitlines()) == 2 * LISTED_PER_CODE + 2
