"""The render job: determinism, parallel = serial, crash + resume, shards + merge, failures, CLI.

Short notes (0.3 s held + 0.2 s release) and a few presets keep the whole module near a minute on
2 cores; the job's workers are reused between tests (loky's reusable executor), so after the
serial reference every job uses ``jobs=2`` (resizing the pool would restart workers).
"""

from __future__ import annotations

import dataclasses

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from dexed_data import dataset as ds
from dexed_data import merge as merge_mod
from dexed_data.catalogue import write_catalogue
from dexed_data.importer import import_sysex
from dexed_data.cli import app
from dexed_data.errors import DatasetError, RenderError
from dexed_data.render import RenderConfig, Shard, parse_notes, render_dataset, render_one
from dexed_data.schema import FIXED_PARAMS, FIXED_TRANSPOSE, SCHEMA_HASH, TRANSPOSE_OFFSET, apply_fixed, voice_index

from test_engines import simple_voice as plain_voice

REPO = Path(__file__).resolve().parents[1]
SMALL = RenderConfig(notes=((48, 100), (60, 85)), hold=0.3, release=0.2, store=("audio", "mel"), compression="gzip-1")
N = 20          # presets per job
SEG = 4         # presets per segment: several segments, so that resume and shards are exercised

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def simple_voice(transpose: int = FIXED_TRANSPOSE, velocity_sens: int = 7) -> np.ndarray:
    """One sine carrier (OP1, algorithm 32, ratio 1), organ envelope, velocity-sensitive."""
    raw = plain_voice(velocity_sens=velocity_sens)
    raw[TRANSPOSE_OFFSET] = transpose
    return raw


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def catalogue(work: Path) -> Path:
    """The bundled presets (64 voices) as a catalogue."""
    path = work / "presets.h5"
    import_sysex([REPO / "presets"], path)
    return path


@pytest.fixture(scope="module")
def serial(work: Path, catalogue: Path) -> Path:
    """The reference: N presets, one worker, one uninterrupted run."""
    out = work / "serial.h5"
    render_dataset(catalogue, out, SMALL, jobs=1, progress=False, limit=N, segment_size=SEG)
    return out


def data_of(path: Path) -> dict:
    """Every dataset and attribute of a file, read with plain h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        out.update({f"@{k}": np.asarray(v) for k, v in f.attrs.items()})
        f.visititems(lambda name, obj: out.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_data(a: Path, b: Path) -> None:
    da, db = data_of(a), data_of(b)
    assert sorted(da) == sorted(db)
    for k in da:
        assert np.array_equal(da[k], db[k]), k


def test_same_bytes_twice_and_parallel_equals_serial(work, catalogue, serial):
    again = work / "again.h5"
    render_dataset(catalogue, again, SMALL, jobs=1, progress=False, limit=N, segment_size=SEG)
    assert again.read_bytes() == serial.read_bytes()          # deterministic to the byte
    parallel = work / "parallel.h5"
    summary = render_dataset(catalogue, parallel, SMALL, jobs=2, progress=False, limit=N, segment_size=SEG)
    assert summary.ok == N and summary.failed == 0
    assert parallel.read_bytes() == serial.read_bytes()        # --jobs 2 writes the same file
    assert not (work / "parallel.h5.parts").exists()


def test_rerun_of_a_finished_job_returns_at_once_and_other_jobs_are_refused(catalogue, serial):
    summary = render_dataset(catalogue, serial, SMALL, jobs=1, progress=False, limit=N, segment_size=SEG)
    assert summary.rendered == 0 and summary.presets == N
    with pytest.raises(RenderError, match="not made by this command"):
        render_dataset(catalogue, serial, SMALL, jobs=1, progress=False, limit=N - 1, segment_size=SEG)
    for mel in (dict(n_mels=32), dict(hop=512)):        # other spectrograms: it took the file as its own
        with pytest.raises(RenderError, match="not made by this command"):
            render_dataset(catalogue, serial, dataclasses.replace(SMALL, **mel), jobs=1, progress=False, limit=N,
                           segment_size=SEG)


def test_rerun_of_a_finished_job_made_by_another_engine_version_is_refused(catalogue, serial, tmp_path):
    # e.g. a file of the engine before the plug-in's voice clip: its audio may differ, so it is not reused
    old = tmp_path / "old.h5"
    shutil.copy(serial, old)
    with h5py.File(old, "r+") as f:
        f.attrs["engine_version"] = "dexed-py 0.3.0 + dc_block(x/8)"
    before = old.read_bytes()
    with pytest.raises(RenderError, match=r"another engine version \(dexed-py 0.3.0 \+ dc_block\(x/8\); now"):
        render_dataset(catalogue, old, SMALL, jobs=1, progress=False, limit=N, segment_size=SEG)
    assert old.read_bytes() == before


def test_format_round_trip_through_plain_h5py(catalogue, serial):
    from dexed_data.catalogue import read_catalogue
    from dexed_data.render import _init_worker

    cat = read_catalogue(catalogue)
    with h5py.File(serial, "r") as f:
        a = f.attrs
        assert a["format"] == "dexed-dataset" and a["format_version"] == ds.FORMAT_VERSION
        assert a["schema_hash"] == SCHEMA_HASH and bool(a["complete"])
        assert a["engine"] == "dexed" and a["sample_rate"] == 22050
        assert a["notes"].tolist() == [[48, 100], [60, 85]] and a["hold"] == 0.3 and a["release"] == 0.2
        assert json.loads(a["fixed_params"]) == FIXED_PARAMS
        assert "dexed-data render" in a["command"] and a["mel_min_db"] < a["mel_max_db"]
        assert f["presets/id"][...].astype(str).tolist() == cat.ids[:N]
        assert np.array_equal(f["presets/raw"][...], apply_fixed(cat.raw[:N]))
        assert f["mel"].shape == (N, 2, 257, 1 + 11025 // 256) and f["mel"].dtype == np.float16
        assert f["audio"].shape == (N, 2, 11025) and f["mel"].chunks == (1, 2, 257, 44)
        assert f["status"][...].tolist() == [ds.STATUS_OK] * N
        i = 7
        mel, audio = f["mel"][i], f["audio"][i]
        peak = f["peak"][i]
    # the stored values are those of an in-process render of the same preset
    _init_worker(SMALL)
    r = render_one(i, apply_fixed(cat.raw[i]))
    ref_mel = np.frombuffer(h5py_decode(*r.chunks["mel"], mel.shape), np.float16).reshape(mel.shape)
    assert np.array_equal(ref_mel, mel)
    assert np.array_equal(r.peak, peak)
    assert np.abs(audio.astype(np.float32)).max() == pytest.approx(float(peak.max()), rel=1e-3)
    with ds.DatasetReader(serial) as reader:                  # and the library reader agrees
        assert np.array_equal(reader.mel(i), mel.astype(np.float32))
        assert reader.ids == cat.ids[:N] and len(reader.usable()) == N


def h5py_decode(mask: int, chunk: bytes, shape) -> bytes:
    """Decode one encoded chunk by letting HDF5 read it back."""
    with h5py.File("decode", "w", driver="core", backing_store=False) as f:
        d = f.create_dataset("x", shape=(1,) + shape, dtype="<f2", chunks=(1,) + shape, **SMALL.storage.filters())
        d.id.write_direct_chunk((0,) * (len(shape) + 1), chunk, filter_mask=mask)
        return d[0].tobytes()


def test_fixed_params_notes_and_velocities(work):
    """A sine voice stored with TRANSPOSE=12: rendered untransposed (fixed 24), at each note's pitch and velocity."""
    cat = work / "sine.h5"
    write_catalogue(cat, np.stack([simple_voice(transpose=12)]), ["SINE"])
    cfg = RenderConfig(notes=((57, 100), (69, 100), (69, 30)), hold=0.5, release=0.1, store=("audio", "mel"))
    out = work / "sine-ds.h5"
    render_dataset(cat, out, cfg, jobs=2, progress=False)
    with ds.DatasetReader(out) as r:
        assert r.raw[0, TRANSPOSE_OFFSET] == FIXED_TRANSPOSE
        audio = r.audio(0)
        peak = r.peak[0]
    for note, expected_hz in zip(audio[:2], (220.0, 440.0)):
        spectrum = np.abs(np.fft.rfft(note * np.hanning(note.size)))
        hz = np.argmax(spectrum) * 22050 / note.size
        assert hz == pytest.approx(expected_hz, rel=0.01)
    assert peak[2] < 0.5 * peak[1]            # velocity 30 is quieter than velocity 100


@pytest.mark.parametrize("compression", ["gzip-1", "none"])
def test_resume_after_kill_equals_uninterrupted(work, catalogue, serial, compression):
    # gzip-1: segments hold the chunks and are copied at the end; none: rows written in place
    config = dataclasses.replace(SMALL, compression=compression)
    reference = serial if compression == SMALL.compression else work / f"serial-{compression}.h5"
    if not reference.exists():
        render_dataset(catalogue, reference, config, jobs=1, progress=False, limit=N, segment_size=SEG)
    out = work / f"killed-{compression}.h5"
    parts = Path(str(out) + ".parts")
    code = ("from dexed_data.render import RenderConfig, render_dataset\n"
            f"render_dataset({str(catalogue)!r}, {str(out)!r}, RenderConfig(notes=((48, 100), (60, 85)), hold=0.3, "
            f"release=0.2, store=('audio', 'mel'), compression={compression!r}), jobs=1, progress=False, limit={N}, "
            f"segment_size={SEG})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(parts.glob("seg-*.h5")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the job and its workers, mid-run
        proc.wait()
    done = list(parts.glob("seg-*.h5"))
    assert 0 < len(done) < N // SEG, "the kill should land mid-run"
    assert not out.exists()                    # an interrupted job leaves no dataset under its name
    summary = render_dataset(catalogue, out, config, jobs=2, progress=False, limit=N, segment_size=SEG)
    assert 0 < summary.rendered < N            # finished segments were kept
    assert out.read_bytes() == reference.read_bytes()


def test_incomplete_file_is_never_taken_for_complete(work, serial):
    partial = work / "partial.h5"
    partial.write_bytes(serial.read_bytes())
    with h5py.File(partial, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(DatasetError, match="incomplete"):
        ds.DatasetReader(partial)
    with pytest.raises(DatasetError, match="incomplete"):
        merge_mod.merge([partial], work / "never.h5")
    truncated = work / "truncated.h5"
    truncated.write_bytes(serial.read_bytes()[:4096])
    with pytest.raises(DatasetError):
        ds.DatasetReader(truncated)


def test_failed_preset_is_recorded_and_the_job_goes_on(work, catalogue):
    bad = work / "bad-presets.h5"
    bad.write_bytes(catalogue.read_bytes())
    with h5py.File(bad, "a") as f:
        f["presets/raw"][0, voice_index("ALGORITHM")] = 99   # out of range: the engine refuses it
    out = work / "bad.h5"
    summary = render_dataset(bad, out, SMALL, jobs=2, progress=False, limit=6, segment_size=SEG)
    assert (summary.ok, summary.failed) == (5, 1)
    with ds.DatasetReader(out) as r:
        assert r.status.tolist() == [ds.STATUS_FAILED] + [ds.STATUS_OK] * 5
        assert "ALGORITHM=99" in r.errors[r.ids[0]]
        assert 0 not in r.usable()
        assert np.all(np.isnan(r.file["mel"][0]))   # nothing stored for it: NaN, which no one takes for sound
        assert np.all(np.isnan(r.peak[0])) and np.all(np.isfinite(r.file["mel"][1]))


def test_shards_and_merge_equal_a_single_run(work, catalogue, serial):
    shards = []
    for k in range(3):
        path = work / f"shard{k}.h5"
        render_dataset(catalogue, path, SMALL, jobs=2, shard=f"{k}/3", progress=False, limit=N, segment_size=SEG)
        shards.append(path)
    with ds.DatasetReader(shards[1]) as r:
        assert r.info.shard == "1/3" and len(r) == 8   # segments 1 and 4 of 5
    merged = work / "merged.h5"
    merge_mod.merge(list(reversed(shards)), merged)
    assert merged.read_bytes() == serial.read_bytes()
    with pytest.raises(DatasetError, match="missing"):
        merge_mod.merge(shards[:2], work / "short.h5")


def test_options_are_checked():
    assert parse_notes("40:85, 60:127") == ((40, 85), (60, 127))
    with pytest.raises(RenderError, match="pitch:velocity"):
        parse_notes("40-85")
    with pytest.raises(RenderError, match="60:85 given more than once"):   # export-wav's files would collide
        parse_notes("60:85,40:85,60:85")
    assert Shard.parse("2/4") == Shard(2, 4)
    with pytest.raises(RenderError):
        Shard.parse("4/4")
    with pytest.raises(DatasetError, match="compression"):
        RenderConfig(compression="zstd")


def test_cli_render_info_export_wav_merge(work, catalogue, serial):
    common = ["--notes", "48:100,60:85", "--hold", "0.3", "--release", "0.2", "--store", "audio,mel",
              "--compression", "gzip-1",
              "--limit", str(N), "--segment-size", str(SEG), "--no-progress"]
    out = work / "cli.h5"
    res = invoke("render", catalogue, "-o", out, "--jobs", "2", *common)
    assert res.exit_code == 0, res.output
    assert f"{N} presets ({N} ok, 0 failed" in res.output and "presets/s" in res.output
    assert_same_data(out, serial)

    res = invoke("info", out)
    assert res.exit_code == 0 and "dexed dataset, format version 1" in res.output
    assert f"presets       {N} ({N} ok" in res.output

    with ds.DatasetReader(out) as r:
        ids = r.ids[:2]
        audio = r.audio(1)
    res = invoke("export-wav", out, "--ids", ",".join(ids), "-o", work / "wav")
    assert res.exit_code == 0, res.output
    files = sorted((work / "wav").glob(f"{ids[1]}_*.wav"))
    assert [f.name.rsplit("_", 1)[1] for f in files] == ["48-100.wav", "60-85.wav"]
    x, sr = soundfile.read(files[0], dtype="float32")
    assert sr == 22050 and np.array_equal(x, audio[0])
    first = files[0].read_bytes()
    res = invoke("export-wav", out, "--ids", ",".join(ids), "-o", work / "wav", "--force")
    assert res.exit_code == 0 and files[0].read_bytes() == first   # the same bytes again (no time stamp)

    # the default stores no audio: export-wav renders it again, the same sound
    res = invoke("render", catalogue, "-o", work / "cli-mel.h5", "--jobs", "2", "--notes", "48:100,60:85",
                 "--hold", "0.3", "--release", "0.2", "--limit", "2", "--no-progress")
    assert res.exit_code == 0, res.output
    res = invoke("export-wav", work / "cli-mel.h5", "--limit", "1", "-o", work / "wav-mel")
    assert res.exit_code == 0, res.output
    with h5py.File(serial, "r") as f:
        stored = f["audio"][0]
    for note, path in zip(stored, sorted((work / "wav-mel").glob("*.wav"))):
        x, _ = soundfile.read(path, dtype="float32")
        assert np.array_equal(x.astype(np.float16), note)

    for k in range(2):
        res = invoke("render", catalogue, "-o", work / f"cli-shard{k}.h5", "--shard", f"{k}/2", "--jobs", "2", *common)
        assert res.exit_code == 0, res.output
    res = invoke("merge", work / "cli-shard0.h5", work / "cli-shard1.h5", "-o", work / "cli-merged.h5")
    assert res.exit_code == 0, res.output
    assert_same_data(work / "cli-merged.h5", serial)


def test_cli_errors_are_one_line(work, catalogue):
    res = invoke("render", catalogue, "-o", work / "x.h5", "--engine", "dawdreamer",
                 "--plugin", work / "no-such-Dexed.vst3", "--no-progress")
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert "plug-in not found" in res.output and "no-such-Dexed.vst3" in res.output
    res = invoke("render", catalogue, "-o", work / "x.h5", "--notes", "60", "--no-progress")
    assert res.exit_code == 2 and "pitch:velocity" in res.output
    res = invoke("export-wav", work / "missing.h5", "--ids", "0" * 16, "-o", work / "w")
    assert res.exit_code == 2 and "no such dataset" in res.output
    assert not (work / "x.h5").exists()


def test_segments_cover_the_selection_in_equal_sizes():
    from dexed_data.render import segment_bounds

    for n in range(1, 200):
        for size in (1, 2, 3, 7, 64):
            bounds = segment_bounds(n, size)
            sizes = [b - a for a, b in bounds]
            assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) == -(-n // size)
            assert all(x[1] == y[0] for x, y in zip(bounds, bounds[1:]))
            assert max(sizes) <= size and max(sizes) - min(sizes) <= 1   # no short last segment


def test_segments_end_in_quarter_segments_for_large_jobs():
    from dexed_data.render import TAPER_MIN_SEGMENTS, segment_bounds

    for n, size in ((1000, 64), (30000, 64), (TAPER_MIN_SEGMENTS * 16, 16), (12345, 100), (129, 16)):
        bounds = segment_bounds(n, size)
        sizes = [b - a for a, b in bounds]
        count = -(-n // size)
        tail = 4 * max(2, count // 8)
        assert bounds[0][0] == 0 and bounds[-1][1] == n and all(x[1] == y[0] for x, y in zip(bounds, bounds[1:]))
        assert len(bounds) == count - tail // 4 + tail
        body, end = sizes[:-tail], sizes[-tail:]
        assert max(body) <= size and max(body) - min(body) <= 1
        assert max(end) - min(end) <= 1 and max(end) <= -(-max(body) // 4) + 1 and min(end) >= min(body) // 4 - 1
    assert len(segment_bounds(7 * 64, 64)) == 7          # fewer than TAPER_MIN_SEGMENTS: equal sizes only


def test_an_engine_that_returns_nan_fails_the_preset_and_the_file_stays_readable(tmp_path):
    # a NaN peak used to be stored as a rendered preset's level; the reader now refuses such a file
    from dexed_data import render as render_mod

    render_mod._init_worker(SMALL, in_worker=False)
    engine = render_mod._WORKER["engine"]

    class _NaN:
        def render(self, *args, **kwargs):
            r = engine.render(*args, **kwargs)
            r.audio[0, 5] = np.nan
            return r

    render_mod._WORKER["engine"] = _NaN()
    try:
        r = render_one(0, apply_fixed(simple_voice()))
    finally:
        render_mod._WORKER.clear()
    assert r.status == ds.STATUS_FAILED and "NaN or infinite samples" in r.error
    # a file whose rendered row holds a NaN level (hand-edited, or written before this check) is refused in one line
    write_catalogue(tmp_path / "p.h5", np.stack([simple_voice(), simple_voice(velocity_sens=3)]), ["A", "B"])
    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1, operators=False)
    render_dataset(tmp_path / "p.h5", tmp_path / "d.h5", cfg, jobs=1, progress=False)
    with h5py.File(tmp_path / "d.h5", "r+") as f:
        f["rms"][1, 0] = np.inf
    with pytest.raises(DatasetError, match=r"/rms of rendered preset row 1 .* levels are finite numbers ≥ 0"):
        ds.DatasetReader(tmp_path / "d.h5")


def test_settings_that_need_more_memory_than_is_available_are_refused_first(tmp_path, monkeypatch):
    from dexed_data import render as render_mod

    big = RenderConfig(sample_rate=192000, hold=60, release=60)
    assert render_mod.worker_memory(big) > 10e9 > 100e6 > render_mod.worker_memory(RenderConfig())
    monkeypatch.setattr(render_mod, "_available_memory", lambda: 8 << 30)
    write_catalogue(tmp_path / "p.h5", np.stack([simple_voice()]), ["A"])
    with pytest.raises(RenderError, match=r"need about 13\.\d GB per render worker .* only 8\.6 GB of memory is "
                                          r"available; use shorter --hold/--release, a lower --sample-rate, --no-operators"):
        render_dataset(tmp_path / "p.h5", tmp_path / "d.h5", big, jobs=1, progress=False)
    # every worker renders a silent voice with the settings as it starts, so --jobs counts even for one preset
    with pytest.raises(RenderError, match="use fewer --jobs"):
        render_dataset(tmp_path / "p.h5", tmp_path / "d.h5", RenderConfig(sample_rate=96000, hold=60, release=60),
                       jobs=2, progress=False, limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5"]
    # a container's limit counts its file cache as used: the inactive part is free again
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "memory.max").write_text(str(8 << 30))
    (cg / "memory.current").write_text(str((8 << 30) - (1 << 20)))
    (cg / "memory.stat").write_text(f"anon 1000000\ninactive_file {6 << 30}\nactive_file 5\n")
    real_path = render_mod.Path
    monkeypatch.undo()                                    # the real _available_memory, reading cgroup files from cg
    monkeypatch.setattr(render_mod, "Path", lambda p: real_path(str(p).replace("/sys/fs/cgroup", str(cg))))
    assert 5.5e9 < render_mod._available_memory() < 6.5e9
