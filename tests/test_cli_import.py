"""`dexed-data import-sysex`, `export` and `info` end to end, on hand-made and bundled SysEx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from dexed_data import sysex
from dexed_data.catalogue import read_catalogue
from dexed_data.cli import app
from dexed_data.schema import VOICE_MAX

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    raws = rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(40, VOICE_MAX.size)).astype(np.uint8)
    root = tmp_path / "syx"
    (root / "deep" / "er").mkdir(parents=True)
    (root / "one.syx").write_bytes(sysex.encode_bank(raws[:32], [f"ONE {i}" for i in range(32)]))
    (root / "deep" / "two.SYX").write_bytes(sysex.encode_bank(raws[24:40], [f"TWO {i}" for i in range(16)]))
    broken = bytearray(sysex.encode_bank(raws[:8], [f"BRK {i}" for i in range(8)]))
    broken[-2] = (broken[-2] + 1) & 0x7F  # wrong checksum
    (root / "deep" / "er" / "broken").write_bytes(bytes(broken))
    (root / "deep" / "er" / "half.syx").write_bytes(bytes(broken[:2000]))
    (root / "readme.txt").write_text("hello")
    (root / "junk.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return root


def test_import_info_export_end_to_end(collection, tmp_path):
    out, report = tmp_path / "presets.h5", tmp_path / "report.json"
    result = invoke("import-sysex", collection, "-o", out, "--report", report, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "files seen" in result.output and "unique presets" in result.output
    rep = json.loads(report.read_text())
    assert rep["format"] == "dexed-import-report" and rep["summary"]["files_seen"] == 6
    outcomes = {f["path"]: f["outcome"] for f in rep["files"]}
    assert outcomes["deep/er/broken"] == "repaired" and outcomes["deep/er/half.syx"] == "repaired"
    half = next(f for f in rep["files"] if f["path"] == "deep/er/half.syx")   # cut off: its 15 whole voices kept
    assert half["imported"] == 15 and half["repaired"] == {"truncated_bank": 15}
    assert outcomes["readme.txt"] == "no_dx7_data" and outcomes["junk.mid"] == "rejected"
    assert set(rep["summary"]["unique"]) == {"packed_as_found", "packed_masked", "raw_values", "sound_equivalent"}
    cat = read_catalogue(out)
    assert len(cat) == 40 + 1  # 40 random voices + INIT VOICE padding of the 16-voice bank
    assert rep["summary"]["unique"]["raw_values"] == 41

    info = invoke("info", out)
    assert info.exit_code == 0, info.output
    assert "dexed-catalogue" in info.output and "presets: 41" in info.output
    assert "schema_matches: True" in info.output

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(cat.ids[:3]))
    exported = invoke("export", out, "--ids", ids_file, "-o", tmp_path / "x.syx")
    assert exported.exit_code == 0, exported.output
    assert sysex.decode_file(tmp_path / "x.syx").problems == []
    exported = invoke("export", out, "--all", "-o", tmp_path / "all.syx")
    assert exported.exit_code == 0 and (tmp_path / "all_2.syx").is_file()
    exported = invoke("export", out, "--ids", ",".join(cat.ids[:2]), "--single", "-o", tmp_path / "s.syx")
    assert exported.exit_code == 0 and len((tmp_path / "s_2.syx").read_bytes()) == 163

    again = tmp_path / "again.h5"
    assert invoke("import-sysex", tmp_path / "all.syx", tmp_path / "all_2.syx", "-o", again).exit_code == 0
    assert read_catalogue(again).ids == cat.ids

    syx_info = invoke("info", collection / "one.syx")
    assert syx_info.exit_code == 0 and "voices: 32" in syx_info.output


def test_strict(collection, tmp_path):
    result = invoke("import-sysex", collection, "-o", tmp_path / "p.h5", "--strict", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert s["rejected_by_reason"]["strict:bad_checksum"] == 32
    assert s["rejected_by_reason"]["strict:truncated_bank"] == 15   # the whole voices of the cut-off bank
    assert s["voices_rejected"] == 32 + 15 and s["repaired_by_reason"] == {}


def test_errors_are_one_plain_line(tmp_path):
    result = invoke("import-sysex", tmp_path / "missing", "-o", tmp_path / "p.h5")
    assert result.exit_code == 2 and "error: no such file or folder" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    result = invoke("export", tmp_path / "bad.h5", "--all", "-o", tmp_path / "x.syx")
    assert result.exit_code == 2 and "error:" in result.output
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something-else"
    result = invoke("info", tmp_path / "other.h5")
    assert result.exit_code == 2 and "unknown format" in result.output
    proc = subprocess.run([sys.executable, "-m", "dexed_data", "info", str(tmp_path / "nope.h5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


def test_an_option_given_twice_is_refused_not_half_used(tmp_path):
    """Audit A3: typer kept the last of a repeated option and dropped the first without a word
    (render --notes 40:85 --notes 60:85 rendered 60:85 alone; import-sysex -o a.h5 -o b.h5 wrote b.h5)."""
    from dexed_data.cli import app as data_app
    from dexed_data.console import repeated_option
    from preset_model.cli import app as model_app

    said = repeated_option(data_app, ["render", "p.h5", "--notes", "40:85", "--notes=60:85", "-o", "d.h5"])
    assert said.startswith("--notes was given 2 times (--notes 40:85, --notes 60:85)") and "give it once" in said
    assert repeated_option(model_app, ["evaluate", "run", "-o", "e1", "--output", "e2"]).startswith("-o was given 2")
    assert repeated_option(data_app, ["render", "p.h5", "-o", "a.h5", "-ob.h5"]).startswith("-o was given 2 times "
                                                                                           "(-o a.h5, -o b.h5)")
    assert repeated_option(data_app, ["render", "p.h5", "-j", "1", "-j2"]) is not None   # glued short forms (R1)
    assert repeated_option(data_app, ["render", "p.h5", "-ob.h5", "-j2"]) is None
    assert repeated_option(data_app, ["render", "--help", "-o", "a", "-o", "b"]) is None   # the help, as asked
    # flags, options that take several values, one use each, values that look like options: all fine
    assert repeated_option(data_app, ["render", "p.h5", "--ids", "a", "--ids", "b", "--no-progress", "--progress",
                                      "-o", "--notes", "--notes", "60:85"]) is None
    assert repeated_option(data_app, ["list", "p.h5", "--", "--name", "--name"]) is None
    assert repeated_option(data_app, []) is None and repeated_option(data_app, ["--help"]) is None
    proc = subprocess.run([sys.executable, "-m", "dexed_data", "import-sysex", str(tmp_path), "-o", str(tmp_path / "a.h5"),
                           "-o", str(tmp_path / "b.h5")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: -o was given 2 times") and not list(tmp_path.iterdir())
    # audit A3: what typer cannot parse was a box of six lines; now one line, as every other error
    for module, args, said in (("dexed_data", ["render", "p.h5", "--limit", "abc"], "error: Invalid value for '--limit'"),
                               ("preset_model", ["fit", "--out", "r", "--bogus"], "error: No such option: --bogus"),
                               ("dexed_data", ["list"], "error: Missing argument 'file' (see `"),
                               ("dexed_data", ["render", "p.h5", "-o"],   # no context: the command line's (R2)
                                "error: Option '-o' requires an argument (see `python -m dexed_data render --help`)")):
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.startswith(said) and proc.stderr.count("\n") == 1, proc.stderr
        assert "--help`)" in proc.stderr


def test_bundled_presets_import(presets_dir, tmp_path):
    if not any(p.suffix.lower() == ".syx" for p in presets_dir.rglob("*")):
        pytest.skip("presets/ has no .syx yet")
    result = invoke("import-sysex", presets_dir, "-o", tmp_path / "p.h5", "--report", tmp_path / "r.json",
                    "--strict")
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert s["voices_imported"] > 0 and s["voices_rejected"] == 0
    assert s["repaired_by_reason"] == {}


def test_links_are_followed_once_and_the_catalogue_ignores_the_walk_order(tmp_path):
    # a linked folder is read; two paths to one file (hard link, link) are read once, under the first
    # path in sorted order, and the other is in the report; a loop of links ends; the order of the
    # arguments changes nothing
    import os

    bank_a = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(2, 0), ["A0", "A1"])
    bank_b = sysex.encode_bank(np.minimum(VOICE_MAX, 5).astype(np.uint8)[None].repeat(2, 0), ["B0", "B1"])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.syx").write_bytes(bank_b)
    a, b = tmp_path / "in" / "A", tmp_path / "in" / "B"
    a.mkdir(parents=True)
    b.mkdir()
    (a / "a.syx").write_bytes(bank_a)
    os.link(a / "a.syx", b / "zz.syx")
    (b / "linked").symlink_to(tmp_path / "elsewhere")
    (b / "up").symlink_to(tmp_path / "in")                        # a loop
    results = []
    for order in ((a, b), (b, a)):
        out, rep = tmp_path / f"{order[0].name}.h5", tmp_path / f"{order[0].name}.json"
        result = invoke("import-sysex", *order, "-o", out, "--report", rep, "--no-progress")
        assert result.exit_code == 0, result.output
        files = {f["path"]: f for f in json.loads(rep.read_text())["files"]}
        assert files["B/linked/b.syx"]["imported"] == 32                  # a bank, padded with INIT VOICE
        assert files["B/zz.syx"]["outcome"] == "same_file" and "A/a.syx" in files["B/zz.syx"]["problems"][0]["message"]
        assert files["A/a.syx"]["imported"] == 32
        with h5py.File(out) as f:
            results.append((f["presets/raw"][:].tobytes(), sorted(f["occurrences/path"][:].tolist())))
    assert results[0] == results[1]
    assert b"B/zz.syx" not in results[0][1] and b"B/linked/b.syx" in results[0][1]


def test_report_of_a_file_name_that_is_not_utf8(tmp_path):
    import os

    root = tmp_path / "in"
    root.mkdir()
    name = os.fsdecode(b"bad\xff.syx")
    (root / name).write_bytes(sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None], ["X"]))
    result = invoke("import-sysex", root, "-o", tmp_path / "c.h5", "--report", tmp_path / "r.json", "--no-progress")
    assert result.exit_code == 0, result.output
    rep = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert [f["path"] for f in rep["files"]] == ["bad\\xff.syx"]               # as the catalogue stores it
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["occurrences/path"][0] == b"bad\\xff.syx"


def test_list_keeps_one_line_per_preset_when_a_path_holds_a_newline(tmp_path):
    root = tmp_path / "in" / "a\nb"
    root.mkdir(parents=True)
    (root / "x.syx").write_bytes(sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None], ["X"]))
    assert invoke("import-sysex", tmp_path / "in", "-o", tmp_path / "c.h5", "--no-progress").exit_code == 0
    result = invoke("list", tmp_path / "c.h5")
    lines = [x for x in result.stdout.splitlines() if x.strip() and "presets" not in x]
    assert result.exit_code == 0 and len(lines) == 2 and all("a\\nb/x.syx:" in x for x in lines), result.stdout
    info = invoke("info", tmp_path / "c.h5")                 # the catalogue's top sources: one line each
    assert info.exit_code == 0 and "  a\\nb  " in info.stdout, info.stdout


def test_different_files_with_one_relative_path_are_both_imported_in_any_order(tmp_path):
    rng = np.random.default_rng(5)
    raws = rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(64, VOICE_MAX.size)).astype(np.uint8)
    for k, side in enumerate("ab"):
        (tmp_path / side / "bank").mkdir(parents=True)
        (tmp_path / side / "bank" / "x.syx").write_bytes(sysex.encode_bank(raws[32 * k:32 * (k + 1)],
                                                                           [f"{side} {i}" for i in range(32)]))
    runs = {}
    for order in (("a", "b"), ("b", "a")):
        out = tmp_path / f"{''.join(order)}.h5"
        res = invoke("import-sysex", *(tmp_path / s / "bank" for s in order), "-o", out, "--no-progress")
        assert res.exit_code == 0, res.output
        runs[order] = read_catalogue(out)
    for cat in runs.values():
        assert len(cat) == 64 and sorted(set(cat.occurrences["path"])) == ["a/bank/x.syx", "b/bank/x.syx"]
    assert np.array_equal(runs["a", "b"].raw, runs["b", "a"].raw) and runs["a", "b"].ids == runs["b", "a"].ids
    # the same file reached twice is still read once
    res = invoke("import-sysex", tmp_path / "a", tmp_path / "a", "-o", tmp_path / "twice.h5", "--no-progress")
    assert res.exit_code == 0 and len(read_catalogue(tmp_path / "twice.h5").occurrences["path"]) == 32
    # a name from the shared folder that is a third argument's own name: named from the shared folder too
    (tmp_path / "s" / "a" / "bank").mkdir(parents=True)
    (tmp_path / "s" / "a" / "bank" / "x.syx").write_bytes(sysex.encode_bank(raws[:32][::-1], [f"s {i}" for i in range(32)]))
    res = invoke("import-sysex", tmp_path / "a" / "bank", tmp_path / "b" / "bank", tmp_path / "s", "-o",
                 tmp_path / "three.h5", "--no-progress")
    assert res.exit_code == 0, res.output
    paths = read_catalogue(tmp_path / "three.h5").occurrences["path"]
    assert sorted(set(paths)) == ["a/bank/x.syx", "b/bank/x.syx", "s/a/bank/x.syx"] and len(paths) == 96


def test_list_names_the_message_of_a_file_holding_several(tmp_path):
    rng = np.random.default_rng(6)
    raws = rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(64, VOICE_MAX.size)).astype(np.uint8)
    (tmp_path / "both.syx").write_bytes(sysex.encode_bank(raws[:32], [f"A{i}" for i in range(32)])
                                        + sysex.encode_bank(raws[32:], [f"B{i}" for i in range(32)]))
    assert invoke("import-sysex", tmp_path / "both.syx", "-o", tmp_path / "c.h5", "--no-progress").exit_code == 0
    lines = invoke("list", tmp_path / "c.h5").stdout.splitlines()
    a18 = [x for x in lines if " A17 " in x]
    b18 = [x for x in lines if " B17 " in x]
    assert a18[0].endswith("both.syx:18") and b18[0].endswith("both.syx:18 (message 2)"), lines


def test_paths_that_cannot_be_looked_up_give_one_line(tmp_path):
    # Python 3.11's Path.exists() raises for a loop of links or a name too long instead of
    # answering; a file link that loops inside a folder is counted as unreadable, the rest imported
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(2, 0), ["A0", "A1"])
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.syx").write_bytes(bank)
    (folder / "me.syx").symlink_to("me.syx")
    result = invoke("import-sysex", folder, "-o", tmp_path / "p.h5", "--no-progress")
    assert result.exit_code == 0, result.output
    assert read_catalogue(tmp_path / "p.h5").raw.shape[0] == 2
    (tmp_path / "loop.h5").symlink_to("loop.h5")
    (tmp_path / "dangling.h5").symlink_to(tmp_path / "nowhere" / "p.h5")
    long = "x" * 300
    cases = [
        (("import-sysex", folder, "-o", tmp_path / "loop.h5"), "loop of links"),
        (("import-sysex", folder, "-o", tmp_path / "p2.h5", "--report", tmp_path / "loop.h5"), "loop of links"),
        (("import-sysex", folder / f"{long}.syx", "-o", tmp_path / "p3.h5"), "name is too long"),
        (("import-sysex", folder, "-o", tmp_path / f"{long}.h5"), "name is too long"),
        (("import-sysex", folder, "-o", tmp_path / f"{long}" / "p.h5"), "name is too long"),
        (("info", tmp_path / f"{long}.h5"), "name is too long"),
        (("list", tmp_path / f"{long}.h5"), "name is too long"),
        (("export", tmp_path / "p.h5", "--all", "-o", tmp_path / long / "b.syx"), "name is too long"),   # audit Z13
        (("export-wav", tmp_path / "p.h5", "-o", tmp_path / long / "w"), "name is too long"),
        (("import-sysex", folder, "-o", tmp_path / "dangling.h5"), "is a broken link"),
        (("import-sysex", folder, "-o", tmp_path / "dangling.h5", "--force"), "is a broken link"),
        # the name fits, the temporary file beside it (.NAME.PID.tmp) does not: say how long a name may be
        (("import-sysex", folder, "-o", tmp_path / ("y" * 247 + ".h5")), "use a name of at most 242 bytes"),
        # and before the folders it would go in are made (a render left them, refused at its lock file)
        (("import-sysex", folder, "-o", tmp_path / "new" / ("y" * 247 + ".h5")), "use a name of at most 242 bytes"),
        (("render", tmp_path / "p.h5", "-o", tmp_path / "new" / "deeper" / ("y" * 247 + ".h5")),
         "use a name of at most 242 bytes"),
    ]
    for args, said in cases:
        result = invoke(*args, "--no-progress") if args[0] == "import-sysex" else invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert said in result.output and "Traceback" not in result.output, (args, result.output)
        assert result.output.count("error:") == 1
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "dangling.h5").is_symlink()
    assert not (tmp_path / "new").exists()


def test_an_import_that_finds_no_voice_says_why_each_file_was_rejected(tmp_path):
    import os

    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "pipe.syx")
    with open(tmp_path / "in" / "huge.syx", "wb") as f:   # sparse: over the 64 MB a SysEx file may have
        f.truncate(65 << 20)
    result = invoke("import-sysex", tmp_path / "in", "-o", tmp_path / "p.h5", "--no-progress")
    assert result.exit_code == 2 and "nothing written" in result.output
    said = " ".join(result.output.split("by outcome:")[1].split())
    assert "pipe.syx: " in said and "huge.syx: " in said and "not a regular file" in said   # each file's own problem
    assert not (tmp_path / "p.h5").exists()


def test_a_damaged_dx7_bank_is_rejected_with_its_own_reason(tmp_path):
    # a bank converted as text (LF → CRLF) is a DX7 file gone wrong, not "no DX7 data"; and the error
    # names the problem that rejected a file, not the stray bytes skipped before it
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(32, 0), [f"V{i}" for i in range(32)])
    (tmp_path / "crlf.syx").write_bytes(bank.replace(b"\n", b"\r\n") if b"\n" in bank else bank[:6] + b"\r" + bank[6:])
    (tmp_path / "cut.syx").write_bytes(b"hello" + bank[:60])
    result = invoke("import-sysex", tmp_path / "crlf.syx", "-o", tmp_path / "p.h5", "--report", tmp_path / "r.json",
                    "--no-progress")
    assert result.exit_code == 2
    assert json.loads((tmp_path / "r.json").read_text())["files"][0]["outcome"] == "rejected"
    result = invoke("import-sysex", tmp_path / "cut.syx", "-o", tmp_path / "p.h5", "--no-progress")
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "holds only 54 of its 4096 data bytes" in said and "outside any SysEx" not in said


def test_info_says_what_the_import_says_and_errors_stay_on_one_line(tmp_path):
    # audit Y1: info called ignored bytes "(rejected)" where the import skips them; an empty .h5 was
    # read as SysEx ("no DX7 voice in it") where `list` says it is empty; a newline in a file name
    # split an error over two lines (list and info write it as \n)
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(32, 0), ["A"] * 32)
    (tmp_path / "junk.syx").write_bytes(bank + b"junk\n")
    result = invoke("info", tmp_path / "junk.syx")
    assert result.exit_code == 0 and "trailing_garbage (skipped): " in result.output, result.output
    (tmp_path / "zero.h5").write_bytes(b"")
    result = invoke("info", tmp_path / "zero.h5")
    assert result.exit_code == 2 and "empty file (0 bytes), not a catalogue or dataset" in result.output
    odd = tmp_path / "em\npty.syx"
    odd.write_bytes(b"")
    res = subprocess.run([sys.executable, "-m", "dexed_data", "import-sysex", str(odd), "-o", str(tmp_path / "p.h5"),
                          "--no-progress"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "em\\npty.syx" in res.stderr, res.stderr
    (tmp_path / "roland.syx").write_bytes(b"\xF0\x41\x10\x42\x12\xF7" * 1000)   # R1: it said "and 101 more"
    result = invoke("info", tmp_path / "roland.syx")
    assert result.exit_code == 2 and "; and 1,000 more)" in result.output, result.output   # 999 + no_sysex
    for name in ("out\nx/", "out\x0bx/"):                                   # R1: -o's own check, \v too
        res = subprocess.run([sys.executable, "-m", "dexed_data", "import-sysex", str(tmp_path / "junk.syx"), "-o",
                              f"{tmp_path}/{name}"], capture_output=True, text=True)
        assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    res = subprocess.run([sys.executable, "-m", "preset_model", "match", "--data", str(tmp_path / "no\nne.h5"),
                          str(odd), "-o", str(tmp_path / "x.syx")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no\\nne.h5" in res.stderr, res.stderr


def test_a_midi_file_partly_read_is_not_counted_as_a_rejected_file(tmp_path):
    # audit Y1: a MIDI file whose header declares more tracks than it holds imported its 32 voices,
    # yet the summary listed it under "rejected (files)"
    import mido

    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(32, 0), ["A"] * 32)
    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.Message("sysex", data=bank[1:-1])]))
    midi.save(str(tmp_path / "m.mid"))
    data = (tmp_path / "m.mid").read_bytes()
    (tmp_path / "more.mid").write_bytes(data[:10] + (3).to_bytes(2, "big") + data[12:])   # 3 tracks declared, 1 there
    (tmp_path / "none.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    result = invoke("import-sysex", tmp_path / "more.mid", tmp_path / "none.mid", "-o", tmp_path / "p.h5",
                    "--report", tmp_path / "r.json", "--no-progress")
    assert result.exit_code == 0, result.output
    lines = {line[:20].strip(): line[20:].strip() for line in result.output.splitlines()}
    assert lines["partly read (files)"] == "midi_error 1" and lines["rejected (files)"] == "midi_error 1", result.output
    s = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert s["rejected_by_reason"]["midi_error"] == 2 and s["partly_read_by_reason"] == {"midi_error": 1}


def test_a_folder_reached_by_many_links_is_walked_once(tmp_path):
    """Audit A6: 16 levels of two links each to the next level made 65,536 paths to one file (2^N: 30
    levels would never end). Each folder is walked once, at its first path; the other is listed once."""
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(2, 0), ["A0", "A1"])
    levels = 24
    for i in range(levels + 1):
        (tmp_path / "bomb" / f"l{i}").mkdir(parents=True)
    for i in range(levels):
        for name in "xy":
            (tmp_path / "bomb" / f"l{i}" / name).symlink_to(f"../l{i + 1}")
    (tmp_path / "bomb" / f"l{levels}" / "a.syx").write_bytes(bank)
    rep = tmp_path / "r.json"
    result = invoke("import-sysex", tmp_path / "bomb" / "l0", "-o", tmp_path / "b.h5", "--report", rep, "--no-progress")
    assert result.exit_code == 0, result.output
    files = json.loads(rep.read_text())["files"]
    assert len(files) == levels + 1 and [f["path"] for f in files] == sorted(f["path"] for f in files)
    (read,) = [f for f in files if f["outcome"] != "same_file"]
    assert read["path"] == "x/" * levels + "a.syx" and read["imported"] == 32
    again = {f["path"]: f["problems"][0]["message"] for f in files if f["outcome"] == "same_file"}
    y, x = "x/" * (levels - 1) + "y", "x/" * (levels - 1) + "x"
    assert again[y] == f"{y}: the same folder as {x} (a link to it, or given twice); read once, as {x}"


def test_a_folder_reached_twice_is_read_at_its_first_path_in_sorted_order(tmp_path):
    """R6: the walk took "Synth/patches" before "Synth-backup" (a link to it), where the sorted order of the
    paths, which picks the file read among two paths to it, takes "Synth-backup/a.syx"; and two arguments
    with the same inner layout lost one folder's entry (named alike before the files were renamed apart)."""
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None].repeat(2, 0), ["A0", "A1"])
    (tmp_path / "root" / "Synth" / "patches").mkdir(parents=True)
    (tmp_path / "root" / "Synth" / "patches" / "a.syx").write_bytes(bank)
    (tmp_path / "root" / "Synth-backup").symlink_to("Synth/patches")
    rep = tmp_path / "r.json"
    assert invoke("import-sysex", tmp_path / "root", "-o", tmp_path / "p.h5", "--report", rep).exit_code == 0
    files = {f["path"]: f["outcome"] for f in json.loads(rep.read_text())["files"]}
    assert files == {"Synth-backup/a.syx": "imported", "Synth/patches": "same_file"}
    for side, level in (("a", 3), ("b", 5)):
        sub = tmp_path / side / "bank" / "sub"
        sub.mkdir(parents=True)
        (sub / "y.syx").write_bytes(sysex.encode_bank(np.minimum(VOICE_MAX, level).astype(np.uint8)[None], ["Y"]))
        (sub.parent / "s2").symlink_to("sub")
    rep = tmp_path / "r2.json"
    assert invoke("import-sysex", tmp_path / "a" / "bank", tmp_path / "b" / "bank", "-o", tmp_path / "q.h5",
                  "--report", rep).exit_code == 0
    files = {f["path"]: f["outcome"] for f in json.loads(rep.read_text())["files"]}
    assert files == {"a/bank/s2/y.syx": "imported", "a/bank/sub": "same_file",
                     "b/bank/s2/y.syx": "imported", "b/bank/sub": "same_file"}


def test_links_to_every_level_of_a_chain_walk_each_folder_once(tmp_path):
    """R7: a folder was walked again at every shorter path (a link to each level of a chain of 150 folders:
    11,327 report entries, quadratic)."""
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None], ["C"])
    level, chain = tmp_path / "top" / "a", 40
    level.mkdir(parents=True)
    for i in range(chain):
        level = level / "x"
        level.mkdir()
        (level / "s.syx").write_bytes(b"\xf0\x43\x00\x09\x20\x00\xf7")
        (tmp_path / "top" / f"l{i:03d}").symlink_to(level)
    (level / "f.syx").write_bytes(bank)
    rep = tmp_path / "r.json"
    assert invoke("import-sysex", tmp_path / "top", "-o", tmp_path / "p.h5", "--report", rep).exit_code == 0
    assert len(json.loads(rep.read_text())["files"]) == 2 * chain + 1     # each file once, each link once


def test_voices_below_a_path_too_long_for_the_system_are_read_through_a_shorter_link(tmp_path):
    """R6, R8: a folder was walked once, at its first path, even when a file below it was too long to be
    read there (4,096 bytes) and a link reached it by a shorter path: its voices were lost."""
    bank = sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None], ["LONG"])
    (tmp_path / "top" / "a").mkdir(parents=True)
    start = os.getcwd()
    try:
        os.chdir(tmp_path / "top" / "a")
        while len(os.fsencode(os.path.abspath("."))) < 3700:
            os.mkdir("d" * 99)
            os.chdir("d" * 99)
        far = "F" * (3800 - len(os.fsencode(os.path.abspath("."))) - 1)
        os.mkdir(far)
        os.chdir(far)
        target = os.path.abspath(".")
        os.mkdir("G" * 240)                       # its files' paths pass 4,096 bytes here
        os.chdir("G" * 240)
        with open("s" * 200 + ".syx", "wb") as f:
            f.write(bank)
    finally:
        os.chdir(start)
    (tmp_path / "top" / "z").symlink_to(target)
    rep = tmp_path / "r.json"
    result = invoke("import-sysex", tmp_path / "top", "-o", tmp_path / "p.h5", "--report", rep)
    assert result.exit_code == 0, result.output
    files = json.loads(rep.read_text())["files"]
    assert [f["outcome"] for f in files] == ["rejected", "imported"]   # at the long path, then through z
    assert files[1]["path"] == f"z/{'G' * 240}/{'s' * 200}.syx" and files[1]["imported"] == 32   # (a padded bank)


def test_a_file_first_reached_through_more_links_than_the_system_follows_is_read_at_a_shorter_path(tmp_path):
    """R9: a folder first reached through 41 links (more than the system follows, ELOOP) was walked once,
    there, and its file was lost though another link reached it directly."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "bank.syx").write_bytes(sysex.encode_bank(np.minimum(VOICE_MAX, 3).astype(np.uint8)[None], ["L"]))
    real = tmp_path / "top" / "real"
    for i in range(1, 46):
        (real / f"c{i}").mkdir(parents=True)
    for i in range(1, 45):
        (real / f"c{i}" / "n").symlink_to(f"../c{i + 1}")
    (real / "c41" / "v.syx").symlink_to(tmp_path / "outside" / "bank.syx")
    (tmp_path / "top" / "zz").symlink_to("real/c41")
    rep = tmp_path / "r.json"
    result = invoke("import-sysex", tmp_path / "top", "-o", tmp_path / "p.h5", "--report", rep)
    assert result.exit_code == 0, result.output
    assert sum(f["imported"] for f in json.loads(rep.read_text())["files"]) == 32
