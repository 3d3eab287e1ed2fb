"""The real Dexed plug-in through DawDreamer: clean state per note, equality to the embedded engine
and to the golden renders, read-back of what was set, both parameter layouts, check-plugin.

Needs ../shared/plugins/Dexed.vst3 (or DEXED_PLUGIN): skips with a reason without it, fails under CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dexed_data.cli import app
from dexed_data.engines import (DawDreamerEngine, EngineSpec, dexed_voice_from_state, host_resettable, lfo_deltas,
                                lfo_recipe, make_engine)
from dexed_data.errors import EngineError
from dexed_data.schema import PARAM_BY_NAME, PARAMS, VOICE_PARAMS, apply_fixed, voice_index
from dexed_data.sysex import decode_file

#: Max |plug-in − dexed engine| (float32 audio, full scale 1.0) the plug-in path promises.
TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def rom1a(rom1a_path) -> dict[str, np.ndarray]:
    """ROM1A's voices by stripped name, fixed parameters applied (TRANSPOSE 24)."""
    return {v.name.strip(): apply_fixed(v.raw) for v in decode_file(rom1a_path).voices}


@pytest.fixture(scope="module")
def plugin_engine(dexed_plugin):
    return make_engine(EngineSpec(name="dawdreamer", plugin=dexed_plugin))


@pytest.fixture(scope="module")
def dexed_engine():
    return make_engine(EngineSpec())


def test_lfo_recipe_brings_the_synced_phase_to_zero():
    # the arithmetic the reset relies on, checked independently of the solver
    for sr, block in ((22050, 512), (44100, 256), (48000, 512)):
        r = lfo_recipe(sr, block)
        d, c = lfo_deltas(sr), block // 64
        phase = (1 << 31) - 1 + (c - r.keydown_chunk) * d[r.speeds[0]]
        phase += c * sum(d[s] for s in r.speeds[1:]) + c * d[r.speeds[-1]]   # + the host's trailing block
        assert phase % (1 << 32) == 0
    with pytest.raises(EngineError, match="multiple of 64"):
        lfo_recipe(22050, 500)


def test_lfo_voice_with_key_sync_off_repeats_and_matches(plugin_engine, dexed_engine, rom1a, dexed_plugin):
    brass = rom1a["BRASS   1"]   # LFO KEY SYNC off, audible LFO: differed by up to 0.84 run to run
    assert brass[voice_index("LFO KEY SYNC")] == 0 and host_resettable(brass)
    notes = [(60, 85), (48, 127)]
    a = plugin_engine.render(brass, notes, 1.0, 0.2).audio
    plugin_engine.render(rom1a["STRINGS 1"], notes, 1.0, 0.2)          # another LFO voice in between
    b = plugin_engine.render(brass, notes, 1.0, 0.2).audio
    c = make_engine(EngineSpec(name="dawdreamer", plugin=dexed_plugin)).render(brass, notes[::-1], 1.0, 0.2).audio
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c[::-1])                          # new instance, other note order
    ref = dexed_engine.render(brass, notes, 1.0, 0.2).audio
    assert np.abs(a - ref).max() <= TOLERANCE
    assert np.abs(a).max() > 0.05


def test_an_overloaded_voice_equals_the_plugin(plugin_engine, dexed_engine):
    # Six carriers in phase at velocity 127 drive the voice past full scale: Dexed clips each voice
    # (a negative overload flips to +1). Before the embedded engine did the same, they differed by 2.0.
    from test_engines import simple_voice

    raw = apply_fixed(simple_voice(levels=(99,) * 6, velocity_sens=7))
    notes = [(60, 127), (60, 85)]
    a = plugin_engine.render(raw, notes, 0.5, 0.1).audio
    b = dexed_engine.render(raw, notes, 0.5, 0.1).audio
    assert np.abs(a[0]).max() > 1.0                  # the overloaded note
    assert np.abs(a - b).max() <= 1e-5


def test_equal_to_golden_plugin_renders(plugin_engine, golden_dir):
    golden = np.load(golden_dir / "rom1a_plugin.npz")
    notes = [tuple(int(x) for x in n) for n in golden["notes"]]
    for v, voice in enumerate(golden["voices_unpacked"]):
        name = bytes(voice[145:]).decode("ascii").rstrip()
        r = plugin_engine.render(voice[:145], notes, 3.0, 1.0).audio
        assert r.shape == golden["plugin_audio"][v].shape
        # The golden protocol (one instance, notes in a row, no reset) left Dexed's DC-blocker and
        # feedback memory of the previous note in the first samples: ≤ 2 LSB (2^-14), gone after
        # ~1,000 samples. The clean-state path equals it bit for bit past that point.
        gold = golden["plugin_audio"][v]
        diff = float(np.abs(r - gold).max())
        assert diff <= 2.0 ** -14, f"{name}: max |diff| {diff:.3g}"
        np.testing.assert_array_equal(r[:, 1024:], gold[:, 1024:], err_msg=name)


def test_voice_is_read_from_dexeds_own_state(plugin_engine, rom1a, tmp_path):
    plugin_engine.render(rom1a["KOTO"], [(60, 85)], 0.2, 0.1)
    state = tmp_path / "state.bin"
    plugin_engine._live[1].save_state(str(state))
    np.testing.assert_array_equal(dexed_voice_from_state(state.read_bytes())[:145], rom1a["KOTO"])
    with pytest.raises(EngineError, match="cannot read the voice back"):
        dexed_voice_from_state(b"VC2!\x05\x00\x00\x00<a/>\x00")


class _Refusing(DawDreamerEngine):
    """A plug-in that silently ignores host writes to one parameter (as in DawDreamer #149, Dexed #407)."""

    refused = "OP3 F FINE"

    def _write(self, proc, index, value):
        if index != self._index[self.refused]:
            super()._write(proc, index, value)


def test_readback_names_a_parameter_the_plugin_did_not_take(dexed_plugin, rom1a):
    eng = _Refusing(EngineSpec(name="dawdreamer", plugin=dexed_plugin))
    raw = rom1a["E.PIANO 1"].copy()
    raw[voice_index("OP3 F FINE")] = 37
    with pytest.raises(EngineError, match=r"did not take.*OP3 F FINE = 0, sent 37/99"):
        eng.render(raw, [(60, 85)], 0.2, 0.1)
    raw[voice_index("OP3 F FINE")] = 0    # what the plug-in holds anyway: nothing to report
    assert eng.render(raw, [(60, 85)], 0.2, 0.1).audio.shape == (1, int(0.3 * 22050))


class _Quantizing(DawDreamerEngine):
    """A host value the plug-in rounds to another step: LFO SPEED sent 0.6 step low (Dexed rounds)."""

    def _write(self, proc, index, value):
        if index == self._index["LFO SPEED"] and value > 0:
            value -= 0.6 / 99
        super()._write(proc, index, value)


def test_readback_names_a_value_the_plugin_rounded_to_another_step(dexed_plugin, rom1a):
    raw = rom1a["BRASS   1"]
    with pytest.raises(EngineError, match=rf"LFO SPEED = {raw[voice_index('LFO SPEED')] - 1}, "
                                          rf"sent {raw[voice_index('LFO SPEED')]}/99"):
        _Quantizing(EngineSpec(name="dawdreamer", plugin=dexed_plugin)).render(raw, [(60, 85)], 0.2, 0.1)


class _Layout(DawDreamerEngine):
    """The same plug-in reporting another parameter list (names only; nothing is rendered)."""

    names: list[str] = []

    def _parameter_names(self, proc):
        return list(self.names)


def test_both_dexed_generations_map_by_name_and_a_missing_parameter_is_named(dexed_plugin, plugin_engine):
    assert plugin_engine.n_parameters == 2238 and plugin_engine._index["MonoMode"] == 3
    assert plugin_engine._index["OP1 EG RATE 1"] == PARAM_BY_NAME["OP1 EG RATE 1"].dexed_index + 1  # after MonoMode
    spec = EngineSpec(name="dawdreamer", plugin=dexed_plugin)
    _Layout.names = [p.name for p in PARAMS]          # Dexed 0.9.x: 155 parameters, no MonoMode
    old = _Layout(spec)
    assert "MonoMode" not in old._index and old._index["OP1 EG RATE 1"] == 23
    assert all(old._slot[p.voice_offset] == p.dexed_index for p in VOICE_PARAMS)
    _Layout.names = [p.name for p in PARAMS if p.name != "OP2 R KEY SCALE"]
    with pytest.raises(EngineError, match="lacks the parameter.*'OP2 R KEY SCALE'"):
        _Layout(spec)


def test_sample_and_hold_lfo_voices_are_refused(plugin_engine, rom1a):
    raw = rom1a["BRASS   1"].copy()
    raw[voice_index("LFO WAVE")] = 5
    with pytest.raises(EngineError, match="SAMPLE&HOLD"):
        plugin_engine.render(raw, [(60, 85)], 0.2, 0.1)
    raw[voice_index("LFO PM DEPTH")] = raw[voice_index("LFO AM DEPTH")] = 0   # inaudible LFO: rendered
    assert host_resettable(raw) and plugin_engine.render(raw, [(60, 85)], 0.2, 0.1).audio.size


def test_an_inferred_sample_and_hold_voice_is_scored_with_the_embedded_engine(dexed_plugin, dexed_engine, rom1a):
    # a model or a search can infer a voice the plug-in path refuses: one stopped a whole evaluate,
    # and match wrote nothing (audit Z16); it is rendered by the embedded engine, and counted
    from preset_model.evaluate import report_notes, score_audio
    from preset_model.inference import RenderSettings, ScoringEngine

    from dexed_data.features import MelConfig

    raw = rom1a["BRASS   1"].copy()
    raw[voice_index("LFO WAVE")] = 5
    engine = ScoringEngine(EngineSpec(name="dawdreamer", plugin=dexed_plugin))
    got = engine.render(raw, [(60, 85)], 0.2, 0.1).audio
    assert np.array_equal(got, dexed_engine.render(raw, [(60, 85)], 0.2, 0.1).audio) and engine.embedded == 1
    plain = rom1a["BRASS   1"]
    assert np.abs(engine.render(plain, [(60, 85)], 0.2, 0.1).audio
                  - dexed_engine.render(plain, [(60, 85)], 0.2, 0.1).audio).max() < TOLERANCE
    assert engine.embedded == 1                                     # the plug-in rendered that one
    settings = RenderSettings("dawdreamer", 22050, ((60, 85),), 0.2, 0.1, MelConfig(), dexed_plugin)
    true = np.stack([plain, plain, raw])
    scored = score_audio(true, np.stack([raw, plain, raw]), settings)      # a true preset is not re-rendered
    assert scored["embedded"].tolist() == [1.0, 0.0, 0.0] and np.isfinite(scored["log_spectral_mae"]).all()
    assert "1 inferred preset(s) have a sample-and-hold LFO" in " ".join(report_notes({"embedded_renders": 1}))


def test_check_plugin_command(dexed_plugin):
    # the bundle as tab completion gives it (a trailing slash): DawDreamer refused it as "Unable to load plugin"
    result = CliRunner().invoke(app, ["check-plugin", "--plugin", str(dexed_plugin).rstrip("/") + "/", "-n", "3",
                                      "--notes", "60:85", "--hold", "0.5", "--release", "0.2"])
    out = result.output
    assert result.exit_code == 0, out
    # spread over the 64 bundled voices: TINE EP, SAW LEAD and BUBBLES (sample-and-hold LFO: refused)
    assert "presets      3 from the bundled banks" in out and "refused      1 (LFO WAVE = SAMPLE&HOLD" in out
    assert "2/2 within 0.002 of the dexed engine" in out and "2/2 bit-identical" in out
    assert "presets/s" in out and "verdict      OK" in out and "2238 parameters" in out
    bad = CliRunner().invoke(app, ["check-plugin", "--plugin", "/no/such/Dexed.vst3", "-n", "2"])
    assert bad.exit_code == 2 and "error: plug-in not found" in bad.output


def test_render_command_same_audio_with_jobs_1_and_2(dexed_plugin, rom1a, dexed_engine, tmp_path):
    import h5py

    from dexed_data.importer import import_sysex
    from dexed_data.render import shutdown_workers
    from dexed_data.sysex import encode_bank

    names = ["BRASS   1", "STRINGS 1", "E.PIANO 1"]
    sample_hold = rom1a["BRASS   1"].copy()
    sample_hold[voice_index("LFO WAVE")] = 5
    bank = tmp_path / "four.syx"
    bank.write_bytes(encode_bank(np.stack([rom1a[n] for n in names] + [sample_hold]), names + ["S&H BRASS"]))
    import_sysex([bank], tmp_path / "presets.h5", progress=False)
    common = ["--engine", "dawdreamer", "--plugin", dexed_plugin, "--notes", "60:85,48:100", "--hold", "0.6",
              "--release", "0.2", "--store", "audio", "--audio-dtype", "float32", "--no-operators", "--no-progress"]
    try:
        for jobs in (1, 2):
            res = CliRunner().invoke(app, ["render", str(tmp_path / "presets.h5"), "-o", str(tmp_path / f"j{jobs}.h5"),
                                           "--jobs", str(jobs), *common])
            assert res.exit_code == 0, res.output
    finally:
        shutdown_workers()
    with h5py.File(tmp_path / "j1.h5", "r") as a, h5py.File(tmp_path / "j2.h5", "r") as b:
        np.testing.assert_array_equal(a["audio"][()], b["audio"][()])
        status, raws = a["status"][()], a["presets/raw"][()]
        errors = [e.decode() if isinstance(e, bytes) else e for e in a["error"][()]]
        audio = a["audio"][()]
    refused = [i for i, r in enumerate(raws) if r[voice_index("LFO WAVE")] == 5 and not host_resettable(r)]
    assert len(refused) == 1 and status[refused[0]] == 2 and "SAMPLE&HOLD" in errors[refused[0]]
    for i in set(range(len(raws))) - set(refused):
        assert status[i] == 1
        ref = dexed_engine.render(raws[i], [(60, 85), (48, 100)], 0.6, 0.2).audio
        assert np.abs(audio[i] - ref).max() <= TOLERANCE


def test_a_plugin_dataset_goes_through_fit_evaluate_and_match(dexed_plugin, tmp_path):
    # the dataset did not record its plug-in, so evaluate and match (which re-render) failed with
    # "the dawdreamer engine needs a plug-in: --plugin …", an option they do not have; a searched
    # voice with a sample-and-hold LFO (which the plug-in path refuses) then stopped match --refine
    import json

    import h5py
    import soundfile as sf
    from preset_model.cli import app as model_app

    from dexed_data.importer import import_sysex
    from dexed_data.render import shutdown_workers

    repo = Path(__file__).resolve().parents[1]
    import_sysex([repo / "presets"], tmp_path / "p.h5", progress=False)
    data = tmp_path / "d.h5"
    try:
        res = CliRunner().invoke(app, ["render", str(tmp_path / "p.h5"), "-o", str(data), "--engine", "dawdreamer",
                                       "--plugin", dexed_plugin, "--store", "audio,mel", "--notes", "60:85", "--hold",
                                       "0.5", "--release", "0.2", "--n-mels", "64", "--hop", "1024", "--jobs", "2",
                                       "--no-progress"])
        assert res.exit_code == 0, res.output
        with h5py.File(data) as f:
            assert f.attrs["plugin"] == str(Path(dexed_plugin).resolve())
            ok = int(np.flatnonzero(f["status"][()] == 1)[0])
            sf.write(tmp_path / "take.wav", f["audio"][ok, 0].astype(np.float32), int(f.attrs["sample_rate"]))
        run = tmp_path / "run"
        for args in (["fit", "--data", str(data), "--out", str(run), "--notes", "1", "--size", "tiny", "--epochs", "1",
                      "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-progress"],
                     ["evaluate", str(run), "--limit", "1", "--refine", "20", "--no-progress"],
                     ["match", "--data", str(data), str(tmp_path / "take.wav"), "-o", str(tmp_path / "a.syx")],
                     ["match", str(run), str(tmp_path / "take.wav"), "--refine", "30", "-o", str(tmp_path / "b.syx"),
                      "--no-progress"]):
            res = CliRunner().invoke(model_app, args)
            assert res.exit_code == 0, (args[0], res.output)
    finally:
        shutdown_workers()
    from preset_model.inference import read_render_settings

    with h5py.File(data) as f:   # what re-renders it must be the build that rendered it
        assert read_render_settings(data).engine_spec.build == f.attrs["engine_version"]
    (found,) = run.glob("eval-*.json")
    report = json.loads(found.read_text())
    assert np.isfinite(report["audio"]["log_spectral_mae"]["mean"])
    assert (tmp_path / "a.syx").stat().st_size == 163 and (tmp_path / "b.syx").stat().st_size == 163


def test_plugin_agreement_tool_counts_refuses_and_resumes(dexed_plugin, rom1a, tmp_path):
    # tools/plugin_agreement.py: the whole-corpus count of docs/FORMAT.md, on a bank of three voices
    import json
    import subprocess
    import sys
    from pathlib import Path

    from dexed_data.importer import import_sysex
    from dexed_data.sysex import encode_bank

    tool = Path(__file__).resolve().parents[1] / "tools" / "plugin_agreement.py"
    sample_hold = rom1a["BRASS   1"].copy()
    sample_hold[voice_index("LFO WAVE")] = 5
    names = ["E.PIANO 1", "S&H BRASS", "BASS    1"]
    bank = tmp_path / "three.syx"
    bank.write_bytes(encode_bank(np.stack([rom1a["E.PIANO 1"], sample_hold, rom1a["BASS    1"]]), names))
    import_sysex([bank], tmp_path / "presets.h5", progress=False)
    out = tmp_path / "agree.jsonl"
    cmd = [sys.executable, str(tool), "--presets", str(tmp_path / "presets.h5"), "--plugin", dexed_plugin,
           "--out", str(out)]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    first = subprocess.run(cmd + ["--limit", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert "2 presets, 0 already counted, 2 to render" in first.stdout
    again = subprocess.run(cmd + ["--jobs", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert not list(tmp.glob("dexed-home-*"))   # the plug-in's HOME of each worker is removed (one was left per run)
    # the bank's empty slots are one more preset (INIT VOICE): four in the catalogue
    assert "2 already counted, 2 to render" in again.stdout
    assert "4 presets: 1 refused (sample-and-hold LFO), 0 failed, 3 compared" in again.stdout
    assert "<= 0.002: 100.0% (3)" in again.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["row"] for r in records) == [0, 1, 2, 3] and not list(tmp_path.glob("agree.jsonl.*"))
    assert [r["name"] for r in records if r.get("refused")] == ["S&H BRASS"]
    assert all(max(r["note_max"]) <= TOLERANCE for r in records if "note_max" in r)


def test_a_worker_that_ends_normally_prints_no_binding_leak_report(dexed_plugin, tmp_path):
    # with 10-s notes loky retires workers it thinks leak memory; a DawDreamer engine still alive at
    # their exit made nanobind print ~25 lines of "leaked instances" per worker (18 seen here)
    import os
    import subprocess
    import sys

    from dexed_data.importer import import_sysex

    import_sysex([Path(__file__).resolve().parents[1] / "presets" / "toolkit_bank_a.syx"], tmp_path / "p.h5", progress=False)
    cmd = [sys.executable, "-m", "dexed_data", "render", str(tmp_path / "p.h5"), "-o", str(tmp_path / "d.h5"),
           "--engine", "dawdreamer", "--plugin", str(dexed_plugin), "--hold", "10", "--limit", "8", "--jobs", "2",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "leaked" not in proc.stderr, proc.stderr


def test_data_of_one_build_is_not_rendered_again_by_another(dexed_plugin, rom1a, tmp_path):
    # the engine version named the bundle's size only: a rebuilt Dexed of the same size at the same
    # path resumed renders, merged shards and re-rendered evaluate's sounds as if it were the same
    import shutil

    from dexed_data.engines import plugin_build, same_build

    copy = tmp_path / "build" / "Dexed.vst3"
    shutil.copytree(dexed_plugin, copy)
    version = make_engine(EngineSpec(name="dawdreamer", plugin=str(copy))).version
    size, digest = plugin_build(str(copy))
    assert f"({size} bytes, sha256 {digest}," in version
    make_engine(EngineSpec(name="dawdreamer", plugin=str(copy), build=version))            # the same build
    legacy = version.replace(f", sha256 {digest}", "")                                     # recorded before digests
    make_engine(EngineSpec(name="dawdreamer", plugin=str(copy), build=legacy))
    info = copy / "Contents" / "Resources" / "moduleinfo.json"
    data = bytearray(info.read_bytes())
    data[-2] ^= 0x20                                                                        # same size, other bytes
    info.write_bytes(bytes(data))
    assert plugin_build(str(copy))[0] == size and not same_build(version, *plugin_build(str(copy)))
    with pytest.raises(EngineError, match="not the build that rendered this data"):
        make_engine(EngineSpec(name="dawdreamer", plugin=str(copy), build=version))
    assert same_build("dexed-py 0.3.0 + dc_block(clip(x/8))", size, digest)                # no plug-in named


def test_a_hold_between_two_samples_is_released_where_dexed_py_releases_it(plugin_engine, dexed_engine, rom1a):
    # DawDreamer truncated the note-off sample where dexed-py rounds it: with hold × rate in
    # [64k + 0.5, 64k + 1) the plug-in released the note a chunk earlier, 1.3e-2 to 2.8e-2 apart
    voice = rom1a["E.PIANO 1"]
    for samples in (3200.6, 6400.5, 4096.99):
        hold = samples / 22050
        a = plugin_engine.render(voice, [(60, 85)], hold, 0.2).audio
        b = dexed_engine.render(voice, [(60, 85)], hold, 0.2).audio
        assert np.abs(a - b).max() <= TOLERANCE, samples


def test_no_state_file_is_left_behind(dexed_plugin, rom1a, tmp_path, monkeypatch):
    # the read-back's saved-state file lived as long as the engine: a render job ends its workers
    # without finalisers, so every `render --engine dawdreamer` left one per worker in $TMPDIR
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    engine = make_engine(EngineSpec(name="dawdreamer", plugin=dexed_plugin))
    engine.render(rom1a["E.PIANO 1"], [(60, 85)], 0.2, 0.1)
    assert not list(tmp_path.glob("dexed-state-*"))


def test_a_full_temporary_folder_is_named_not_blamed_on_the_build(plugin_engine, rom1a, tmp_path, monkeypatch):
    # DawDreamer writes the state silently cut short when $TMPDIR is full: the read-back then found
    # "no dexedBlob program in it; is it a Dexed build?"
    import shutil
    import tempfile
    from collections import namedtuple

    class _CutShort:
        def save_state(self, path):
            plugin_engine._live[1].save_state(path)
            with open(path, "r+b") as f:
                f.truncate(100)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 20, 1 << 20, 4096))
    with pytest.raises(EngineError, match=f"could not be saved whole in the temporary folder {tmp_path} .*4 kB free.*"
                                          "set TMPDIR"):
        plugin_engine._state_voice(_CutShort())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, 0, 1 << 30))   # room: not the folder
    with pytest.raises(EngineError, match="cannot read the voice back"):
        plugin_engine._state_voice(_CutShort())
    assert not list(tmp_path.glob("dexed-state-*"))


def test_a_plugin_that_cannot_be_loaded_gets_a_hint_for_what_was_given(dexed_plugin, tmp_path):
    import shutil

    renamed = tmp_path / "Renamed.vst3"
    shutil.copytree(dexed_plugin, renamed)
    with pytest.raises(EngineError, match="must be named like its binary: it holds Dexed.so, so name the folder "
                                          "Dexed.vst3"):
        make_engine(EngineSpec(name="dawdreamer", plugin=str(renamed)))
    inner = next(Path(dexed_plugin).glob("Contents/*/*.so"))
    with pytest.raises(EngineError, match="give the VST3 bundle folder .*Dexed.vst3, not a file inside it"):
        make_engine(EngineSpec(name="dawdreamer", plugin=str(inner)))
    alone = tmp_path / "DexedAlone.so"                      # the VST3 binary copied out of its bundle
    shutil.copy(inner, alone)
    with pytest.raises(EngineError, match="binary of a VST3 plug-in, which loads only from its bundle"):
        make_engine(EngineSpec(name="dawdreamer", plugin=str(alone)))
    # audit Y5: a link to a bundle's binary names that bundle (it named …/link.vst3, which is not there);
    # a bundle without its binary says so (it asked whether it was built for this machine)
    (tmp_path / "link.so").symlink_to(inner)
    with pytest.raises(EngineError, match=f"give the VST3 bundle folder {os.path.realpath(dexed_plugin)}, not "):
        make_engine(EngineSpec(name="dawdreamer", plugin=str(tmp_path / "link.so")))
    (tmp_path / "Empty.vst3" / "Contents" / "Resources").mkdir(parents=True)
    with pytest.raises(EngineError, match="the bundle holds no binary .*copy the whole .vst3 folder again"):
        make_engine(EngineSpec(name="dawdreamer", plugin=str(tmp_path / "Empty.vst3")))


def test_a_linked_or_unreadable_part_of_a_bundle_is_read_or_named(dexed_plugin, tmp_path, monkeypatch):
    # audit Y5: os.walk did not enter a linked Contents folder, so such a bundle was "0 bytes" and any
    # build passed for any other; a file the user cannot read was a traceback
    import builtins
    import shutil

    import dexed_data.engines as engines

    linked = tmp_path / "lnk" / "Dexed.vst3"
    linked.mkdir(parents=True)
    (linked / "Contents").symlink_to(Path(dexed_plugin) / "Contents")
    whole = engines.plugin_build(dexed_plugin)
    assert engines.plugin_build(str(linked)) == whole and whole[0] > 1 << 20
    copy = tmp_path / "copy" / "Dexed.vst3"
    shutil.copytree(dexed_plugin, copy)
    (copy / "Contents" / "again").symlink_to(copy / "Contents")             # a loop of links is read once
    assert engines.plugin_build(str(copy))[0] == whole[0]

    def denied(path, *args, **kwargs):                                      # as for a user without read permission
        if str(path).endswith("moduleinfo.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    # regression review R1: a folder reached by two paths is hashed under the same one whatever the
    # listing order (a byte-identical copy was "another engine version"); a dangling link says so
    b = tmp_path / "alias" / "Dexed.vst3"
    shutil.copytree(dexed_plugin, b)
    (b / "Contents" / "Alias").symlink_to("Resources")
    real_scandir = os.scandir

    class Reversed:                                     # the listing order of another file system
        def __init__(self, path):
            self.entries = iter(list(real_scandir(path))[::-1])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.entries)

    first = engines.plugin_build(str(b))
    with monkeypatch.context() as m:
        m.setattr(os, "scandir", Reversed)
        assert engines.plugin_build(str(b)) == first
    (copy / "Contents" / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(EngineError, match="dangling: No such file or directory; a link in it points nowhere"):
        engines.plugin_build(str(copy))
    (copy / "Contents" / "dangling").unlink()
    monkeypatch.setattr(engines, "open", denied, raising=False)
    with pytest.raises(EngineError, match="cannot read the plug-in .*moduleinfo.json: Permission denied; check its "
                                          "permissions"):
        engines.plugin_build(str(copy))
    res = CliRunner().invoke(app, ["check-plugin", "--plugin", str(copy), "-n", "1"])
    assert res.exit_code != 0 and "Permission denied" in res.output and "Traceback" not in res.output, res.output


def test_a_damaged_plugin_binary_is_one_line_not_a_crash(dexed_plugin, rom1a, tmp_path):
    # a bundle copied half-way: loading it kills the process (SIGBUS); check-plugin said nothing
    # (exit 135) and render printed a worker's crash dump and loky's traceback
    import os
    import shutil
    import subprocess
    import sys

    damaged = tmp_path / "Dexed.vst3"
    shutil.copytree(dexed_plugin, damaged)
    binary = next(damaged.glob("Contents/*/*.so"))
    os.chmod(binary, 0o644)
    os.truncate(binary, 4_000_000)
    from dexed_data.catalogue import write_catalogue

    write_catalogue(tmp_path / "p.h5", np.stack([rom1a["KOTO"], rom1a["E.PIANO 1"]]), ["KOTO", "E.PIANO 1"])
    main = "import sys; from dexed_data.cli import main; sys.argv[0] = 'dexed-data'; main()"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"} | {"HOME": str(tmp_path)}
    for args in (["check-plugin", "--plugin", str(damaged), "-n", "1", "--no-progress"],
                 ["render", str(tmp_path / "p.h5"), "-o", str(tmp_path / "d.h5"), "--engine", "dawdreamer",
                  "--plugin", str(damaged), "--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--no-progress"]):
        proc = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, text=True, timeout=300,
                              env=env)
        assert proc.returncode == 2, (args[0], proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and "Fatal Python error" not in proc.stderr, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "crashed the process that loaded it (SIGBUS)" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.h5.parts").exists()
