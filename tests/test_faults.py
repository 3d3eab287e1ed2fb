"""Fault injection: every command under bad input, bad options, unwritable outputs and full disks.

Each case asserts the exit code, that the message is one ``error: ...`` line (no traceback), and
the state of the files afterwards: an old file intact, nothing partial (no ``.tmp``, ``.partial``
or 0-byte file) left behind. A full disk is simulated with ``RLIMIT_FSIZE`` in a child process
(writes past the limit fail with EFBIG, the same path as ENOSPC; no root needed). Concurrency and
``kill -9`` cases run real subprocesses: see test_render_jobs.py.

Data: the 64 bundled presets, renders of one short note (60:85, 0.2 s + 0.1 s).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dexed_data.cli import app as data_app
from preset_model.cli import app as model_app
from run_fixtures import build

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--no-progress"]


# --------------------------------------------------------------------------- helpers


def run(app, *args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(res, *needles):
    """Exit 2, one ``error:`` line on stderr (no traceback), containing each needle."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary, partial or empty files under ``folder`` (what a failed write must not leave)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and (
        p.name.endswith((".tmp", ".partial")) or ".tmp" in p.name or p.stat().st_size == 0))


def snapshot(path: Path) -> bytes:
    return path.read_bytes()


def run_limited(args: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m ARGS`` (or ``python -c CODE ...``) with file writes limited to ``limit`` bytes: a disk that fills up."""
    def limit_writes():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=limit_writes, timeout=300)


def assert_clean_process_error(proc: subprocess.CompletedProcess, *needles) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "it/s" not in line]
    assert lines and lines[-1].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def catalogue(work) -> Path:
    from dexed_data.importer import import_sysex

    path = work / "presets.h5"
    import_sysex([REPO / "presets"], path)
    return path


@pytest.fixture(scope="module")
def dataset(work, catalogue) -> Path:
    from dexed_data.render import RenderConfig, render_dataset

    path = work / "dataset.h5"
    render_dataset(catalogue, path, RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), jobs=1,
                   progress=False, limit=4)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return build(tmp_path_factory.getbasetemp() / "fitted")


@pytest.fixture()
def bank(tmp_path) -> Path:
    """A copy of a bundled 32-voice bank."""
    path = tmp_path / "bank.syx"
    path.write_bytes((REPO / "presets" / "toolkit_bank_a.syx").read_bytes())
    return path


@pytest.fixture(scope="module")
def broken(work, dataset) -> dict[str, Path]:
    """Files that are not usable datasets, each broken in one way."""
    folder = work / "broken"
    folder.mkdir()
    out = {}
    out["empty"] = folder / "empty.h5"
    out["empty"].write_bytes(b"")
    out["text"] = folder / "text.h5"
    out["text"].write_text("id\n0123456789abcdef\n")
    data = dataset.read_bytes()
    out["truncated"] = folder / "truncated.h5"
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["attrs_only"] = folder / "attrs_only.h5"
    with h5py.File(dataset, "r") as src, h5py.File(out["attrs_only"], "w") as f:
        f.attrs.update(dict(src.attrs))
    out["incomplete"] = folder / "incomplete.h5"
    out["incomplete"].write_bytes(data)
    with h5py.File(out["incomplete"], "r+") as f:
        f.attrs["complete"] = False
    out["catalogue"] = folder / "catalogue.h5"
    return out


# --------------------------------------------------------------------------- output policy


def test_existing_output_is_refused_without_force_and_replaced_with_it(catalogue, bank, tmp_path):
    old = snapshot(bank)
    res = run(data_app, "export", catalogue, "--limit", "3", "-o", bank)
    assert_clean_error(res, "already exists", "--force")
    assert snapshot(bank) == old
    res = run(data_app, "export", catalogue, "--limit", "3", "-o", bank, "--force")
    assert res.exit_code == 0, res.output
    assert snapshot(bank) != old and len(snapshot(bank)) == 4104
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["import-sysex", "export"])
def test_output_equal_to_input_is_refused_even_with_force(command, catalogue, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    target = folder / "bank.syx"
    target.write_bytes((REPO / "presets" / "toolkit_bank_a.syx").read_bytes())
    old = snapshot(target)
    if command == "import-sysex":
        res = run(data_app, "import-sysex", folder, "-o", target, "--force")
    else:
        cat = folder / "cat.h5"
        cat.write_bytes(catalogue.read_bytes())
        target, old = cat, snapshot(cat)
        res = run(data_app, "export", cat, "--limit", "3", "-o", cat, "--force")
    assert_clean_error(res, "is also an input")
    assert snapshot(target) == old


@pytest.mark.parametrize("where", ["under_file", "proc", "folder"])
def test_unwritable_output_paths(where, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = {"under_file": blocker / "sub" / "p.h5", "proc": Path("/proc/p.h5"), "folder": tmp_path}[where]
    res = run(data_app, "import-sysex", REPO / "presets", "-o", target)
    line = assert_clean_error(res)
    if where == "proc":      # "No such file or directory" of a folder that exists
        assert "the folder /proc takes no new files" in line, line
    assert blocker.read_text() == "x"
    assert leftovers(tmp_path) == []


def test_missing_parent_folders_are_created(tmp_path, catalogue):
    res = run(data_app, "export", catalogue, "--limit", "1", "--single", "-o", tmp_path / "a" / "b" / "v.syx")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "b" / "v.syx").stat().st_size == 163
    res = run(data_app, "render", catalogue, "--limit", "1", *SHORT, "-o", tmp_path / "c" / "d" / "x.h5")
    assert res.exit_code == 0, res.output          # its lock file goes beside it: the folder first
    assert (tmp_path / "c" / "d" / "x.h5").is_file() and leftovers(tmp_path) == []


def test_import_report_checked_before_writing_anything(tmp_path):
    report = tmp_path / "r.json"
    report.write_text("{}")
    res = run(data_app, "import-sysex", REPO / "presets", "-o", tmp_path / "p.h5", "--report", report)
    assert_clean_error(res, "r.json", "already exists")
    assert not (tmp_path / "p.h5").exists() and report.read_text() == "{}"
    res = run(data_app, "import-sysex", REPO / "presets", "-o", tmp_path / "p.h5", "--report", tmp_path / "p.h5")
    assert_clean_error(res, "name the same file")
    assert not (tmp_path / "p.h5").exists()


def test_export_wav_and_report_refuse_existing_files(dataset, tmp_path):
    res = run(data_app, "export-wav", dataset, "--limit", "1", "-o", tmp_path / "wav")
    assert res.exit_code == 0, res.output
    first = sorted((tmp_path / "wav").iterdir())
    before = [p.read_bytes() for p in first]
    res = run(data_app, "export-wav", dataset, "--limit", "1", "-o", tmp_path / "wav")
    assert_clean_error(res, "already exists", "--force")
    assert [p.read_bytes() for p in first] == before
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "index.html").write_text("mine")
    res = run(data_app, "report", dataset, "-o", tmp_path / "rep")
    assert_clean_error(res, "index.html", "already exists")
    assert (tmp_path / "rep" / "index.html").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["index.html"]


def test_merge_refuses_a_shard_as_output_and_a_shard_without_mel(work, catalogue, tmp_path):
    from dexed_data.render import RenderConfig, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    shards = []
    for k in range(2):
        shards.append(tmp_path / f"s{k}.h5")
        render_dataset(catalogue, shards[-1], cfg, jobs=1, shard=f"{k}/2", progress=False, limit=4, segment_size=2)
    old = snapshot(shards[0])
    res = run(data_app, "merge", *shards, "-o", shards[0], "--force")
    assert_clean_error(res, "is also an input")
    assert snapshot(shards[0]) == old
    # an output that cannot be replaced (chattr +i): the system's words, not "[Errno 1] … '.m.h5.PID.tmp' -> …"
    merged = tmp_path / "m.h5"
    assert run(data_app, "merge", *shards, "-o", merged).exit_code == 0
    kept = snapshot(merged)

    def immutable(src, dst):
        raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("dexed_data.outputs.os.replace", immutable)
        res = run(data_app, "merge", *shards, "-o", merged, "--force")
    assert_clean_error(res, "cannot write", "m.h5: Operation not permitted; nothing was written")
    assert "Errno" not in res.output and ".tmp" not in res.output, res.output
    assert snapshot(merged) == kept and leftovers(tmp_path) == []
    merged.unlink()
    with h5py.File(shards[1], "r+") as f:
        del f["mel"]
    res = run(data_app, "merge", *shards, "-o", tmp_path / "m.h5")
    assert_clean_error(res, "s1.h5", "/mel")
    assert not (tmp_path / "m.h5").exists() and leftovers(tmp_path) == []
    # one shard without the near-copy groups the others have: every row lost them (audit Z14)
    shards[1].unlink()
    render_dataset(catalogue, shards[1], cfg, jobs=1, shard="1/2", progress=False, limit=4, segment_size=2)
    with h5py.File(shards[0], "r+") as f:
        del f["presets/near_group"]
    res = run(data_app, "merge", *shards, "-o", tmp_path / "m.h5")
    assert_clean_error(res, "s0.h5: this shard has no /presets/near_group")
    assert not (tmp_path / "m.h5").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- damaged inputs


@pytest.mark.parametrize("kind", ["empty", "truncated", "attrs_only"])
@pytest.mark.parametrize("command", ["info", "report", "export-wav"])
def test_damaged_dataset_files(command, kind, broken, tmp_path):
    args = {"info": [], "report": ["-o", tmp_path / "rep"], "export-wav": ["-o", tmp_path / "wav"]}[command]
    res = run(data_app, command, broken[kind], *args)
    if command == "info" and kind == "empty":   # as `list` says it (audit Y1: it read it as SysEx, "no DX7 voice")
        assert_clean_error(res, "empty file (0 bytes), not a catalogue or dataset")
        return
    assert_clean_error(res, broken[kind].name)
    assert not (tmp_path / "rep").exists() and not (tmp_path / "wav").exists()


@pytest.mark.parametrize("command", ["report", "export-wav"])
def test_incomplete_dataset_is_refused(command, broken, tmp_path):
    res = run(data_app, command, broken["incomplete"], "-o", tmp_path / "out")
    assert_clean_error(res, "incomplete")


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "incomplete"])
def test_fit_refuses_unusable_datasets(kind, broken, tmp_path):
    res = run(model_app, "fit", "--data", broken[kind], "--out", tmp_path / "run", "--size", "tiny",
              "--epochs", "1", "--workers", "0", "--device", "cpu", "--no-progress")
    assert_clean_error(res, broken[kind].name)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_ids_file_that_is_hdf5_is_refused(catalogue, dataset, tmp_path):
    res = run(data_app, "export", catalogue, "--ids", dataset, "-o", tmp_path / "x.syx")
    assert_clean_error(res, "not a text file of ids")
    res = run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", "--ids", dataset, *SHORT)
    assert_clean_error(res, "not a text file of ids")
    assert not (tmp_path / "x.syx").exists() and not (tmp_path / "d.h5").exists()


# --------------------------------------------------------------------------- option ranges


@pytest.mark.parametrize("option", [
    ["--hold", "inf"], ["--hold", "nan"], ["--hold", "1e300"], ["--hold", "100000"], ["--hold", "0"],
    ["--release", "-1"], ["--release", "inf"], ["--jobs", "0"], ["--jobs", "1000"], ["--limit", "-1"],
    ["--limit", "0"], ["--timeout", "nan"], ["--sample-rate", "10"], ["--sample-rate", "11025"], ["--notes", "60:0"],
])
def test_render_option_ranges(option, catalogue, tmp_path):
    args = [*SHORT]
    i = args.index(option[0]) if option[0] in args else -1
    if i >= 0:
        args[i + 1] = option[1]
    else:
        args += option
    res = run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", *args)
    assert_clean_error(res, option[0].lstrip("-"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,args,needle", [
    ("export", ["--limit", "-1"], "--limit"), ("export", ["--limit", "0"], "--limit"),
    ("report", ["--examples", "-1"], "--examples"), ("export-wav", ["--limit", "0"], "--limit"),
])
def test_data_option_ranges(command, args, needle, catalogue, dataset, tmp_path):
    src = catalogue if command == "export" else dataset
    res = run(data_app, command, src, "-o", tmp_path / "o", *args)
    assert_clean_error(res, needle)


@pytest.mark.parametrize("option,needle", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-5"], "--batch-size"),
    (["--batch-size", "1"], "must be ≥ 2 (batch normalisation"), (["--lr", "-1"], "--lr"),
    (["--batch-size", "100000000000000000000"], "--batch-size 100000000000000000000: must be at most"),   # audit Y4
    (["--lr", "nan"], "--lr"), (["--workers", "-1"], "--workers"), (["--epochs", "0"], "--epochs"),
    (["--device", "foo"], "--device"), (["--anneal", "1.5"], "--anneal"), (["--beta", "-1"], "--beta"),
    (["--num-loss", "huber"], "--num-loss"),
] + ([] if __import__("torch").cuda.is_available() else [(["--device", "cuda"], "CUDA is not available")]))
def test_fit_option_ranges(option, needle, dataset, tmp_path):
    res = run(model_app, "fit", "--data", dataset, "--out", tmp_path / "run", "--size", "tiny", "--workers", "0",
              "--device", "cpu", "--no-progress", *option)
    assert_clean_error(res, needle)
    assert not (tmp_path / "run").exists()


def test_fit_trains_when_the_last_batch_would_hold_one_preset(fitted, tmp_path):
    # the small model's batch normalisation of a 1 × 1 feature map raised "Expected more than 1 value
    # per channel" (a traceback, exit 1) when the training split left a last batch of one preset
    import json

    first = tmp_path / "first"
    res = run(model_app, "fit", "--data", fitted.data, "--out", first, "--size", "tiny", "--epochs", "1",
              "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    train = len(json.loads((first / "split.json").read_text())["train"])
    assert train >= 4
    res = run(model_app, "fit", "--data", fitted.data, "--out", tmp_path / "run", "--size", "small", "--epochs", "1",
              "--batch-size", str(train - 1), "--workers", "0", "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "last.pt").exists()


def test_an_epoch_cut_before_its_first_step_has_no_training_loss_rather_than_zero(fitted, tmp_path):
    import csv

    res = run(model_app, "fit", "--data", fitted.data, "--out", tmp_path / "run", "--size", "tiny", "--epochs", "2",
              "--max-minutes", "0.000001", "--workers", "0", "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows[0]["step"] == "0" and rows[0]["train_loss"] == "" and rows[0]["train_num"] == "", rows[0]
    assert float(rows[0]["valid_loss"]) > 0                      # validated as ever


def test_render_warns_of_mel_bands_that_no_fft_bin_fills(catalogue, tmp_path):
    # at 44.1 kHz with n_fft 1024, 21 of the 257 default bands hold no bin: they read the floor in every
    # frame of every preset, silently
    from dexed_data.features import empty_mel_bands

    assert empty_mel_bands(22050, 1024, 257) == 0 and empty_mel_bands(44100, 1024, 257) == 21
    assert empty_mel_bands(44100, 1024, 184) == 0
    args = ["--limit", "1", "--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--no-progress"]
    proc = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "a.h5"), "--sample-rate", "44100", *args),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: at 44100 Hz, 21 of the 257 mel bands hold no FFT bin" in proc.stderr
    assert "--n-mels 184 or fewer" in proc.stderr
    with h5py.File(tmp_path / "a.h5") as f:
        assert (f["mel"][0, 0].astype(np.float32).max(axis=-1) <= -120).sum() >= 21
    proc = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "b.h5"), *args),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_evaluate_limit_and_jobs(fitted, tmp_path):
    for args, needle in ((["--limit", "0"], "--limit"), (["--jobs", "0"], "--jobs")):
        res = run(model_app, "evaluate", fitted.flow6, "-o", tmp_path / "e", *args)
        assert_clean_error(res, needle)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- match and interpolate


def test_match_refuses_bad_audio_and_gain(fitted, tmp_path):
    good = tmp_path / "ok.wav"
    sf.write(good, np.zeros(2205, np.float32), 22050, subtype="FLOAT")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(2205, np.nan, np.float32), 22050, subtype="FLOAT")
    long = tmp_path / "long.wav"   # 11 minutes at 8 kHz: refused from its header
    sf.write(long, np.zeros(11 * 60 * 8000, np.int16), 8000, subtype="PCM_16")
    for files, extra, needle in (([nan], [], "NaN"), ([long], [], "more than the 600 s accepted"),
                                 ([good], ["--gain-db", "nan"], "--gain-db"),
                                 ([good], ["--gain-db", "loud"], "'auto' or a number of dB"),
                                 ([good], ["--gain-db", "200"], "between -120 and 120")):
        res = run(model_app, "match", fitted.mlp1, *files, "-o", tmp_path / "m.syx", *extra)
        assert_clean_error(res, needle)
        assert not (tmp_path / "m.syx").exists()


def test_match_outputs_follow_the_policy(fitted, tmp_path, bank):
    from dexed_data.engines import EngineSpec, make_engine
    from dexed_data.schema import apply_fixed
    from dexed_data.sysex import decode_file

    engine = make_engine(EngineSpec())
    files = []
    for k, folder in enumerate(("a", "b")):   # two inputs with the same stem, different sounds
        (tmp_path / folder).mkdir()
        voice = decode_file(fitted.bank).voices[k]
        audio = engine.render(apply_fixed(voice.raw), [(60, 85)], 0.5, 0.25).audio[0]
        files.append(tmp_path / folder / "x.wav")
        sf.write(files[-1], audio, 22050, subtype="FLOAT")
    old = snapshot(bank)
    res = run(model_app, "match", fitted.mlp1, *files, "--each", "-o", bank)
    assert_clean_error(res, "already exists")
    res = run(model_app, "match", fitted.mlp1, *files, "--each", "-o", files[0], "--force")
    assert_clean_error(res, "is also an input")
    assert snapshot(bank) == old
    res = run(model_app, "match", fitted.mlp1, *files, "--each", "-o", tmp_path / "m.syx", "--wav", tmp_path / "re")
    assert res.exit_code == 0, res.output
    written = sorted(p.name for p in (tmp_path / "re").iterdir())
    assert written == ["x-2.rerender.wav", "x.rerender.wav"]
    assert leftovers(tmp_path) == []


def test_interpolate_refuses_its_input_as_output(fitted, bank):
    old = snapshot(bank)
    res = run(model_app, "interpolate", fitted.flow6, f"{bank}:1", f"{bank}:2", "--steps", "4", "-o", bank, "--force")
    assert_clean_error(res, "is also an input")
    assert snapshot(bank) == old


def test_evaluate_refuses_an_existing_report(fitted, tmp_path):
    (tmp_path / "e.json").write_text("{}")
    res = run(model_app, "evaluate", fitted.flow6, "--limit", "2", "-o", tmp_path / "e")
    assert_clean_error(res, "e.json", "already exists")
    assert (tmp_path / "e.json").read_text() == "{}" and not (tmp_path / "e.md").exists()


# --------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("command", ["export", "import-sysex"])
def test_full_disk_keeps_the_old_file(command, catalogue, tmp_path):
    target = tmp_path / ("bank.syx" if command == "export" else "presets.h5")
    target.write_bytes(b"OLD" * 10)
    args = (["dexed_data", "export", str(catalogue), "--limit", "3", "-o", str(target), "--force"]
            if command == "export" else
            ["dexed_data", "import-sysex", str(REPO / "presets"), "-o", str(target), "--force", "--no-progress"])
    proc = run_limited(args, 2000, tmp_path)
    assert_clean_process_error(proc, str(target.name))
    assert target.read_bytes() == b"OLD" * 10
    assert leftovers(tmp_path) == []


def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    code = ("import torch, sys\n"
            "from preset_model.checkpoint import save_checkpoint\n"
            "from preset_model.errors import CheckpointError\n"
            "try:\n"
            "    save_checkpoint(sys.argv[1], {'model': {'w': torch.zeros(100000)}})\n"
            "except CheckpointError as e:\n"
            "    print('error:', e, file=sys.stderr); sys.exit(2)\n")
    from preset_model.checkpoint import save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": np.ones(3).tolist()}, "epoch": 7})
    before = snapshot(path)
    proc = run_limited(["-c", code, str(path)], 100_000, tmp_path)   # python -c: "-m" is not needed
    line = assert_clean_process_error(proc, "last.pt")
    assert "inline_container" not in line, line       # torch's internals are not the message
    import torch

    assert snapshot(path) == before and torch.load(path, weights_only=True)["epoch"] == 7
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- found by an audit


def test_a_run_folders_files_are_inputs_of_match_and_interpolate(fitted, tmp_path, bank):
    import shutil

    run_copy = tmp_path / "run"
    shutil.copytree(fitted.flow6, run_copy)
    best = snapshot(run_copy / "best.pt")
    tone = tmp_path / "tone.wav"
    sf.write(tone, (0.1 * np.sin(2 * np.pi * 261.6 * np.arange(11025) / 22050)).astype(np.float32), 22050)
    res = run(model_app, "interpolate", run_copy, f"{bank}:1", f"{bank}:2", "-o", run_copy / "best.pt", "--force")
    assert_clean_error(res, "is also an input")
    for target in ("best.pt", "last.pt", "metrics.csv"):
        res = run(model_app, "match", run_copy, tone, "-o", run_copy / target, "--force")
        assert_clean_error(res, "is also an input")
    for _ in range(2):   # its own reports in the run folder (the default place) it may replace
        res = run(model_app, "evaluate", run_copy, "--limit", "1", "--force")
        assert res.exit_code == 0, res.output
    res = run(model_app, "match", run_copy, tone, "-o", run_copy / "m.syx")
    assert res.exit_code == 0 and (run_copy / "m.syx").exists(), res.output
    assert snapshot(run_copy / "best.pt") == best
    res = run(model_app, "match", run_copy, tone, "-o", tmp_path / "m.syx", "--wav", tmp_path / "m.syx")
    assert_clean_error(res, "--wav", "is the -o file")
    assert not (tmp_path / "m.syx").exists()


@pytest.mark.parametrize("command", ["match", "fit", "report"])
def test_seeds_out_of_range_are_refused(command, fitted, dataset, tmp_path):
    if command == "match":
        tone = tmp_path / "t.wav"
        sf.write(tone, np.zeros(2205, np.float32), 22050)
        res = run(model_app, "match", fitted.mlp1, tone, "-o", tmp_path / "m.syx", "--seed", str(2**64))
    elif command == "fit":
        res = run(model_app, "fit", "--data", dataset, "--out", tmp_path / "r", "--size", "tiny", "--workers", "0",
                  "--device", "cpu", "--no-progress", "--seed", str(2**32))   # trained the same run as seed 0
    else:
        res = run(data_app, "report", dataset, "-o", tmp_path / "rep", "--seed", "-1")
    assert_clean_error(res, "--seed", "must be between 0 and")
    assert list(tmp_path.iterdir()) == ([tmp_path / "t.wav"] if command == "match" else [])


def test_a_second_fit_on_the_same_run_folder_is_refused(dataset, tmp_path):
    from dexed_data.render import JobLock

    out = tmp_path / "run"
    with JobLock(out, what="fit"):    # as a fit in another process holds it
        res = run(model_app, "fit", "--data", dataset, "--out", out, "--size", "tiny", "--notes", "1",
                  "--workers", "0", "--device", "cpu", "--no-progress", "--max-steps", "1", "--epochs", "1")
    assert_clean_error(res, "another fit", "--resume")
    assert not out.exists()
    out.mkdir()
    (tmp_path / "link").symlink_to(out)
    with JobLock(out, what="fit"):    # the same folder by another name: the same lock
        res = run(model_app, "fit", "--data", dataset, "--out", tmp_path / "link", "--size", "tiny", "--notes", "1",
                  "--workers", "0", "--device", "cpu", "--no-progress", "--max-steps", "1", "--epochs", "1")
    assert_clean_error(res, "another fit")


def test_check_plugin_checks_its_options_before_blaming_the_plugin(tmp_path):
    for args, needle in ((["--hold", "0"], "--hold"), (["--release", "inf"], "--release"),
                         (["--hold", "61"], "--hold"), (["--notes", "60:0"], "--notes")):
        res = run(data_app, "check-plugin", "--plugin", tmp_path / "Dexed.vst3", "-n", "1", *args)
        assert_clean_error(res, needle)
    from dexed_data.catalogue import write_catalogue

    write_catalogue(tmp_path / "empty.h5", np.zeros((0, 145), np.uint8), [])   # made by hand: import refuses it
    from dexed_data.errors import EngineError
    from dexed_data.plugin_check import sample_presets

    with pytest.raises(EngineError, match="holds no presets"):
        sample_presets(tmp_path / "empty.h5", 4)


def test_render_refuses_notes_shorter_than_one_frame(catalogue, tmp_path):
    res = run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", "--hold", "1e-9", "--release", "0")
    assert_clean_error(res, "shorter than one spectrogram frame")
    assert list(tmp_path.iterdir()) == []


def test_file_names_that_are_not_utf8(tmp_path, bank, catalogue):
    # as a shell passes them (bytes); the console prints them as the terminal's locale allows
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "dexed_data", *map(os.fsencode, map(str, args))],
                              capture_output=True, timeout=300)

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / os.fsdecode(b"x\xff.syx")).write_bytes(bank.read_bytes())
    out = tmp_path / os.fsdecode(b"c\xff.h5")
    res = cli("import-sysex", folder, "-o", out, "--no-progress")
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr
    listed = cli("list", out, "--limit", "1")
    assert listed.returncode == 0 and b"x\\xff.syx:" in listed.stdout, listed.stdout
    res = cli("render", out, "-o", tmp_path / "d.h5", "--limit", "2", *SHORT)
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr
    with h5py.File(tmp_path / "d.h5") as f:
        assert "c\\xff.h5" in f.attrs["command"]


def test_mixups_are_named_for_what_they_are(catalogue, dataset, fitted, tmp_path):
    res = run(model_app, "fit", "--data", catalogue, "--out", tmp_path / "r", "--size", "tiny", "--workers", "0",
              "--device", "cpu", "--no-progress")
    assert_clean_error(res, "a catalogue of presets, not a rendered dataset", "dexed-data render")
    assert_clean_error(run(model_app, "evaluate", fitted.mlp1, "--data", catalogue, "-o", tmp_path / "e"),
                       "a catalogue of presets")
    assert_clean_error(run(data_app, "info", tmp_path), "is a folder")
    assert_clean_error(run(model_app, "fit", "--data", tmp_path, "--out", tmp_path / "r"), "is a folder")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a DX7 file\n" * 100)
    assert_clean_error(run(data_app, "info", foreign), "no DX7 voice in it")
    assert_clean_error(run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", "--plugin", tmp_path / "x.vst3",
                           *SHORT), "--plugin is for --engine dawdreamer")
    assert_clean_error(run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", "--engine", "dawdreamer", *SHORT),
                       "needs a plug-in: --plugin")
    # an empty --plugin is no plug-in (typer's Path had made it the current folder)
    assert_clean_error(run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", "--engine", "dawdreamer",
                           "--plugin", "", *SHORT), "needs a plug-in: --plugin")
    assert_clean_error(run(data_app, "render", catalogue, "-o", tmp_path / "d.h5", "--plugin", "", *SHORT),
                       "--plugin is for --engine dawdreamer")
    assert_clean_error(run(data_app, "check-plugin", "--plugin", "", "-n", "1"), "needs a plug-in: --plugin")
    assert_clean_error(run(model_app, "fit", "--data", dataset, "--out", tmp_path / "r", "--max-minutes", "0",
                           "--device", "cpu", "--workers", "0"), "--max-minutes 0.0")
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "r").exists()


def test_a_run_refuses_data_rendered_with_other_settings(fitted, tmp_path):
    import json
    import shutil

    from dexed_data.render import RenderConfig, render_dataset
    from run_fixtures import HOLD, NOTES, RELEASE

    longer = tmp_path / "longer.h5"                      # same notes, other note length
    render_dataset(fitted.data.parent / "presets.h5", longer, RenderConfig(notes=NOTES, hold=HOLD + 0.25,
                   release=RELEASE), jobs=1, progress=False)
    faster = tmp_path / "faster.h5"      # as if rendered at 44.1 kHz, notes half as long (the same samples)
    faster.write_bytes(fitted.data.read_bytes())
    with h5py.File(faster, "r+") as f:   # consistent with its arrays' shapes, which readers check
        mel = json.loads(f.attrs["mel_config"])
        f.attrs["sample_rate"] = 44100
        f.attrs["hold"], f.attrs["release"] = HOLD / 2, RELEASE / 2
        f.attrs["mel_config"] = json.dumps({**mel, "sample_rate": 44100, "n_fft": 2 * mel.get("n_fft", 2048)})
    for data, why in ((longer, f"hold {HOLD + 0.25:g} s where the run's dataset has {HOLD:g} s"),
                      (faster, "sample rate 44100 Hz where the run's dataset has 22050 Hz")):
        assert_clean_error(run(model_app, "evaluate", fitted.flow6, "--data", data, "-o", tmp_path / "e"),
                           str(data), why, "rendered with other settings")
        assert_clean_error(run(model_app, "match", fitted.flow6, "--data", data, fitted.bank, "-o", tmp_path / "m.syx"),
                           why)
        resumed = tmp_path / "resumed"
        shutil.rmtree(resumed, ignore_errors=True)
        shutil.copytree(fitted.flow6, resumed)
        before = (resumed / "last.pt").read_bytes()
        res = run(model_app, "fit", "--data", data, "--out", resumed, "--resume", "--epochs", "2", "--workers", "0",
                  "--device", "cpu", "--no-progress")
        assert_clean_error(res, why, "resume on the dataset the run started with")
        assert (resumed / "last.pt").read_bytes() == before
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "m.syx").exists()


def test_a_render_whose_output_another_command_wrote_says_where_its_work_is(catalogue, tmp_path, monkeypatch):
    import dexed_data.writer as writer

    out = tmp_path / "d.h5"
    finish = writer.finish_layout

    def meanwhile(*args, **kwargs):              # another command publishes d.h5 while the render finishes
        out.write_bytes(catalogue.read_bytes())
        return finish(*args, **kwargs)

    monkeypatch.setattr(writer, "finish_layout", meanwhile)
    res = run(data_app, "render", catalogue, "-o", out, "--limit", "4", *SHORT)
    assert_clean_error(res, "was written by another command while this render ran", "d.h5.parts",
                       "move", "rerun the same command")
    assert "free space" not in res.stderr and "--force" not in res.stderr
    monkeypatch.setattr(writer, "finish_layout", finish)
    assert_clean_error(run(data_app, "render", catalogue, "-o", out, "--limit", "4", *SHORT),
                       "is not this render's output", "d.h5.parts holds render work")
    out.rename(tmp_path / "other.h5")               # as the message says: the rerun publishes the work
    res = run(data_app, "render", catalogue, "-o", out, "--limit", "4", *SHORT)
    assert res.exit_code == 0 and "4 from an earlier run" in res.stdout, res.output
    assert not (tmp_path / "d.h5.parts").exists()


def test_export_wav_says_why_it_cannot_re_render(dataset, tmp_path):
    for engine, version, why in (("dawdreamer", "dawdreamer 0.9.0 + Dexed.vst3", "rendered through a plug-in"),
                                 ("dexed", "dexed-py 0.0.1 + dc_block(clip(x/8))", "this machine has dexed-py")):
        other = tmp_path / f"{engine}.h5"
        other.write_bytes(dataset.read_bytes())
        with h5py.File(other, "r+") as f:
            f.attrs["engine"], f.attrs["engine_version"] = engine, version
        res = run(data_app, "export-wav", other, "-o", tmp_path / "w", "--limit", "1")
        assert_clean_error(res, why, "--store audio,mel")
        assert "dawdreamer dawdreamer" not in res.stderr


def test_more_shards_than_segments_are_refused_for_every_shard(catalogue, tmp_path):
    for shard in ("0/2", "1/2"):             # 4 presets are one segment: shard 0 alone could never be merged
        res = run(data_app, "render", catalogue, "-o", tmp_path / f"s{shard[0]}.h5", "--limit", "4", "--shard", shard,
                  *SHORT)
        assert_clean_error(res, "2 shards of a 4-preset selection", "use at most 1 shard")
    assert list(tmp_path.iterdir()) == []


def test_a_renders_unfinished_file_is_called_incomplete_not_malformed(dataset, tmp_path):
    unfinished = tmp_path / "d.h5.parts" / "dataset.h5"     # as a killed uncompressed render leaves it
    unfinished.parent.mkdir()
    unfinished.write_bytes(dataset.read_bytes())
    with h5py.File(unfinished, "r+") as f:
        f.attrs["complete"] = False
        del f["status"]
    assert_clean_error(run(data_app, "info", unfinished), "the dataset is incomplete", "rerun the same render command",
                       f"then read {tmp_path / 'd.h5'}")
    # a render's working file before its statuses are gone: list lists its presets and says what it is
    running = tmp_path / "running.h5"
    running.write_bytes(dataset.read_bytes())
    with h5py.File(running, "r+") as f:
        f.attrs["complete"] = False
    res = run(data_app, "list", running)
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 4
    assert "note: " + str(running) + " is an incomplete dataset" in res.stderr, res.stderr
    assert "note:" not in run(data_app, "list", dataset).stderr


def test_data_without_operator_levels_is_named_by_info_and_fit(fitted, tmp_path):
    data = tmp_path / "no-ops.h5"                         # as --no-operators or a plug-in render writes it
    data.write_bytes(fitted.data.read_bytes())
    with h5py.File(data, "r+") as f:
        f.attrs["operators"] = False
    res = run(data_app, "info", data)
    assert res.exit_code == 0 and "operators     not measured" in res.stdout
    res = run(model_app, "fit", "--data", data, "--out", tmp_path / "r", "--size", "tiny", "--epochs", "1",
              "--batch-size", "16", "--workers", "0", "--device", "cpu", "--no-progress")
    assert res.exit_code == 0 and "no parameter loss was masked by audibility" in res.stderr, res.output


def test_match_says_when_an_input_is_silent(fitted, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(11025, np.float32), 22050)
    res = run(model_app, "match", fitted.mlp1, silent, "-o", tmp_path / "m.syx")
    assert res.exit_code == 0, res.output
    assert "level n/a (silent input)" in res.stdout and "nan" not in res.stdout
    assert "silent.wav is silent (all zeros)" in res.stderr


def _run_recording(fitted, folder: Path, dataset_path: Path) -> Path:
    """A copy of the mlp1 run whose checkpoint records ``dataset_path`` as its dataset."""
    import shutil

    import torch

    run_dir = folder / "run"
    shutil.copytree(fitted.mlp1, run_dir)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run_dir / name, weights_only=True)
        ckpt["dataset"] = {**ckpt.get("dataset", {}), "path": str(dataset_path), "name": dataset_path.name}
        torch.save(ckpt, run_dir / name)
    return run_dir


def test_match_refine_says_when_the_runs_dataset_is_missing_or_another(fitted, tmp_path):
    tone = tmp_path / "t.wav"
    sf.write(tone, (0.1 * np.sin(2 * np.pi * 261.6 * np.arange(11025) / 22050)).astype(np.float32), 22050)
    moved = _run_recording(fitted, tmp_path / "a", tmp_path / "gone" / "data.h5")
    res = run(model_app, "match", moved, tone, "-o", tmp_path / "m.syx", "--refine", "10", "--no-progress")
    assert res.exit_code == 0, res.output     # it still matches, from the model's voice alone, and says so
    assert "without the nearest training presets" in res.stderr and "--data" in res.stderr, res.stderr
    other = tmp_path / "other.h5"             # the same settings, other presets: not the run's dataset
    other.write_bytes(fitted.data.read_bytes())
    with h5py.File(other, "r+") as f:
        f["presets/id"][...] = np.array([f"{i:016x}".encode() for i in range(f["presets/id"].shape[0])], "S16")
    wrong = _run_recording(fitted, tmp_path / "b", other)
    res = run(model_app, "match", wrong, tone, "-o", tmp_path / "w.syx", "--refine", "10", "--no-progress")
    assert_clean_error(res, "none of the run's", "training presets is in this dataset", "--data")
    assert not (tmp_path / "w.syx").exists()


def test_evaluate_refuses_a_folder_as_output_and_names_a_foreign_checkpoint(fitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (".", "/", "..", str(tmp_path)):
        assert_clean_error(run(model_app, "evaluate", fitted.mlp1, "-o", out, "--limit", "1"), "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    junk = tmp_path / "best.pt"
    junk.write_bytes(fitted.data.read_bytes())   # an HDF5 file under a checkpoint's name
    line = assert_clean_error(run(model_app, "evaluate", junk, "-o", tmp_path / "e"),
                              "not a checkpoint written by `preset-model fit`", "give a run folder")
    assert "weights_only" not in line


def test_a_checkpoint_with_a_right_header_and_wrong_contents_is_one_line(fitted, tmp_path):
    """Audit A8: settings a later version could add, missing records, bounds and weights that do not fit were
    tracebacks (TypeError, KeyError, RuntimeError) in evaluate, match and fit --resume."""
    import shutil

    import torch

    good = torch.load(fitted.mlp1 / "last.pt", weights_only=True)
    cases = {
        "model_config": lambda c: c["model_config"].update(attention=True),
        "split": lambda c: c.pop("split"),
        "mel_bounds": lambda c: c.update(mel_bounds=["a", "b"]),
        "fit its settings": lambda c: c["model_config"].update(mlp_hidden=c["model_config"]["mlp_hidden"] + 1),
        "not a dict": lambda c: c.update(model="weights"),
    }
    for n, (said, damage) in enumerate(cases.items()):
        ckpt = {**good, "model_config": dict(good["model_config"])}
        damage(ckpt)
        bad = tmp_path / f"c{n}.pt"
        torch.save(ckpt, bad)
        assert_clean_error(run(model_app, "evaluate", bad, "-o", tmp_path / f"e{n}", "--limit", "1"),
                           str(bad), said, "damaged")
    ckpt = {**good, "train_config": {**good["train_config"], "schedule": "cosine"}, "package_version": "9.9"}
    folder = tmp_path / "run"
    shutil.copytree(fitted.mlp1, folder)
    torch.save(ckpt, folder / "last.pt")
    assert_clean_error(run(model_app, "fit", "--data", fitted.data, "--out", folder, "--resume", "--epochs", "9"),
                       "last.pt", "train_config", "schedule", "preset_model 9.9", "use that version")
    assert not (tmp_path / "e0.json").exists()


def test_more_absurd_values_and_versions(catalogue, dataset, fitted, tmp_path):
    tone = tmp_path / "t.wav"
    sf.write(tone, np.zeros(2205, np.float32), 22050)
    assert_clean_error(run(model_app, "match", fitted.mlp1, tone, "-o", tmp_path / "m.syx", "--refine", str(10**20)),
                       "--refine", "up to 100,000")
    assert_clean_error(run(model_app, "fit", "--data", dataset, "--out", tmp_path / "r", "--notes", "0"), "--notes 0")
    v99 = tmp_path / "v99.h5"
    v99.write_bytes(catalogue.read_bytes())
    with h5py.File(v99, "r+") as f:
        f.attrs["format_version"] = 99
    assert_clean_error(run(data_app, "list", v99), "format version 99")
    res = run(data_app, "render", catalogue, "-o", tmp_path / "c.h5", "--cluster", "nowhere", *SHORT)
    assert_clean_error(res, "cannot reach a Dask scheduler")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.wav", "v99.h5"]   # no c.h5.shards left behind


def test_an_empty_path_is_refused_not_taken_as_the_current_folder(dataset, fitted, tmp_path, monkeypatch):
    # `-o ""` (an unset shell variable) became Path("."): export-wav wrote into the current folder
    monkeypatch.chdir(tmp_path)
    for app, args in ((data_app, ["export-wav", dataset, "-o", "", "--limit", "1"]),
                      (data_app, ["export-wav", "", "-o", "w"]), (data_app, ["report", dataset, "-o", ""]),
                      (model_app, ["fit", "--data", dataset, "--out", ""]),
                      (model_app, ["match", "--data", fitted.data, "", "-o", "m.syx"])):
        assert_clean_error(run(app, *args), 'an empty path ("")', "an unset shell variable?")
    assert list(tmp_path.iterdir()) == []


def test_fit_names_a_damaged_spectrogram(dataset, tmp_path):
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(dataset.read_bytes())
    with h5py.File(damaged, "r+") as f:
        mel = f["mel"]
        for i in range(len(mel)):
            x = mel[i]
            x[..., 3] = np.nan
            mel[i] = x
    res = run(model_app, "fit", "--data", damaged, "--out", tmp_path / "r", "--size", "tiny", "--notes", "1",
              "--workers", "0", "--device", "cpu", "--no-progress", "--max-steps", "1", "--epochs", "1",
              "--batch-size", "2", "--fold", "1")         # fold 1 leaves 3 of the 4 presets for training
    assert_clean_error(res, "NaN or infinite values", "render the dataset again")


def test_merge_names_shards_of_jobs_split_differently(catalogue, tmp_path):
    from dexed_data.render import RenderConfig, Shard, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1, operators=False)
    for shard in ("0/2", "0/3"):
        render_dataset(catalogue, tmp_path / f"s{shard[-1]}.h5", cfg, jobs=1, progress=False, limit=6,
                       shard=Shard.parse(shard), segment_size=2)
    res = run(data_app, "merge", tmp_path / "s2.h5", tmp_path / "s3.h5", "-o", tmp_path / "m.h5")
    assert_clean_error(res, "is shard 0/3", "is shard 0/2", "different numbers of shards")
    assert not (tmp_path / "m.h5").exists()
    # shards of jobs with other notes: the message names the notes (it said "engine")
    render_dataset(catalogue, tmp_path / "n.h5", RenderConfig(notes=((50, 85),), hold=0.2, release=0.1, operators=False),
                   jobs=1, progress=False, limit=6, shard=Shard.parse("1/2"), segment_size=2)
    res = run(data_app, "merge", tmp_path / "s2.h5", tmp_path / "n.h5", "-o", tmp_path / "m.h5")
    assert_clean_error(res, "notes differs from")


def test_merge_joins_shards_read_from_other_paths_and_refuses_other_imports(catalogue, tmp_path):
    """Machines see one catalogue under other paths: their shards merge into the single run's file. Two
    imports of one collection (the same presets, one more file) differ in what the file copies from
    them (occurrences): their shards are refused, as a resume across them is."""
    import shutil

    from dexed_data.importer import import_sysex
    from dexed_data.render import RenderConfig, Shard, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1, operators=False)
    other = tmp_path / "elsewhere" / "copy.h5"
    other.parent.mkdir()
    shutil.copy(catalogue, other)
    render_dataset(catalogue, tmp_path / "whole.h5", cfg, jobs=1, progress=False, limit=6, segment_size=2)
    for k, source in enumerate((catalogue, other)):
        render_dataset(source, tmp_path / f"s{k}.h5", cfg, jobs=1, progress=False, limit=6,
                       shard=Shard.parse(f"{k}/2"), segment_size=2)
    res = run(data_app, "merge", tmp_path / "s0.h5", tmp_path / "s1.h5", "-o", tmp_path / "m.h5")
    assert res.exit_code == 0, res.output
    assert snapshot(tmp_path / "m.h5") == snapshot(tmp_path / "whole.h5")
    folder = tmp_path / "syx"
    shutil.copytree(REPO / "presets", folder)
    first = sorted(folder.glob("*.syx"))[0]
    shutil.copy(first, folder / "zz_copy.syx")          # the same presets, one more occurrence each
    import_sysex([folder], tmp_path / "again.h5")
    render_dataset(tmp_path / "again.h5", tmp_path / "a1.h5", cfg, jobs=1, progress=False, limit=6,
                   shard=Shard.parse("1/2"), segment_size=2)
    res = run(data_app, "merge", tmp_path / "s0.h5", tmp_path / "a1.h5", "-o", tmp_path / "mixed.h5")
    assert_clean_error(res, "a1.h5: selection_hash differs", "one render command")
    (tmp_path / "s1.h5").rename(tmp_path / "later.h5")
    (tmp_path / "s1.h5.parts").mkdir()                  # a shard still rendering
    res = run(data_app, "merge", tmp_path / "s0.h5", tmp_path / "s1.h5", "-o", tmp_path / "mixed.h5")
    assert_clean_error(res, "s1.h5: this shard is not finished", "rerun its render command")
    assert not (tmp_path / "mixed.h5").exists()


def test_fit_names_a_damaged_preset_value(dataset, tmp_path):
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(dataset.read_bytes())
    with h5py.File(damaged, "r+") as f:
        raw = f["presets/raw"][...]
        raw[:, 134] = 200                           # ALGORITHM (max 31)
        f["presets/raw"][...] = raw
        ids = [x.decode() for x in f["presets/id"][...]]
    res = run(model_app, "fit", "--data", damaged, "--out", tmp_path / "r", "--size", "tiny", "--notes", "1",
              "--workers", "0", "--device", "cpu", "--no-progress", "--max-steps", "1", "--epochs", "1", "--fold", "1")
    line = assert_clean_error(res, "ALGORITHM = 200", "above its max 31", "damaged")
    assert "preset row" in line and any(f"(id {i})" in line for i in ids)


def test_match_notes_a_name_that_looks_like_a_note_but_is_not(fitted, tmp_path):
    odd = tmp_path / "take_200-85.wav"
    sf.write(odd, (0.1 * np.sin(2 * np.pi * 261.6 * np.arange(11025) / 22050)).astype(np.float32), 22050)
    res = run(model_app, "match", fitted.mlp1, odd, "-o", tmp_path / "m.syx")
    assert res.exit_code == 0, res.output
    assert "take_200-85.wav ends like a note name (_200-85) but it is not a MIDI note" in res.stderr
    # a take number is not a note: take-1-2.wav was matched as note 1 at velocity 2
    take = tmp_path / "take-1-2.wav"
    odd.rename(take)
    res = run(model_app, "match", fitted.mlp1, take, "-o", tmp_path / "t.syx")
    assert res.exit_code == 0, res.output
    assert "take-1-2.wav ends like a note name (-1-2), but a note is named after an underscore" in res.stderr
    assert "60:85" in res.output and " 1:2" not in res.output, res.output


def test_of_two_commands_on_one_output_one_succeeds_and_the_other_says_so(tmp_path):
    from dexed_data.errors import OutputError
    from dexed_data.outputs import check_output, check_folder, write_bytes

    out = check_output(tmp_path / "o.bin")
    (tmp_path / "o.bin").write_bytes(b"other")                # another command published first
    with pytest.raises(OutputError, match="written by another command while this one ran"):
        write_bytes(out, b"mine")
    assert (tmp_path / "o.bin").read_bytes() == b"other" and leftovers(tmp_path) == []
    out = check_output(tmp_path / "o.bin", force=True)          # --force: replace what was checked...
    (tmp_path / "o.bin").unlink()
    (tmp_path / "o.bin").write_bytes(b"third")               # ...but not what another command wrote since
    with pytest.raises(OutputError, match="replaced by another command"):
        write_bytes(out, b"mine")
    assert (tmp_path / "o.bin").read_bytes() == b"third"
    out = check_output(tmp_path / "o.bin", force=True)
    write_bytes(out, b"mine")
    write_bytes(out, b"mine again")                          # this command's own file: replaced again
    assert (tmp_path / "o.bin").read_bytes() == b"mine again"
    folder = check_folder(tmp_path / "wav", ["a.wav", "b.wav"])
    folder.mkdir()
    (folder / "b.wav").write_bytes(b"other")
    write_bytes(folder / "a.wav", b"mine")
    with pytest.raises(OutputError, match="written by another command"):
        write_bytes(folder / "b.wav", b"mine")


def test_a_killed_commands_temporary_file_is_removed_by_the_next_check(tmp_path):
    from dexed_data.outputs import check_folder, check_output

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)                                    # a pid that has exited
    stale = tmp_path / f".o.bin.{dead}.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / f".other.bin.{dead}.tmp"               # another output's: left alone
    other.write_bytes(b"half")
    layout = tmp_path / f".o.bin.{dead}.tmp.tmp"             # a killed merge's file as large as the dataset (audit T)
    backup = tmp_path / f".o.bin.{dead}.old.tmp"              # a killed publish's backup link
    layout.write_bytes(b"reserved")
    backup.write_bytes(b"old")
    check_output(tmp_path / "o.bin")
    assert not stale.exists() and other.exists() and not layout.exists() and not backup.exists()
    # a command writing into a folder clears every killed command's temporary in it
    # (export-wav killed half-way leaves one per WAV; a rerun with other ids writes other names)
    wav = tmp_path / f".other.wav.{dead}.tmp"
    wav.write_bytes(b"half")
    live = tmp_path / f".live.wav.{os.getpid()}.tmp"          # a running command's: left alone
    live.write_bytes(b"half")
    mine = [tmp_path / f".mydraft.{dead}.tmp", tmp_path / ".notes.99999999999999999999.tmp"]   # not ours
    for f in mine:
        f.write_bytes(b"keep")
    check_folder(tmp_path, ["x.wav"])
    assert not wav.exists() and live.exists() and other.exists() and all(f.exists() for f in mine)


def test_a_file_a_render_is_writing_is_refused_before_any_work(tmp_path):
    from dexed_data.render import JobLock

    out = tmp_path / "x.h5"
    with JobLock(out):                                    # as a running `dexed-data render -o x.h5` holds it
        proc = subprocess.run([sys.executable, "-m", "dexed_data", "import-sysex", str(REPO / "presets"), "-o",
                               str(out), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"is being written by another command (pid {os.getpid()}" in proc.stderr, proc.stderr
    assert not out.exists()


def test_two_imports_at_once_on_one_output(tmp_path):
    cmd = [sys.executable, "-m", "dexed_data", "import-sysex", "-o", str(tmp_path / "c.h5"), "--no-progress"]
    procs = [subprocess.Popen(cmd[:4] + [str(REPO / "presets" / bank)] + cmd[4:], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for bank in ("toolkit_bank_a.syx", "toolkit_bank_b.syx")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results   # one wrote, the other says why it did not
    assert all("Traceback" not in err for _, err in results)
    assert leftovers(tmp_path) == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:         # the process ended since it was listed
        return b""


def test_match_workers_exit_when_match_is_killed(dataset, tmp_path):
    import signal
    import time

    from test_render_jobs import _children, left_running

    tone = tmp_path / "t.wav"
    sf.write(tone, (0.1 * np.sin(2 * np.pi * 261.6 * np.arange(6615) / 22050)).astype(np.float32), 22050)
    proc = subprocess.Popen([sys.executable, "-m", "preset_model", "match", "--data", str(dataset), str(tone),
                             "--refine", "100000", "--jobs", "2", "-o", str(tmp_path / "m.syx")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
        workers = [w for w in _children(proc.pid) if b"popen_loky" in _cmdline(w)]
        time.sleep(0.1)
    assert proc.poll() is None and len(workers) == 2, "match ended before its workers started"
    # killed as soon as the workers exist, most often before they have finished importing: a worker
    # re-parented before its initializer ran once took init for its parent and rendered on for ever
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = left_running(workers, 60)                    # a busy machine takes seconds to import torch
    assert not left, f"{len(left)} render workers still running 60 s after kill -9 of match"


def test_a_worker_whose_parent_died_while_it_started_ends_at_once():
    # exit_with_parent(pid) in a process whose parent is no longer pid (it was re-parented while
    # importing): it ends at once with status 1 instead of watching its new parent
    import time

    code = "import os, time; from dexed_data.render import exit_with_parent; exit_with_parent(os.getpid()); time.sleep(60)"
    started = time.monotonic()
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 1
    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------- a command's files together


def test_a_commands_files_appear_together_or_not_at_all(tmp_path):
    from dexed_data.errors import OutputError
    from dexed_data.outputs import check_folder, check_output, together, write_bytes

    a, b = check_output(tmp_path / "a.bin"), check_output(tmp_path / "b.bin")
    with pytest.raises(RuntimeError):
        with together():
            write_bytes(a, b"a")
            assert not a.exists()                      # finished, not yet in place
            raise RuntimeError("fails half-way")
    assert not a.exists() and not b.exists() and leftovers(tmp_path) == []
    with together():
        write_bytes(a, b"a")
        with together():                               # an inner block joins the outer one
            write_bytes(b, b"b")
        assert not b.exists()
    assert a.read_bytes() == b"a" and b.read_bytes() == b"b"
    folder = check_folder(tmp_path / "f", ["x", "y"])
    with pytest.raises(OutputError, match="y was written by another command"):
        with together():
            write_bytes(folder / "x", b"mine")
            write_bytes(folder / "y", b"mine")
            (folder / "y").write_bytes(b"other")       # another command published one of them first
    assert not (folder / "x").exists() and (folder / "y").read_bytes() == b"other"   # none of mine
    assert leftovers(tmp_path) == []
    deep = tmp_path / "new1" / "new2"
    with pytest.raises(RuntimeError):
        with together():
            write_bytes(deep / "f.bin", b"f")
            raise RuntimeError("fails half-way")
    assert not (tmp_path / "new1").exists()            # nor the folders made for the files
    with together():
        write_bytes(deep / "f.bin", b"first")
        write_bytes(os.path.abspath(deep / "f.bin"), b"last")   # the same file twice: the last write wins
    assert (deep / "f.bin").read_bytes() == b"last" and leftovers(tmp_path) == []


_SIGNAL_IN_PUBLISH = """
import os, signal, sys
from pathlib import Path
from dexed_data import console, outputs
console._install()
out, at, last = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "last"
if sys.argv[4:] == ["nolink"]:                     # a file system without hard links: no backups
    def no_link(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")
    outputs.os.link = no_link
renamed, rename = [], outputs._rename_checked
def rename_then_signal(tmp, path):
    rename(tmp, path)
    renamed.append(path)
    if len(renamed) == at:
        os.kill(os.getpid(), signal.SIGINT)        # Ctrl-C while the files are put in place
outputs._rename_checked = rename_then_signal
try:
    with outputs.together(last=last):
        for k in range(5):
            outputs.write_bytes(out / f"b_{k}.syx", b"new")
    print("returned")
except KeyboardInterrupt:
    print("interrupted")
except outputs.OutputError as exc:
    print(exc)
"""


@pytest.mark.parametrize("at, last, ends, kept", [(2, False, "interrupted", 0), (5, False, "interrupted", 5),
                                                  (2, True, "interrupted", 0), (5, True, "returned", 5)])
def test_a_signal_while_files_are_put_in_place_leaves_all_or_none(tmp_path, at, last, ends, kept):
    """Audit Z13: Ctrl-C during an export's renames left part of its files, said none was written,
    and the rerun it advised was refused ("already exists"); over an earlier export with --force it
    left a mix of old and new banks. The renames made are undone before the interrupt; a signal
    during the last rename of a command's last writes changes nothing (all are published)."""
    import subprocess
    import sys

    script = tmp_path / "publish.py"
    script.write_text(_SIGNAL_IN_PUBLISH)
    (tmp_path / "out").mkdir()
    for k in (1, 3):
        (tmp_path / "out" / f"b_{k}.syx").write_bytes(b"old")          # replaced, as with --force
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), str(at), "last" if last else "-"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == ends, done.stderr
    files = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    if kept:
        assert files == {f"b_{k}.syx": b"new" for k in range(5)}
    else:
        assert files == {"b_1.syx": b"old", "b_3.syx": b"old"}                 # put back as they were


def test_an_interrupt_that_cannot_put_back_what_it_replaced_says_so(tmp_path):
    # audit Z18: without hard links (no backups) a replaced file cannot be put back; the interrupt
    # said "files not finished were not written" over new and old files mixed
    import subprocess
    import sys

    script = tmp_path / "publish.py"
    script.write_text(_SIGNAL_IN_PUBLISH)
    (tmp_path / "out").mkdir()
    for k in range(5):
        (tmp_path / "out" / f"b_{k}.syx").write_bytes(b"old")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "2", "-", "nolink"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == (f"interrupted while its 5 files were put in place; 2 of them were written and "
                                   f"could not be put back (the first: {tmp_path / 'out' / 'b_0.syx'})"), done
    assert sorted(p.read_bytes() for p in (tmp_path / "out").iterdir()) == [b"new"] * 2 + [b"old"] * 3


def test_a_library_interrupt_in_a_rename_puts_back_that_file_too(tmp_path, monkeypatch):
    # audit Z18: Python's own handler raises as the rename returns, before it is counted: that file
    # stayed (and with --force, its backup was deleted: old and new files mixed)
    from dexed_data import outputs

    out = tmp_path / "out"
    out.mkdir()
    for k in (0, 2):
        (out / f"b_{k}.syx").write_bytes(b"old")
    real, renamed = outputs._rename_checked, []

    def interrupted_rename(tmp, path):
        real(tmp, path)
        renamed.append(path)
        if len(renamed) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "_rename_checked", interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        with outputs.together():
            for k in range(5):
                outputs.write_bytes(out / f"b_{k}.syx", b"new")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"b_0.syx": b"old", "b_2.syx": b"old"}


def test_a_failed_publish_never_puts_back_a_file_over_another_commands(tmp_path, monkeypatch):
    # audit Z20: a publish failing after another command had written one of its files put its backup
    # back over that command's file (the other command's success half undone)
    from dexed_data import outputs
    from dexed_data.errors import OutputError

    a, b = tmp_path / "a.syx", tmp_path / "b.syx"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    real = outputs._rename_checked

    def then_another_command(tmp, path):
        if Path(path) == b:
            other = tmp_path / "other.tmp"
            other.write_bytes(b"other a")
            os.replace(other, a)                   # another command publishes a meanwhile
            raise OSError(28, "No space left on device")
        return real(tmp, path)

    monkeypatch.setattr(outputs, "_rename_checked", then_another_command)
    with pytest.raises(OutputError, match="1 of this command's 2 files were written before it and could not be put"):
        with outputs.together():
            for path in (a, b):
                outputs.write_bytes(outputs.check_output(path, force=True), b"mine")
    assert a.read_bytes() == b"other a" and b.read_bytes() == b"old b"


def test_a_publish_failing_half_way_puts_back_the_files_it_replaced(tmp_path, monkeypatch):
    """Rule 6 when a rename fails (audit Q3: `export --force` onto an immutable file published the
    files before it and stopped): the files already in place are put back, created ones removed."""
    from dexed_data.errors import OutputError
    from dexed_data.outputs import check_output, together, write_bytes

    a, b, c = tmp_path / "a.syx", tmp_path / "b.syx", tmp_path / "c.syx"
    a.write_bytes(b"old a")
    c.write_bytes(b"old c")                              # b is new; c cannot be replaced
    real = os.replace

    def frozen(src, dst, *args, **kwargs):
        if Path(dst) == c and Path(src).name.startswith(".c.syx."):
            raise PermissionError(1, "Operation not permitted")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr("dexed_data.outputs.os.replace", frozen)
    with pytest.raises(OutputError) as err:
        with together():
            for path in (a, b, c):
                write_bytes(check_output(path, force=True), b"new " + path.name.encode())
    assert str(err.value) == (f"cannot write {c}: Operation not permitted; none of this command's 3 files was "
                              "written (the ones already in place were put back as they were)")
    assert a.read_bytes() == b"old a" and not b.exists() and c.read_bytes() == b"old c"
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a.syx", "c.syx"]
    monkeypatch.setattr("dexed_data.outputs.os.replace", real)
    with together():                                     # the same publish without the fault, backups gone
        for path in (a, b, c):
            write_bytes(check_output(path, force=True), b"new " + path.name.encode())
    assert [p.read_bytes() for p in (a, b, c)] == [b"new a.syx", b"new b.syx", b"new c.syx"]
    assert leftovers(tmp_path) == []


_KILLED_WHILE_PUBLISHING = """
import os, sys
from dexed_data import outputs
from dexed_data.cli import app
real, renamed, after = outputs._rename_checked, [], int(sys.argv[1])

def killed(tmp, path):                 # kill -9 once `after` files are renamed into place
    if len(renamed) == after:
        os._exit(137)
    real(tmp, path)
    renamed.append(path)

outputs._rename_checked = killed
app(sys.argv[2:], prog_name="dexed-data")
"""


def _killed_while_publishing(after: int, args) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_PUBLISHING, str(after), *map(str, args)], env=env,
                            capture_output=True, timeout=300)
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]


@pytest.mark.parametrize("command", ["import-sysex", "export-wav"])
def test_a_command_killed_between_its_renames_has_them_finished_by_the_next_check(command, dataset, tmp_path):
    """Rule 6 under kill -9: the journal lets the same command run again finish the renames, so the
    files appear together (the rerun then finds them all, as after a whole run); killed before the
    first rename, the command published nothing and the rerun simply runs."""
    out = tmp_path / "out"
    out.mkdir()
    if command == "import-sysex":
        args = [command, REPO / "presets", "-o", out / "p.h5", "--report", out / "r.json", "--no-progress"]
        whole = [tmp_path / "whole" / "p.h5", tmp_path / "whole" / "r.json"]
        assert run(data_app, command, REPO / "presets", "-o", whole[0], "--report", whole[1],
                   "--no-progress").exit_code == 0
    else:
        args = [command, dataset, "--limit", "2", "-o", out]
        assert run(data_app, command, dataset, "--limit", "2", "-o", tmp_path / "whole").exit_code == 0
    _killed_while_publishing(0, args)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []      # nothing published
    assert run(data_app, *args).exit_code == 0                     # the rerun runs
    for p in list(out.iterdir()):
        p.unlink()
    _killed_while_publishing(1, args)
    published = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(published) == 1 and len(list(out.glob(".together.*.journal"))) == 1   # one of them, journalled
    if command == "import-sysex":    # another command checking another file of the folder leaves it alone
        assert run(data_app, "export", out / published[0] if published[0] == "p.h5" else whole[0],
                   "-o", out / "x.syx", "--limit", "1").exit_code == 0
        assert len(list(out.glob(".together.*.journal"))) == 1
        (out / "x.syx").unlink()
    res = run(data_app, *args)                                     # the same command again
    assert_clean_error(res, "already exists")
    names = sorted(p.name for p in out.iterdir())
    assert not any(n.startswith(".") for n in names), names       # no journal, no temporary file
    if command == "import-sysex":
        assert names == ["p.h5", "r.json"]
        assert json.loads((out / "r.json").read_text())["summary"] == json.loads(whole[1].read_text())["summary"]
        with h5py.File(out / "p.h5") as a, h5py.File(whole[0]) as b:
            assert np.array_equal(a["presets/raw"][()], b["presets/raw"][()])
    else:
        assert len(names) == 2 and names == sorted(p.name for p in (tmp_path / "whole").iterdir())
        assert all((out / n).read_bytes() == (tmp_path / "whole" / n).read_bytes() for n in names)


def test_a_killed_publish_across_folders_and_links_is_finished_whole(tmp_path):
    """Files in two folders (the report elsewhere), one reached through a linked folder: each folder
    holds the journal, so another command's clean-up there keeps what it needs, and the same command
    run again completes the set, saying so."""
    from dexed_data.outputs import remove_stale_temps

    (tmp_path / "elsewhere" / "real").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "elsewhere" / "real")
    (tmp_path / "b").mkdir()
    args = ["import-sysex", REPO / "presets", "-o", tmp_path / "lnk" / "cat.h5", "--report", tmp_path / "b" / "r.json",
            "--no-progress"]
    for after in (0, 1):
        _killed_while_publishing(after, args)
        assert len(list((tmp_path / "b").glob(".together.*.journal"))) == 1
        assert len(list((tmp_path / "lnk").glob(".together.*.journal"))) == 1
        remove_stale_temps(tmp_path / "b")              # e.g. another command's clean-up of that folder
        res = run(data_app, *args)
        if after == 0:                                  # nothing had been published: the rerun runs
            assert res.exit_code == 0, res.output
        else:                                           # the set is completed, and the message says so
            assert_clean_error(res, "already exists: a run of this command was killed", "now there too")
        assert (tmp_path / "lnk" / "cat.h5").is_file() and (tmp_path / "b" / "r.json").is_file()
        for folder in ("b", "lnk"):
            assert [p.name for p in (tmp_path / folder).iterdir() if p.name.startswith(".")] == []
        (tmp_path / "lnk" / "cat.h5").unlink()
        (tmp_path / "b" / "r.json").unlink()
    # journals a command cannot act on (a NUL or a lone surrogate in a name): skipped, no traceback
    for name in (r"x\u0000y", r"\ud800"):   # as JSON escapes
        (tmp_path / "b" / ".together.999999999.journal").write_text(f'[["{name}", null], ["r.json", null]]')
        res = run(data_app, *args)
        assert res.exit_code == 0, res.output
        (tmp_path / "lnk" / "cat.h5").unlink()
        (tmp_path / "b" / "r.json").unlink()


def test_a_file_open_for_writing_elsewhere_is_not_called_damaged(dataset, tmp_path):
    busy = tmp_path / "busy.h5"
    busy.write_bytes(dataset.read_bytes())
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+'); "
                               "print('open', flush=True); time.sleep(60)", str(busy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        line = assert_clean_error(run(data_app, "info", busy), "busy.h5: open for writing by another program")
        assert "damaged" not in line
    finally:
        holder.kill()
        holder.wait()
    assert run(data_app, "info", busy).exit_code == 0


def test_an_unreadable_input_gets_one_error_line_not_a_usage_box(dataset, tmp_path, monkeypatch):
    """Typer's Path options checked readability first, with a usage box (a user, not root, meets it)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).name == "dataset.h5" and mode & os.R_OK
                        else real(p, mode, **kw))
    for command in (["info"], ["list"], ["report", "-o", str(tmp_path / "r")], ["export-wav", "-o", str(tmp_path / "w")]):
        assert_clean_error(run(data_app, command[0], dataset, *command[1:]), "dataset.h5: not readable")
    res = run(model_app, "fit", "--data", dataset, "--out", tmp_path / "run", "--workers", "0", "--device", "cpu")
    assert_clean_error(res, "dataset.h5: not readable")


def test_a_dataset_still_rendering_is_named_as_such(tmp_path):
    (tmp_path / "d.h5.parts").mkdir()                  # what Ctrl-C leaves (it said only "no such file")
    for command in (["info"], ["list"], ["report", "-o", str(tmp_path / "r")]):
        assert_clean_error(run(data_app, command[0], tmp_path / "d.h5", *command[1:]),
                           "d.h5: no such", "d.h5.parts holds an unfinished render", "rerun that render command")


def test_a_file_replaced_by_two_commands_is_checked_and_replaced_in_one_step(tmp_path):
    """Audit A1: two --force publishes of one file could both pass the check (the file is as I saw it)
    before either replaced it, and both said they had written it. The check and the replace now hold
    the folder's lock: a publish waits while another command holds it."""
    import threading

    from dexed_data.outputs import check_output, write_bytes

    target = tmp_path / "bank.syx"
    target.write_bytes(b"before")
    check_output(target, force=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.readline()",
                               str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        publish = threading.Thread(target=write_bytes, args=(target, b"after"))
        publish.start()
        publish.join(0.5)
        assert publish.is_alive() and target.read_bytes() == b"before"   # waiting for the other command's step
        holder.stdin.write("\n")
        holder.stdin.flush()
        publish.join(30)
        assert not publish.is_alive() and target.read_bytes() == b"after"
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_publish_is_finished_only_as_its_journal_vouches(tmp_path):
    """Finished only onto targets as the killed command saw them, only by a check of one of its
    files, and only for this user's journals whose temporary files are .NAME.PID.tmp beside their
    targets: a planted or copied journal can rename nothing else."""
    from dexed_data.outputs import finish_killed_publishes, remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    a, b, c = (tmp_path / f"{n}.bin" for n in "abc")
    for name, data in (("a", b"killed a"), ("b", b"killed b")):
        (tmp_path / f".{name}.bin.{dead}.tmp").write_bytes(data)
    c.write_bytes(b"published c")                    # renamed before the kill: no temporary file left
    journal = tmp_path / f".together.{dead}.journal"
    journal.write_text(json.dumps([["c.bin", None], ["a.bin", None], ["b.bin", None]]))
    b.write_bytes(b"written since")                  # another command wrote b after the killed one checked it
    finish_killed_publishes([tmp_path / "other.bin"])   # not one of its files: nothing happens
    remove_stale_temps(tmp_path)                     # (fit's clean-up of its run folder) keeps what it needs
    assert journal.exists() and not a.exists() and (tmp_path / f".a.bin.{dead}.tmp").exists()
    (tmp_path / f".c.bin.{dead}.old.tmp").write_bytes(b"c before")   # its backup of c (audit Z19: kept for ever)
    finish_killed_publishes([c])
    assert a.read_bytes() == b"killed a" and b.read_bytes() == b"written since"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]
    # a planted journal naming a file elsewhere, and one of another user: nothing is renamed or removed
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("mine")
    (tmp_path / "payload").write_text("attacker")
    planted = tmp_path / f".together.{dead}.journal"
    planted.write_text(json.dumps([["payload", False], [str(victim / "important.txt"), False]]))
    finish_killed_publishes([tmp_path / "payload"])
    assert (victim / "important.txt").read_text() == "mine" and (tmp_path / "payload").read_text() == "attacker"
    (tmp_path / f".a.bin.{dead}.tmp").write_bytes(b"not mine")
    planted.write_text(json.dumps([["a.bin", False], ["b.bin", False]]))
    os.chown(planted, 12345, -1)
    finish_killed_publishes([a])
    assert a.read_bytes() == b"killed a" and planted.exists()


def test_a_render_worker_killed_while_starting_is_one_line(catalogue, tmp_path, monkeypatch):
    """Audit A2: a worker killed from outside (the out-of-memory killer) while the workers start was a
    traceback of loky's TerminatedWorkerError with the embedded engine (one line with a plug-in's)."""
    import dexed_data.render as render
    from dexed_data.errors import DexedDataError

    class TerminatedWorkerError(Exception):
        pass

    def killed(future, jobs, executor):
        raise TerminatedWorkerError("A worker process managed by the executor was unexpectedly terminated. "
                                    "The exit codes of the workers are {SIGKILL(-9)}")

    monkeypatch.setattr(render, "_first_result", killed)
    out = tmp_path / "d.h5"
    with pytest.raises(DexedDataError, match=r"^a worker process was killed \(SIGKILL\) while it was needed; nothing "
                                             r"was written: run the same command again"):
        render.render_dataset(catalogue, out, render.RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), jobs=1,
                              progress=False, limit=4)
    assert not out.exists()


def test_a_render_resumed_while_another_program_has_its_file_open_says_so_before_rendering(catalogue, tmp_path,
                                                                                         monkeypatch):
    """Audit A1: it rendered every segment, then failed with HDF5's own words ("unable to lock file,
    errno = 11")."""
    import dexed_data.render as render
    from dexed_data.errors import DexedDataError

    config, out = render.RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), tmp_path / "d.h5"

    real = render._run

    def stopped(job, todo, *args, **kwargs):   # the first segment rendered, then Ctrl-C
        real(job, todo[:1], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "_run", stopped)
    with pytest.raises(KeyboardInterrupt):
        render.render_dataset(catalogue, out, config, jobs=1, progress=False, limit=4, segment_size=2)
    partial = tmp_path / "d.h5.parts" / "dataset.h5"
    assert partial.exists() and len(list(partial.parent.glob("seg-*.h5"))) == 1
    # held for writing (R1: the layout was then taken for a damaged one, and the finished segment deleted)
    reader = subprocess.Popen([sys.executable, "-c", f"import h5py, sys, time; f = h5py.File({str(partial)!r}, 'r+'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    calls = []
    monkeypatch.setattr(render, "_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(DexedDataError, match=r"d\.h5\.parts/dataset\.h5 is open in another program .*close it "
                                                 r"there, then rerun the same command to continue"):
            render.render_dataset(catalogue, out, config, jobs=1, progress=False, limit=4, segment_size=2)
        assert not calls and len(list(partial.parent.glob("seg-*.h5"))) == 1   # its finished work kept
    finally:
        reader.kill()
        reader.wait()
    summary = render.render_dataset(catalogue, out, config, jobs=1, progress=False, limit=4, segment_size=2)
    assert out.exists() and calls and summary.rendered == 2   # the other segment only


def test_a_rerun_that_finishes_a_killed_publish_removes_that_runs_journal_and_lock(tmp_path):
    """Audit A2: evaluate --refine killed between its two renames; the rerun put OUT.md in place and
    stopped (the output is complete), leaving the dead run's lock and refine journal for good."""
    import fcntl

    from dexed_data.errors import OutputError
    from dexed_data.outputs import check_output

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    journal, lock = tmp_path / "r.refine-partial.jsonl", tmp_path / ".r.lock"

    def killed_between_its_renames():
        md.unlink(missing_ok=True)
        js.write_text("{}")                                          # renamed before the kill
        (tmp_path / f".r.md.{dead}.tmp").write_text("# report")
        (tmp_path / f".together.{dead}.journal").write_text(json.dumps([["r.json", None], ["r.md", None]]))
        journal.write_text("{}\n")
        lock.write_text(f"{dead} evaluation")

    killed_between_its_renames()
    with pytest.raises(OutputError, match="killed while it put its files in place"):
        check_output(js, leftovers=[journal, lock])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"] and md.read_text() == "# report"
    journal.write_text("{}\n")                                     # an output that merely exists: kept
    with pytest.raises(OutputError, match="already exists"):
        check_output(js, leftovers=[journal])
    assert journal.exists()
    # regression review R1: a command running on this output holds its lock and owns the journal: kept
    killed_between_its_renames()
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(OutputError, match="killed while it put its files in place"):
            check_output(js, leftovers=[journal, lock])
        assert journal.exists() and lock.exists() and md.read_text() == "# report"
    finally:
        os.close(fd)


def test_an_export_wav_that_fails_half_way_leaves_no_file_and_reruns(dataset, tmp_path, monkeypatch):
    import dexed_data.outputs as outputs

    real, calls = outputs.write_bytes, []

    def disk_full_at_the_second(path, data, what="output"):
        calls.append(path)
        if len(calls) < 2:
            return real(path, data, what)
        with outputs.atomic_path(path, what) as tmp:
            tmp.write_bytes(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_bytes", disk_full_at_the_second)
    res = run(data_app, "export-wav", dataset, "--limit", "2", "-o", tmp_path / "wav", "--no-progress")
    assert_clean_error(res, "no space left", "none of the files written with it was put in place")
    assert len(calls) == 2 and not (tmp_path / "wav").exists()     # nor the folder it made
    monkeypatch.setattr(outputs, "write_bytes", real)
    res = run(data_app, "export-wav", dataset, "--limit", "2", "-o", tmp_path / "wav")   # no --force needed
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "wav").glob("*.wav"))) == 2 and leftovers(tmp_path) == []


def test_an_import_whose_report_fails_leaves_no_catalogue(tmp_path, monkeypatch):
    from dexed_data.importer import ImportReport

    def full(self, path):
        from dexed_data.outputs import atomic_path

        with atomic_path(path, "report"):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ImportReport, "write_json", full)
    res = run(data_app, "import-sysex", REPO / "presets", "-o", tmp_path / "p.h5", "--report", tmp_path / "r.json",
              "--no-progress")
    assert_clean_error(res, "r.json", "no space left", "none of the files written with it was put in place")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_match_whose_rerender_fails_leaves_no_voice(fitted, tmp_path, monkeypatch):
    import preset_model.match as match

    def full(result, folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(match, "write_wavs", full)
    tone = tmp_path / "in" / "tone.wav"
    tone.parent.mkdir()
    sf.write(tone, (0.1 * np.sin(2 * np.pi * 261.6 * np.arange(11025) / 22050)).astype(np.float32), 22050)
    res = run(model_app, "match", fitted.mlp1, tone, "-o", tmp_path / "m.syx", "--wav", tmp_path / "re")
    assert_clean_error(res, "No space left")
    assert not (tmp_path / "m.syx").exists() and leftovers(tmp_path) == []


def test_an_import_that_finds_no_voice_fails_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not SysEx")
    for source, needle in ((tmp_path / "empty", "no file in it"), (tmp_path / "notes.txt", "no_dx7_data 1")):
        res = run(data_app, "import-sysex", source, "-o", tmp_path / "p.h5", "--no-progress")
        assert_clean_error(res, "no DX7 voice imported", needle, "nothing written")
    assert not (tmp_path / "p.h5").exists()
    res = run(data_app, "import-sysex", tmp_path / "notes.txt", "-o", tmp_path / "p.h5", "--report",
              tmp_path / "r.json", "--no-progress")
    assert_clean_error(res, "no catalogue written", "r.json says why")
    import json

    assert json.loads((tmp_path / "r.json").read_text())["files"][0]["outcome"] == "no_dx7_data"
    assert not (tmp_path / "p.h5").exists()
    os.mkfifo(tmp_path / "pipe.syx")   # would block for ever when opened
    for source in (tmp_path / "pipe.syx", "/dev/zero"):
        res = run(data_app, "import-sysex", source, "-o", tmp_path / "p.h5", "--no-progress")
        assert_clean_error(res, "not a file or a folder")
    assert not (tmp_path / "p.h5").exists()


# --------------------------------------------------------------------------- signals, streams, folders


def _cli(*args: str, **kw) -> list[str]:
    return [sys.executable, "-c", "import sys; from dexed_data.cli import main; sys.argv[0] = 'dexed-data'; main()",
            *args]


def _ctrl_c_as_at_a_terminal() -> None:
    """A child's Ctrl-C as a terminal delivers it. A test suite run in the background (``pytest &``, a
    script's job) has SIGINT ignored, the children inherit that, and the commands rightly keep an
    ignored signal ignored (as under ``nohup``): a test of Ctrl-C would then test nothing, or wait
    for a command that will never stop."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupt_raised_inside_a_callback_still_stops_the_command(tmp_path):
    # Python runs a signal's handler wherever the main thread is; inside a weakref callback (or a
    # __del__) the interrupt cannot propagate: Python printed "Exception ignored" and the command ran
    # on (fit --workers 2 trained on after a SIGTERM, about one signal in thirty). Here the signal is
    # sent from such a callback, so its handler runs there every time.
    script = tmp_path / "work.py"
    script.write_text(
        "import os, signal, time, weakref\n"
        "import typer\n"
        "from dexed_data.console import run\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "def work(seconds: float = 20.0):\n"
        "    class Thing: pass\n"
        "    end = time.monotonic() + seconds\n"
        "    n = 0\n"
        "    while time.monotonic() < end:\n"
        "        t = Thing()\n"
        "        if n == 100:\n"
        "            weakref.finalize(t, os.kill, os.getpid(), signal.SIGTERM)\n"
        "        del t\n"
        "        n += 1\n"
        "    print('ran to the end')\n"
        "run(app, ())\n")
    started = __import__("time").monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, (proc.returncode, proc.stdout, proc.stderr)
    assert "ran to the end" not in proc.stdout and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: stopped by SIGTERM") and proc.stderr.count("\n") == 1, proc.stderr
    assert __import__("time").monotonic() - started < 15


def test_signals_at_the_edges_of_a_command(tmp_path):
    # (1) after the command finished, while the process exits: it died of the signal without a word,
    #     or printed a traceback from an exit handler, and its published outputs made a rerun refuse;
    # (2) while typer builds the command from its options (outside click's main): a traceback;
    # (3) inside an import: torch's C++ import callbacks cannot unwind an interrupt (SIGABRT), so it
    #     comes once the import is over
    (tmp_path / "slowmod.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\n"
                                         "time.sleep(0.3)\nWHOLE = True\n")
    common = ("import atexit, os, signal, sys, time\nimport typer\nfrom dexed_data.console import run\n"
              "app = typer.Typer()\n")
    scripts = {
        "after": common + ("@app.command()\ndef work():\n    print('done')\n"
                           "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(0.3)))\n"
                           "run(app, ())\n"),
        "building": common + ("class Building:\n    def __call__(self):\n"
                              "        os.kill(os.getpid(), signal.SIGINT)\n        time.sleep(5)\n"
                              "run(Building(), ())\n"),
        "import": common + ("@app.command()\ndef work():\n    import slowmod\n    print('imported', slowmod.WHOLE)\n"
                            "    time.sleep(10)\n    print('ran on')\n"
                            "run(app, ())\n"),
    }
    # (4) while the command line module itself is imported (typer, numpy: a few tenths of a second),
    #     before its main() could set the handlers: a traceback, or an end without a word
    (tmp_path / "slowcli.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGHUP)\n"
                                         "time.sleep(0.3)\ndef main():\n    time.sleep(10)\n    print('ran on')\n")
    scripts["startup"] = "from dexed_data.console import _main_of\n_main_of('slowcli')\n"
    expect = {"after": (0, "done", ""), "building": (130, "", "error: interrupted (Ctrl-C)"),
              "import": (143, "imported True", "error: stopped by SIGTERM"),
              "startup": (129, "", "error: stopped by SIGHUP")}
    for name, code in scripts.items():
        (tmp_path / f"{name}.py").write_text(code)
        proc = subprocess.run([sys.executable, f"{name}.py"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              preexec_fn=_ctrl_c_as_at_a_terminal)
        rc, out, err = expect[name]
        assert proc.returncode == rc, (name, proc.returncode, proc.stdout, proc.stderr)
        assert out in proc.stdout and "ran on" not in proc.stdout, (name, proc.stdout)
        assert proc.stderr.startswith(err) and proc.stderr.count("\n") == (1 if err else 0), (name, proc.stderr)


def test_sigterm_stops_a_render_like_ctrl_c_and_the_rerun_finishes(catalogue, tmp_path):
    import signal
    import time

    out = tmp_path / "d.h5"
    args = ["render", str(catalogue), "-o", str(out), "--jobs", "2", "--notes", "40:85,60:85", "--hold", "1",
            "--release", "0.5", "--no-progress"]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("d.h5.parts/*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)                                     # the job is under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and "error: stopped by SIGTERM" in err and "again to continue" in err, err
    assert not out.exists() and not (tmp_path / ".d.h5.lock").exists()
    rerun = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and out.exists(), rerun.stderr
    from dexed_data.console import _after_interrupt     # the other commands' endings of that line

    assert _after_interrupt("check-plugin") == "; nothing was written" and "--resume" in _after_interrupt("fit")
    import sys

    argv = sys.argv
    try:
        sys.argv = ["preset-model", "evaluate", "runs/x", "--refine", "300"]
        assert "the presets refined so far (if any) are kept beside its output and reused" in _after_interrupt("evaluate")
        sys.argv = ["preset-model", "evaluate", "runs/x"]
        assert "refined" not in _after_interrupt("evaluate")
        sys.argv = ["preset-model", "match", "--data", "d.h5", "a.wav", "--refine", "300", "-o", "a.syx"]
        assert "no voice was written (a match writes its voices together, at the end). Run the same command again to continue: the sounds searched so far (if any) are kept beside its output and reused" in _after_interrupt("match")
        sys.argv = ["preset-model", "match", "--data", "d.h5", "a.wav", "-o", "a.syx"]
        assert "matches every sound again" in _after_interrupt("match")
        sys.argv = ["preset-model", "match", "--data", "d.h5", "a.wav", "--refine=00", "-o", "a.syx"]   # no search
        assert "matches every sound again" in _after_interrupt("match")
    finally:
        sys.argv = argv


def test_progress_in_a_log_is_plain_lines_and_on_a_terminal_a_live_bar(monkeypatch, capsys):
    import io
    import os
    import pty

    from dexed_data import console

    clock = [0.0]
    monkeypatch.setattr("tqdm.std.time", lambda: clock[0])     # tqdm's clock, moved by hand
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = console.progress(total=1000, unit=" presets", leave=False)
    for _ in range(1000):                                      # 100 s of work, an update every 0.1 s
        clock[0] += 0.1
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines(keepends=True)
    assert "\r" not in log.getvalue() and all(line.endswith("\n") for line in lines)
    assert 4 <= len(lines) <= 6, lines                        # start, one per 30 s, the end (leave=False too)
    assert "0/1000" in lines[0] and "1000/1000" in lines[-1] and "1000/1000" not in lines[-2]
    log.truncate(0)
    with console.progress(False, total=10) as off:
        off.update(10)
    assert log.getvalue() == ""

    leader, follower = pty.openpty()                           # a terminal: tqdm's own live bar
    with os.fdopen(follower, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        live = console.progress(total=10)
        live.update(10)
        live.close()
    assert b"\r" in os.read(leader, 4096)
    os.close(leader)


def test_a_render_logged_to_a_file_writes_lines_not_a_redrawn_bar(catalogue, tmp_path):
    log = tmp_path / "render.log"
    with open(log, "w") as err:
        proc = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "d.h5"), "--limit", "8",
                                   "--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--jobs", "1"),
                              stdout=subprocess.DEVNULL, stderr=err)
    assert proc.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "8/8" in text.splitlines()[-1], text


@pytest.mark.parametrize("pool", ["render", "helper"])
def test_workers_leave_ctrl_c_to_their_parent(pool):
    import signal

    from dexed_data.render import _new_executor, helper_pool, shutdown_workers

    ex = _new_executor(1) if pool == "render" else helper_pool(1, {})
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # what a process group gets
            assert ex.submit(signal.getsignal, signum).result(timeout=120) == signal.SIG_IGN
    finally:
        shutdown_workers()


def test_loky_does_not_warn_of_workers_the_job_stops_itself():
    # after a render's one interrupt line, loky's manager thread printed "UserWarning: A worker stopped
    # while some jobs were given to the executor" (1 in 4 Ctrl-C of render --jobs 2)
    import warnings

    from dexed_data.render import helper_pool, shutdown_workers

    helper_pool(1, {})
    shutdown_workers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("A worker stopped while some jobs were given to the executor. This can be caused by a too "
                      "short worker timeout or by a memory leak.", UserWarning)
        warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in caught] == ["another warning"]


def test_ctrl_c_early_in_a_render_prints_one_line_and_the_rerun_gives_the_same_file(catalogue, tmp_path):
    import signal
    import time

    args = ["--notes", "40:85,60:85", "--hold", "0.5", "--release", "0.2", "--no-progress"]
    clean = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "clean.h5"), "--jobs", "1", *args),
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "d.h5"
    interrupted = 0
    for delay in (0.3, 0.8, 1.5):                       # while the workers start, and once they render
        proc = subprocess.Popen(_cli("render", str(catalogue), "-o", str(out), "--jobs", "2", *args),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=_ctrl_c_as_at_a_terminal)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)               # what Ctrl-C does: the whole group
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            break                                        # finished first: nothing left to interrupt
        assert proc.returncode == 130 and "Traceback" not in err and err.count("\n") == 1, err
        interrupted += 1
    assert interrupted, "the render finished before the first Ctrl-C: nothing was tested"
    rerun = subprocess.run(_cli("render", str(catalogue), "-o", str(out), "--jobs", "2", *args),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert not (tmp_path / "d.h5.parts").exists()
    with h5py.File(out) as a, h5py.File(tmp_path / "clean.h5") as b:
        for name in ("mel", "presets/raw", "status"):
            assert np.array_equal(a[name][:], b[name][:]), name


def test_loky_resource_tracker_keeps_its_spurious_leak_warnings_to_itself():
    # a semaphore registered with the tracker and never unregistered, as when its notice is lost at
    # exit: the tracker (which holds stderr until it ends) would print two UserWarnings about it
    code = ("from dexed_data.render import helper_pool, shutdown_workers\n"
            "from joblib.externals.loky.backend import resource_tracker\n"
            "helper_pool(1, {})\n"
            "resource_tracker.register('/loky-never-created', 'semlock')\n"
            "shutdown_workers()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "resource_tracker" not in proc.stderr, proc.stderr


def test_closed_output_streams_and_a_deleted_current_folder(tmp_path):
    out = tmp_path / "p.h5"
    proc = subprocess.run(" ".join(_quote(a) for a in _cli("import-sysex", str(REPO / "presets"), "-o", str(out)))
                          + " >&- 2>&-", shell=True, timeout=120)
    assert proc.returncode == 0 and out.stat().st_size > 0       # the output is lost, the work is not
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + " ".join(_quote(a) for a in _cli("list", str(out)))
                           + " | true"], capture_output=True, text=True, timeout=120)   # the reader has gone
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    for cmd in (_cli("list", str(out)), [sys.executable, "-m", "preset_model", "--help"]):   # stdout on a full disk: not silently lost
        proc = subprocess.run(" ".join(_quote(a) for a in cmd) + " > /dev/full", shell=True, capture_output=True,
                              text=True, timeout=120)
        assert_clean_process_error(proc, "could not be written to its standard output (no space left on the device)")
    gone = tmp_path / "gone"
    gone.mkdir()
    proc = subprocess.run(_cli("info", str(out)), cwd=gone, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.rmdir(gone))
    assert_clean_process_error(proc, "current folder no longer exists")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def test_an_import_accounts_for_files_it_cannot_read(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bank.syx").write_bytes((REPO / "presets" / "toolkit_bank_a.syx").read_bytes())
    os.mkfifo(src / "pipe.syx")                 # would block a reader for ever
    (src / "zero.syx").symlink_to("/dev/zero")  # would be read for ever
    (src / "gone.syx").symlink_to(tmp_path / "nowhere")
    with open(src / "disk.img", "wb") as f:      # sparse: a stray disk image, never read whole
        f.truncate((64 << 20) + 1)
    res = run(data_app, "import-sysex", src, "-o", tmp_path / "p.h5", "--report", tmp_path / "r.json", "--no-progress")
    assert res.exit_code == 0, res.output
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    why = {f["path"]: f["problems"][0]["message"] for f in report["files"] if f["outcome"] != "imported"}
    assert set(why) == {"pipe.syx", "zero.syx", "gone.syx", "disk.img"}, why
    assert "larger than any SysEx collection" in why["disk.img"]
    assert "not a regular file" in why["pipe.syx"] and "not a regular file" in why["zero.syx"]
    assert "broken link" in why["gone.syx"]


def test_rerender_names_never_repeat():
    from preset_model.match import rerender_names

    names = rerender_names(["x/a.wav", "y/a.wav", "a-2.wav", "z/a.flac"])
    assert len(set(names)) == 4 and names[:3] == ["a.rerender.wav", "a-3.rerender.wav", "a-2.rerender.wav"]


def _fit_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from preset_model.cli import main; sys.argv[0] = 'preset-model'; main()",
            "fit", *args]


def test_fit_clears_a_killed_runs_temporaries_and_an_early_interrupt_says_there_is_nothing_to_resume(
        fitted, tmp_path, monkeypatch):
    # a kill -9 while saving left its temporary file for ever; interrupted before its first epoch,
    # fit said "add --resume", which then failed
    from dexed_data import console

    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".last.pt.{dead.pid}.tmp"              # what a kill -9 while saving left
    stale.write_bytes(b"half a checkpoint")
    proc = subprocess.run(_fit_cli("--out", str(out), "--data", str(fitted.data), "--size", "tiny", "--epochs", "1",
                                   "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                                   "--no-progress"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and (out / "last.pt").exists()
    monkeypatch.setattr(sys, "argv", ["preset-model", "fit", "--out", str(tmp_path / "new"), "--data", "d.h5"])
    assert "nothing to resume" in console._after_interrupt("fit")
    monkeypatch.setattr(sys, "argv", ["preset-model", "fit", f"--out={out}", "--data", "d.h5"])
    assert "Add --resume" in console._after_interrupt("fit")


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_to_the_group_of_a_fit_with_loading_workers_gives_one_line(fitted, tmp_path, signame):
    # torch's data-loading workers die of a SIGTERM that their parent did not send (kill or a batch
    # system's time limit to the group), and torch's SIGCHLD handler then raised in the middle of
    # the clean-up: a 300-line traceback and exit 1, in 6 of 7 such signals
    import signal
    import time

    signum = getattr(signal, signame)
    proc = subprocess.Popen(_fit_cli("--out", str(tmp_path / "run"), "--data", str(fitted.data), "--size", "tiny",
                                     "--epochs", "100", "--batch-size", "4", "--from-disk", "--workers", "2",
                                     "--device", "cpu", "--no-progress"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ctrl_c_as_at_a_terminal)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(children.read_text().split()) < 2:
        time.sleep(0.05)
    time.sleep(1.0)                                     # the workers are loading batches
    assert proc.poll() is None, "fit ended before its workers could be signalled"
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "Exception ignored" not in err and err.count("\n") == 1, err


def test_absurd_render_and_import_values_are_refused(catalogue, tmp_path):
    # --timeout past a day overflowed the watchdog's clock and failed every preset with exit 0; an
    # empty --store wrote a dataset no model can use; an empty path imported the current folder
    for args, why in ((["--timeout", "1e300"], "at most 86400"), (["--store", ""], "at least one of audio, mel"),
                      (["--store", ","], "at least one of audio, mel")):
        proc = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "d.h5"), "--limit", "2", *args),
                              capture_output=True, text=True, timeout=300)
        assert_clean_process_error(proc, why)
    assert not list(tmp_path.iterdir())
    proc = subprocess.run(_cli("import-sysex", "", "-o", str(tmp_path / "c.h5")), capture_output=True, text=True,
                          timeout=300, cwd=REPO / "presets")
    assert_clean_process_error(proc, "an empty path")
    assert not (tmp_path / "c.h5").exists()


def test_workers_that_cannot_start_give_one_line_naming_the_limits(catalogue, tmp_path):
    import resource

    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "d.h5"), "--limit", "2", "--jobs", "2",
                               "--notes", "60:85", "--hold", "0.2", "--release", "0.1"),
                          capture_output=True, text=True, timeout=300, preexec_fn=few_descriptors)
    assert_clean_process_error(proc, "ulimit -n) 16")
    assert not list(tmp_path.iterdir())
    # too little memory: a worker that cannot load the engine, or (200 MB here) loky's manager thread,
    # which could not start a thread, died, and left render waiting for ever for its first result
    for kb in (200_000, 300_000):
        def little_memory():
            resource.setrlimit(resource.RLIMIT_AS, (kb * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))

        proc = subprocess.run(_cli("render", str(catalogue), "-o", str(tmp_path / "d.h5"), "--limit", "2", "--jobs",
                                   "2", "--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--no-progress"),
                              capture_output=True, text=True, timeout=180, preexec_fn=little_memory)
        assert_clean_process_error(proc, f"ulimit -v) {kb} kB")
        assert not list(tmp_path.iterdir())


def test_fit_out_under_a_file_and_a_checkpoint_path_are_refused_in_one_line(fitted, tmp_path):
    from typer.testing import CliRunner

    from preset_model.cli import app

    afile = tmp_path / "afile"
    afile.write_text("x")
    res = CliRunner().invoke(app, ["fit", "--data", str(fitted.data), "--out", str(afile / "run"), "--size", "tiny"])
    assert res.exit_code == 2 and f"{afile} is a file, not a folder" in res.output, res.output
    # a path given as --checkpoint would be unpickled (torch printed its multi-line weights_only advice)
    res = CliRunner().invoke(app, ["evaluate", str(fitted.mlp1), "--checkpoint", str(fitted.data)])
    assert res.exit_code == 2 and "use best.pt or last.pt" in res.output, res.output


def test_report_and_export_wav_never_replace_their_input_even_with_force(dataset, tmp_path):
    import shutil

    from dexed_data.dataset import DatasetReader

    with DatasetReader(dataset) as r:
        row = int(np.flatnonzero(r.status == 1)[0])
        pid, name = r.ids[row], r.names[row].strip().replace(" ", "_")
    for sub, file, command in (("rep", "index.html", ["report", "-o"]),
                               ("wav", f"{pid}_{name}_60-85.wav", ["export-wav", "--ids", pid, "-o"])):
        folder = tmp_path / sub
        folder.mkdir()
        shutil.copy(dataset, folder / file)
        before = (folder / file).read_bytes()
        proc = subprocess.run(_cli(command[0], str(folder / file), *command[1:], str(folder), "--force"),
                              capture_output=True, text=True, timeout=300)
        assert_clean_process_error(proc, "would replace an input")
        assert (folder / file).read_bytes() == before
    # a dataset whose path is not UTF-8: the page names it with \xNN (a traceback before)
    odd = tmp_path / os.fsdecode(b"bad\xff.h5")
    shutil.copy(dataset, odd)
    proc = subprocess.run(_cli("report", str(odd), "-o", str(tmp_path / "page")), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bad\\xff.h5" in (tmp_path / "page" / "index.html").read_text(encoding="utf-8")


def test_voice_numbers_big_files_pipes_and_export_to_a_folder(catalogue, tmp_path):
    # found by an audit: a superscript digit as N was a traceback, -1 was "no such file"; info and
    # FILE:N read a file of any size whole (3 GB: 6.6 GB of memory); a pipe was "no such file";
    # export -o . was a traceback; an ids file with a byte-order mark matched no id
    import shutil

    from dexed_data.catalogue import read_catalogue
    from dexed_data.errors import DexedDataError
    from dexed_data.voice import load_voice

    bank = tmp_path / "bank.syx"
    shutil.copy(REPO / "presets" / "toolkit_bank_a.syx", bank)
    for n in ("²", "-1", "x"):
        with pytest.raises(DexedDataError, match="is not a voice number"):
            load_voice(f"{bank}:{n}")
    big = tmp_path / "big.syx"
    with open(big, "wb") as f:
        f.truncate(65 << 20)                                # sparse: no disk used
    for args in (("info", str(big)),):
        assert_clean_process_error(subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120),
                                   "larger than any SysEx collection")
    with pytest.raises(DexedDataError, match="larger than any SysEx collection"):
        load_voice(f"{big}:1")
    os.mkfifo(tmp_path / "pipe.syx")
    assert_clean_process_error(subprocess.run(_cli("info", str(tmp_path / "pipe.syx")), capture_output=True,
                                              text=True, timeout=120), "not a regular file")
    assert_clean_process_error(subprocess.run(_cli("export", str(catalogue), "--all", "-o", "."), cwd=tmp_path,
                                              capture_output=True, text=True, timeout=120), "is a folder")
    first = read_catalogue(catalogue).ids[0]
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbf" + first.encode() + b"\r\n")
    proc = subprocess.run(_cli("export", str(catalogue), "--ids", str(tmp_path / "ids.txt"), "-o",
                               str(tmp_path / "one.syx")), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "one.syx").exists(), proc.stderr


def test_after_an_interrupt_the_worker_serving_threads_stay_quiet():
    # multiprocessing's resource sharer (torch's data-loading workers hand their batches over through
    # it) tripped over a worker being stopped: a thread traceback after fit's one line, 1 in ~20
    import sys
    from types import SimpleNamespace

    from dexed_data.console import _quiet_after_interrupt

    ns: dict = {}
    exec(compile("def serve():\n    raise ConnectionResetError(104, 'Connection reset by peer')",
                 "/usr/lib/python3/multiprocessing/resource_sharer.py", "exec"), ns)
    shown = []
    hook = _quiet_after_interrupt(shown.append)
    for fn in (ns["serve"], lambda: (_ for _ in ()).throw(ConnectionResetError(104, "elsewhere"))):
        try:
            fn()
        except OSError:
            kind, value, tb = sys.exc_info()
        hook(SimpleNamespace(exc_type=kind, exc_value=value, exc_traceback=tb, thread=None))
    assert [str(a.exc_value) for a in shown] == ["[Errno 104] elsewhere"]
    hook(SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError(), exc_traceback=None,
                         thread=SimpleNamespace(name="ExecutorManagerThread")))
    assert len(shown) == 1


def test_a_run_given_as_one_of_its_checkpoints_keeps_its_other_files(fitted, bank, tmp_path):
    # RUN given as RUN/last.pt protected that file alone: `match RUN/last.pt ... -o RUN/best.pt --force`
    # wrote a .syx over the best checkpoint, and interpolate / evaluate replaced split.json
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(fitted.flow6, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    res = run(model_app, "interpolate", folder / "last.pt", f"{bank}:1", f"{bank}:2", "--steps", "4",
              "-o", folder / "best.pt", "--force")
    assert_clean_error(res, "is also an input")
    res = run(model_app, "evaluate", folder / "last.pt", "--limit", "2", "-o", folder / "split", "--force")
    assert_clean_error(res, "is also an input")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_export_never_replaces_its_ids_file_nor_deletes_files_of_its_numbered_names(catalogue, dataset, tmp_path):
    from dexed_data.catalogue import read_catalogue
    from dexed_data.dataset import DatasetReader

    picks = tmp_path / "picks.txt"
    picks.write_text(" ".join(read_catalogue(catalogue).ids[:3]) + "\n")
    res = run(data_app, "export", catalogue, "--ids", picks, "-o", picks, "--force")
    assert_clean_error(res, "input")
    with DatasetReader(dataset) as r:
        row = int(np.flatnonzero(r.status == 1)[0])
        pid, name = r.ids[row], r.names[row].strip().replace(" ", "_")
    (tmp_path / "wav").mkdir()
    named = tmp_path / "wav" / f"{pid}_{name}_60-85.wav"      # an ids file named like the wav it asks for
    named.write_text(pid + "\n")
    res = run(data_app, "export-wav", dataset, "--ids", named, "-o", tmp_path / "wav", "--force")
    assert_clean_error(res, "input")
    assert named.read_text() == pid + "\n" and picks.read_text().count(" ") == 2
    # an earlier, longer export to the same name: its later numbered files went on looking like this one's
    res = run(data_app, "export", catalogue, "--all", "--single", "-o", tmp_path / "b.syx")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b_64.syx").exists()
    before = (tmp_path / "b_50.syx").read_bytes()
    res = run(data_app, "export", catalogue, "--limit", "3", "--single", "-o", tmp_path / "b.syx", "--force")
    assert res.exit_code == 0, res.output
    # they are named, never deleted: a numbered name may be a user's own bank, or this command's input
    assert "61 file(s) of the same numbered name follow b_3.syx" in res.output and "b_4.syx … b_64.syx" in res.output
    assert len(list(tmp_path.glob("b*.syx"))) == 64 and (tmp_path / "b_50.syx").read_bytes() == before
    shutil.copy(catalogue, tmp_path / "p_2.dx")                # an input named like the next numbered file
    res = run(data_app, "export", tmp_path / "p_2.dx", "--limit", "3", "-o", tmp_path / "p.dx", "--force")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p_2.dx").read_bytes() == Path(catalogue).read_bytes()


def test_a_fit_stopped_by_a_full_disk_says_how_to_go_on(fitted, tmp_path, monkeypatch):
    # a full disk while writing a named file gave only "PATH: No space left on device", and a plain
    # rerun of a run with a checkpoint is refused ("pass --resume")
    import preset_model.train as train

    checkpoint = []

    def full(path, text):
        if checkpoint:
            (tmp_path / "b" / "last.pt").write_bytes(b"")   # as if an earlier epoch had saved one
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(train, "_write_atomic", full)
    for out, needle in (("a", "No space left on device; free space and run the same command again"),
                        ("b", "No space left on device; free space and rerun with --resume")):
        res = run(model_app, "fit", "--out", tmp_path / out, "--data", fitted.data, "--size", "tiny", "--epochs", "1",
                  "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress")
        assert_clean_error(res, needle)
        checkpoint.append(True)
    # a refusal is not a full disk (A11: "Permission denied; free space and rerun with --resume")
    from preset_model.cli import _in_run_folder

    def denied():
        raise PermissionError(13, "Permission denied", str(tmp_path / "b" / "metrics.csv"))

    with pytest.raises(OSError, match=r"Permission denied; check the permissions of the run folder and its files, "
                                      r"then rerun with --resume"):
        _in_run_folder(tmp_path / "b", denied)
    # the same when the epoch's files are published together (a checkpoint that does not fit): it said
    # "none of this command's files was written", though earlier epochs' were, and not how to go on
    import preset_model.checkpoint as checkpoint_mod

    def no_room(obj, f):                  # torch's own words for a full disk, through the real save_checkpoint
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed (unexpected pos 1234 vs 5678)")

    monkeypatch.setattr(train, "_write_atomic", lambda path, text: None)
    monkeypatch.setattr(checkpoint_mod.torch, "save", no_room)
    res = run(model_app, "fit", "--out", tmp_path / "c", "--data", fitted.data, "--size", "tiny", "--epochs", "1",
              "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress")
    assert_clean_error(res, "the files already there are unchanged; free space and run the same command again")


def test_a_disk_too_full_to_create_the_render_file_is_one_line_not_a_crash(catalogue, tmp_path, monkeypatch):
    # a disk that filled while render created OUT.parts/dataset.h5.tmp: HDF5 could not close the file,
    # and the process died of a segmentation fault after 110 lines of errors (audit S, tmpfs of 16-20 kB)
    import collections

    import dexed_data.writer as writer
    from dexed_data.errors import DexedDataError
    from dexed_data.render import RenderConfig, render_dataset

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda path: usage(20_000, 19_000, 1_000))
    out = tmp_path / "d.h5"
    with pytest.raises(DexedDataError, match=r"creating .*dataset\.h5 may need up to 0\.\d MB .* and only 0\.0 MB "
                                             r"are free on that disk; free space and rerun the same command"):
        render_dataset(catalogue, out, RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), jobs=1,
                       progress=False, limit=4)
    assert not out.exists() and not list((tmp_path / "d.h5.parts").glob("dataset.h5*"))
    monkeypatch.undo()
    render_dataset(catalogue, out, RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), jobs=1, progress=False,
                   limit=4)
    assert out.exists()
    # a full disk while writing OUT.parts said "[Errno 28] No space left on device"; now in the words of
    # every other command (a real 700 kB tmpfs gave the same)
    import dexed_data.render as render

    def full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "_recorded_command", full)
    with pytest.raises(DexedDataError) as err:
        render_dataset(catalogue, tmp_path / "e.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), jobs=1,
                       progress=False, limit=4)
    assert str(err.value) == (f"writing {tmp_path / 'e.h5.parts'}: no space left on the device; free space and rerun "
                              "the same command to continue")
    # audit Y2: not every failure is a full disk (a folder deleted or made read-only while the job ran),
    # and a job's folder deleted while it ran is not made again by its next segment (a worker left a
    # stray OUT.parts holding one segment)
    from dexed_data.errors import OutputError
    from dexed_data.outputs import write_bytes

    def gone(path):
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(render, "_recorded_command", gone)
    with pytest.raises(DexedDataError) as err:
        render_dataset(catalogue, tmp_path / "g.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1), jobs=1,
                       progress=False, limit=4)
    assert str(err.value).endswith("No such file or directory; fix that and rerun the same command to continue")
    with pytest.raises(OutputError, match="cannot write segment .*No such file or directory; nothing was written"):
        write_bytes(tmp_path / "gone.h5.parts" / "seg-000001.h5", b"x", "segment", parents=False)
    assert not (tmp_path / "gone.h5.parts").exists()


def test_a_worker_ended_by_its_watchdog_prints_no_stack_dump(tmp_path):
    # audit U: a preset hung past 1.5 × --timeout + 5 s ended its worker with "Timeout (0:00:05.15)!"
    # and every thread's stack on the user's terminal; the parent reports the preset as timed out
    code = (
        "import time, numpy as np\n"
        "import dexed_data.render as r\n"
        "from dexed_data.schema import apply_fixed\n"
        "cfg = r.RenderConfig(notes=((60, 85),), hold=0.1, release=0.1, timeout=0.01)\n"
        "r._init_worker(cfg)\n"
        "r.render_one = lambda row, raw: time.sleep(30)\n"
        "r._render_guarded(0, apply_fixed(np.zeros(145, np.uint8)), cfg)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])     # the watchdog ended it
    assert "Timeout" not in proc.stderr and "File " not in proc.stderr, proc.stderr[-2000:]


def test_foreign_hdf5_pipes_and_outputs_that_cannot_be_files_are_refused_first(catalogue, dataset, tmp_path):
    # audit Z4: a `format` attribute that is not one string gave tracebacks (info, list) or "damaged"
    # (report, export); a pipe was "an empty file"; /proc and a folder at a file's name were found only
    # after the work; `-o out/` wrote a file named out
    import h5py

    for k, value in enumerate((["netcdf"], np.array([1, 2]), np.bytes_(b"\xff\xfeab"), h5py.Empty("f"))):
        with h5py.File(tmp_path / f"f{k}.h5", "w") as f:
            f.attrs["format"] = value
        for args in (("info",), ("list",), ("report", "-o", tmp_path / "r"), ("export-wav", "-o", tmp_path / "w"),
                     ("export", "--all", "-o", tmp_path / "x.syx")):
            assert_clean_error(run(data_app, args[0], tmp_path / f"f{k}.h5", *args[1:]), "format")
    os.mkfifo(tmp_path / "pipe.h5")
    assert_clean_error(run(data_app, "list", tmp_path / "pipe.h5"), "not a regular file")
    assert_clean_error(run(data_app, "report", dataset, "-o", "/proc/report"), "takes no new files")
    assert_clean_error(run(data_app, "export-wav", dataset, "-o", "/proc"), "takes no new files")
    (tmp_path / "rep" / "index.html").mkdir(parents=True)
    for force in ((), ("--force",)):
        assert_clean_error(run(data_app, "report", dataset, "-o", tmp_path / "rep", *force),
                           "index.html is a folder where this command writes a file")
    res = CliRunner().invoke(data_app, ["export", str(catalogue), "--all", "-o", f"{tmp_path / 'bank'}/"])
    assert_clean_error(res, "ends with '/', so it names a folder")
    assert not (tmp_path / "bank").exists() and not list(tmp_path.glob("bank_*"))


def test_ids_given_twice_is_refused_not_half_used(catalogue, dataset, tmp_path):
    # typer kept the last --ids and dropped the first's presets without a word
    from dexed_data.catalogue import read_catalogue

    a, b = read_catalogue(catalogue).ids[:2]
    for args in (("export", catalogue, "-o", tmp_path / "x.syx"), ("export-wav", dataset, "-o", tmp_path / "w"),
                 ("render", catalogue, "-o", tmp_path / "d.h5")):
        assert_clean_error(run(data_app, *args, "--ids", a, "--ids", b), "--ids was given 2 times", "give it once")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    res = run(data_app, "export", catalogue, "-o", tmp_path / "x.syx", "--ids", f"{a},{b}")
    assert res.exit_code == 0, res.output


def test_refused_values_are_named_as_typed(catalogue, dataset, fitted, tmp_path):
    # audit Z5: "compression 'gzip'", "storage arrays ('wav',)", "mel settings n_fft 1024, hop 0 …",
    # "--notes 600:85" for 60_0:85, "--gain-db inf" for 1e309; --checkpoint "" ran as best.pt; a 1-Hz wav was matched
    out = tmp_path / "d.h5"
    for args, said in ((("--compression", "gzip"), "--compression 'gzip'"), (("--store", "wav"), "--store wav"),
                       (("--audio-dtype", "float64", "--store", "audio"), "--audio-dtype 'float64'"),
                       (("--audio-dtype", "float32"), "--store mel stores none; add audio to --store"),   # audit A3
                       (("--audio-dtype", "float16", "--hop", "0"), "--hop 0: must be 1"),   # the default: accepted (R2)
                       (("--hop", "0"), "--hop 0: must be 1"),
                       (("--n-mels", "514"), "--n-mels 514: must be 1 … 513"),
                       (("--notes", "60_0:85"), "--notes '60_0:85': write pitch:velocity pairs")):
        assert_clean_error(run(data_app, "render", catalogue, "-o", out, *args), said)
    tone = tmp_path / "t.wav"
    sf.write(tone, np.full(2205, 0.1, np.float32), 22050)
    assert_clean_error(run(model_app, "match", fitted.mlp1, tone, "-o", tmp_path / "m.syx", "--gain-db", "1e309"),
                       "--gain-db 1e309")
    proc = subprocess.run([sys.executable, "-m", "preset_model", "fit", "--data", str(dataset), "--out",
                           str(tmp_path / "r"), "--head", "Flow"], capture_output=True, text=True, timeout=300)
    assert_clean_process_error(proc, "--head 'Flow'")
    assert_clean_error(run(model_app, "evaluate", fitted.mlp1, "--checkpoint", ""), '--checkpoint ""')
    # audit A3: ":1" was "a folder"; both report options were named for one; an empty problems heading
    assert_clean_error(run(model_app, "interpolate", fitted.flow6, ":1", ":2", "-o", tmp_path / "i.syx"),
                       ":1: no file named before the ':'")
    res = run(model_app, "interpolate", fitted.flow6, ":x", ":2", "-o", tmp_path / "i.syx")   # R2: "write :N"
    assert_clean_error(res, ":x: no such file")
    assert ":N, N a whole number" not in res.output
    assert_clean_error(run(data_app, "report", catalogue, "-o", tmp_path / "r.html", "--examples", "-1"),
                       "--examples -1: must be ≥ 0")
    bank = tmp_path / "banks" / "bank.syx"
    assert run(data_app, "export", catalogue, "--all", "-o", bank).exit_code == 0
    assert "problems: none" in run(data_app, "info", bank).output
    shutil.rmtree(bank.parent)
    # audit A3: a folder or a device given as --data was "no such dataset file"
    assert_clean_error(run(model_app, "evaluate", fitted.mlp1, "--data", tmp_path), "(--data) is a folder")
    assert_clean_error(run(model_app, "evaluate", fitted.mlp1, "--data", "/dev/zero"), "(a device or pipe)")
    assert_clean_error(run(model_app, "fit", "--data", "/dev/zero", "--out", tmp_path / "r2"), "(a device or pipe)")
    slow = tmp_path / "slow.wav"
    sf.write(slow, np.full(8, 0.1, np.float32), 1)
    assert_clean_error(run(model_app, "match", fitted.mlp1, slow, "-o", tmp_path / "m.syx"), "1 Hz, below any audio's")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.wav", "t.wav"]


_KILLED_EPOCH = """
import os, sys
from pathlib import Path
from dexed_data import outputs
out = Path(sys.argv[1])
real, renamed = outputs._rename_checked, []

def killed(tmp, path):                 # kill -9 once the first file of the epoch is in place
    if renamed:
        os._exit(137)
    real(tmp, path)
    renamed.append(path)

outputs._rename_checked = killed
names = sys.argv[2:] or ["metrics.csv", "last.pt"]
for name in names:
    outputs.check_output(out / name, force=True)
with outputs.together():
    for name in names:
        outputs.write_bytes(out / name, b"epoch 2 " + name.encode())
"""


def test_every_rank_of_a_resumed_fit_reads_the_killed_epochs_files_once_they_are_in_place(tmp_path):
    # torchrun: rank 0 finished the killed epoch's renames while rank 1 had already read the previous
    # last.pt, and the two trained from different epochs
    import threading

    from preset_model.train import settle_run_folder

    out = tmp_path / "run"
    out.mkdir()
    for name in ("metrics.csv", "last.pt"):
        (out / name).write_bytes(b"epoch 1 " + name.encode())
    killed = subprocess.run([sys.executable, "-c", _KILLED_EPOCH, str(out)], capture_output=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]
    assert (out / "metrics.csv").read_bytes().startswith(b"epoch 2") and (out / "last.pt").read_bytes().startswith(b"epoch 1")
    seen = []
    rank1 = threading.Thread(target=lambda: (settle_run_folder(out, 1), seen.append((out / "last.pt").read_bytes())))
    rank1.start()
    rank1.join(0.5)
    assert rank1.is_alive()                               # waits for rank 0 instead of reading epoch 1's last.pt
    settle_run_folder(out, 0)
    rank1.join(10)
    assert seen == [b"epoch 2 last.pt"] and not list(out.glob(".together.*"))
    # a killed publish of other files in the run folder (evaluate's report, RUN/eval-SPLIT.json) is not the
    # ranks' to settle: rank 1 waited 300 s for it, then failed, and so did every rerun
    killed = subprocess.run([sys.executable, "-c", _KILLED_EPOCH, str(out), "eval-valid.json", "eval-valid.md"],
                            capture_output=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert killed.returncode == 137 and list(out.glob(".together.*.journal"))
    rank1 = threading.Thread(target=settle_run_folder, args=(out, 1))
    rank1.start()
    rank1.join(5)
    assert not rank1.is_alive()


@pytest.mark.parametrize("package, command, patch, advice", [
    ("dexed_data", "import-sysex", "import dexed_data.importer as m; m.import_sysex = boom", "give it a smaller input"),
    ("preset_model", "evaluate", "import preset_model.cli as m; m._plain = boom", "use fewer --jobs"),
    # R5: torch says it with a RuntimeError (the CPU allocator's words), which was a 96-line traceback in fit
    ("preset_model", "fit", "import preset_model.cli as m; m._plain = torch_boom",
     "use a smaller --batch-size or fewer --workers, or --from-disk"),
])
def test_out_of_memory_is_one_line_that_says_what_to_change(package, command, patch, advice, tmp_path):
    """Audit A5: a MemoryError (a file too big for the memory left) was a traceback."""
    args = {"import-sysex": "'x', '-o', 'z'", "evaluate": "'x', '-o', 'z'", "fit": "'--data', 'x', '--out', 'z'"}
    code = (f"import sys\nsys.argv = ['{package}', '{command}', {args[command]}]\n"
            "def boom(*a, **k):\n    raise MemoryError()\n"
            "def torch_boom(*a, **k):\n    raise RuntimeError('[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: "
            "can\\'t allocate memory: you tried to allocate 1 bytes')\n"
            f"{patch}\nfrom {package}.cli import main\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"error: out of memory: {package} {command} needed more memory") and \
        "no file was left half-written" in res.stderr and f"{advice}, and run it again" in res.stderr, res.stderr


def test_a_file_that_cannot_be_opened_for_want_of_file_descriptors_says_so(tmp_path, monkeypatch):
    """Audit A6: merge of more shards than `ulimit -n` allows gave a traceback (from h5py.is_hdf5)."""
    import errno

    from dexed_data import inputs
    from dexed_data.errors import DatasetError

    f = tmp_path / "s1.h5"
    with h5py.File(f, "w"):
        pass

    def no_fds(path):
        raise OSError(errno.EMFILE, "Unable to determine if file is accessible as hdf5 (errno = 24, error message = "
                                    "'Too many open files')")

    monkeypatch.setattr(inputs.h5py, "is_hdf5", no_fds)
    with pytest.raises(DatasetError, match=r"s1.h5: cannot be opened: this command has as many files open as the system "
                                           r"allows \(`ulimit -n`: \d+\); raise the limit"):
        inputs.open_hdf5(f, "shard", DatasetError)


def test_export_scans_its_folder_once_not_once_per_file(catalogue, tmp_path, monkeypatch):
    """Audit A6: each numbered file's check scanned the whole folder (three times) for a killed command's
    leftovers: 16,000 single voices exported over an earlier export took 12 minutes."""
    import dexed_data.outputs as outputs

    out = tmp_path / "o" / "v.syx"
    assert run(data_app, "export", catalogue, "-o", out, "--single", "--all").exit_code == 0
    written = sorted(p.name for p in out.parent.iterdir())
    assert len(written) > 5
    scans = []
    real = os.scandir
    monkeypatch.setattr(outputs.os, "scandir", lambda path=".": (scans.append(path), real(path))[1])
    res = run(data_app, "export", catalogue, "-o", out, "--single", "--all", "--force")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.parent.iterdir()) == written
    assert len(scans) <= 6, len(scans)   # a few per folder, however many files


def test_an_export_killed_while_publishing_is_completed_and_said_so(catalogue, tmp_path):
    """R6: with the folder scanned once, the rerun of an export killed after its first rename said a bare
    'already exists' instead of that it had completed the killed run's files."""
    out = tmp_path / "o" / "bank.syx"
    code = (f"import os, sys\nsys.argv = ['dexed-data', 'export', {str(catalogue)!r}, '-o', {str(out)!r}, '--all', "
            "'--single']\nimport dexed_data.outputs as o\nreal = o._rename_checked\n"
            "def once(tmp, path):\n    real(tmp, path)\n    os._exit(9)\n"
            "o._rename_checked = once\nfrom dexed_data.cli import main\nmain()\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    assert len(list(out.parent.glob("bank*.syx"))) == 1
    res = run(data_app, "export", catalogue, "-o", out, "--all", "--single")
    assert_clean_error(res, "bank.syx already exists: a run of this command was killed while it put its files in place")
    whole = sorted(p.name for p in out.parent.iterdir())
    assert len(whole) > 5 and not [n for n in whole if n.startswith(".")]


def _damaged_mel_chunk(src: Path, dst: Path, row: int) -> Path:
    """A copy of ``src`` whose /mel is gzip-compressed one preset per chunk, with ``row``'s chunk overwritten
    with bytes that do not inflate (a corrupted copy or disk block); every other byte reads back."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        mel = f["mel"][...]
        attrs = dict(f["mel"].attrs)
        del f["mel"]
        new = f.create_dataset("mel", data=mel, chunks=(1, *mel.shape[1:]), compression="gzip")
        for k, v in attrs.items():
            new.attrs[k] = v
        info = new.id.get_chunk_info_by_coord((row, 0, 0, 0))
    with open(dst, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(bytes(range(256)) * (info.size // 256) + bytes(info.size % 256))
    return dst


def test_a_damaged_mel_chunk_names_the_dataset_and_the_row_not_the_run_folder(fitted, tmp_path):
    # R10: fit said "…(writing the run folder; free space and run the same command again)" for a dataset
    # whose compressed /mel chunk did not decode: the user would have freed space and lost the time
    from preset_model.baselines import spectrogram_features
    from preset_model.data import SpectrogramDataset, read_mels
    from preset_model.errors import DataError

    with h5py.File(fitted.data, "r") as f:
        row = int(np.flatnonzero((f["status"][...] == 1) & ~f["silent"][...])[3])
    bad = _damaged_mel_chunk(fitted.data, tmp_path / "damaged.h5", row)
    needle = rf"^{bad}: /mel of preset row {row} cannot be read \(.*\): the file is damaged"
    with pytest.raises(DataError, match=needle):
        read_mels(bad, [row], (0,))
    with pytest.raises(DataError, match=needle):   # the damaged row, not the block read (R13)
        read_mels(bad, np.arange(row - 3, row + 3), (0,))
    # a damaged row between the wanted ones is not read at all (R14: it failed the read and named a sound row)
    with h5py.File(fitted.data, "r") as f:
        assert np.array_equal(read_mels(bad, [row - 1, row + 1], (0,)), f["mel"][[row - 1, row + 1]][:, [0]])
    with pytest.raises(DataError, match=needle):
        SpectrogramDataset(bad, [row], "numcat++", (0,), (-120.0, 0.0))[0]
    assert SpectrogramDataset(bad, [row + 1], "numcat++", (0,), (-120.0, 0.0))[0][0].shape[0] == 1
    with pytest.raises(DataError, match=needle):
        spectrogram_features(bad, [row], (0,), (-120.0, 0.0))
    res = run(model_app, "fit", "--data", bad, "--out", tmp_path / "run", "--size", "tiny", "--epochs", "1",
              "--max-steps", "1", "--workers", "0", "--device", "cpu", "--no-progress")
    assert_clean_error(res, str(bad), "cannot be read", "the file is damaged")
    assert "free space" not in res.output and "run folder" not in res.output
    # R13: an intact /mel stored with a filter this installation lacks (zstd, 32015) is not "damaged"
    foreign = tmp_path / "zstd.h5"
    shutil.copyfile(fitted.data, foreign)
    with h5py.File(foreign, "r+") as f:
        mel, attrs = f["mel"][...], dict(f["mel"].attrs)
        del f["mel"]
        new = f.create_dataset("mel", shape=mel.shape, dtype=mel.dtype, chunks=(1, *mel.shape[1:]), compression=32015,
                               allow_unknown_filter=True)
        for k, v in attrs.items():
            new.attrs[k] = v
        for r in range(mel.shape[0]):
            new.id.write_direct_chunk((r, 0, 0, 0), mel[r:r + 1].tobytes())
    with pytest.raises(DataError, match=rf"^{foreign}: /mel is compressed with HDF5 filter 32015, which this "
                                        "installation cannot decode"):
        read_mels(foreign, [row], (0,))


# --------------------------------------------------------------------------- audit A9


def test_a_checkpoint_given_through_a_link_protects_its_own_runs_files(fitted, bank, tmp_path):
    # A9 M1: the run's files were taken from the link's folder, so `-o RUN/last.pt --force` wrote a bank
    # over the training's last checkpoint (fit --resume then refused the run)
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(fitted.flow6, folder)
    (tmp_path / "ck.pt").symlink_to(folder / "best.pt")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for out in (folder / "last.pt", folder / "metrics.csv"):
        res = run(model_app, "interpolate", tmp_path / "ck.pt", f"{bank}:1", f"{bank}:2", "--steps", "4", "-o", out,
                  "--force")
        assert_clean_error(res, "is also an input")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_a_checkpoint_that_cannot_be_read_is_not_called_damaged(fitted, tmp_path, monkeypatch):
    # A9 L1: a checkpoint without read permission was "not a checkpoint … (damaged, cut short …)", which
    # invites deleting a good file; a link to nothing was "no such checkpoint"
    import torch

    from preset_model.checkpoint import load_checkpoint
    from preset_model.errors import CheckpointError

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(torch, "load", denied)
        with pytest.raises(CheckpointError, match=r"best\.pt: cannot be read \(Permission denied\); check its "
                                                  r"permissions and the disk"):
            load_checkpoint(fitted.flow6 / "best.pt")
    (tmp_path / "gone.pt").symlink_to(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match=r"gone\.pt: a link that leads to no file \(.*nothing\.pt\)"):
        load_checkpoint(tmp_path / "gone.pt")
    (tmp_path / "a.pt").symlink_to(tmp_path / "b.pt")
    (tmp_path / "b.pt").symlink_to(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"a\.pt: a loop of links; give the checkpoint itself"):
        load_checkpoint(tmp_path / "a.pt")
    res = run(model_app, "evaluate", tmp_path / "a.pt", "-o", tmp_path / "ev")   # R13: resolve() raised, a traceback
    assert_clean_error(res, "a loop of links")
    with pytest.raises(CheckpointError, match="not a checkpoint written by"):   # a foreign file: as before
        load_checkpoint(Path(__file__))


def test_a_checkpoint_whose_bytes_changed_on_disk_is_damaged_not_loaded(fitted, tmp_path):
    # R13 (left out at stop 38): torch.load does not check the zip's CRC-32s, so 24 bytes changed in a
    # weight loaded as other weights without a word; every command that loads a checkpoint now checks them
    import shutil
    import struct
    import zipfile

    from preset_model.checkpoint import load_checkpoint
    from preset_model.errors import CheckpointError

    ck = tmp_path / "best.pt"
    shutil.copy(fitted.flow6 / "best.pt", ck)
    load_checkpoint(ck)   # the copy itself is sound
    with zipfile.ZipFile(ck) as z:
        rec = max(z.infolist(), key=lambda i: i.file_size)   # the largest tensor
    data = bytearray(ck.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[rec.header_offset + 26:rec.header_offset + 30])
    start = rec.header_offset + 30 + name_len + extra_len + rec.file_size // 2
    data[start:start + 24] = bytes(255 - b for b in data[start:start + 24])
    ck.write_bytes(data)
    record = rec.filename.split("/", 1)[1]
    with pytest.raises(CheckpointError, match=rf"best\.pt: its record {record} fails its CRC-32 check: its bytes "
                                              r"changed on disk after it was written; the checkpoint is damaged"):
        load_checkpoint(ck)
    assert_clean_error(run(model_app, "evaluate", ck, "-o", tmp_path / "ev"), "best.pt", "CRC-32", "damaged")
    assert not list(tmp_path.glob("ev*"))


@pytest.mark.parametrize("command,name,needle", [
    ("export", "bank.h5", "give a .syx name, not a .h5 one"), ("export", "bank.wav", "not a .wav one"),
    ("export", "bank.syx:1", "bank.syx is a file, so bank.syx:1 also reads as voice 1 of it"),
    ("interpolate", "c.syx:1", "c.syx is a file, so c.syx:1 also reads as voice 1 of it"),
    ("interpolate", "c.pt", "not a .pt one"),
])
def test_a_bank_is_not_written_under_another_kinds_name(command, name, needle, catalogue, fitted, bank, tmp_path):
    # A9 L7, L8: `export -o x.h5` wrote a SysEx bank there; `interpolate -o c.syx:1` made a file that every
    # command then read as voice 1 of c.syx
    if ":" in name:
        (tmp_path / name.partition(":")[0]).write_bytes(bank.read_bytes())
    if command == "export":
        res = run(data_app, "export", catalogue, "--limit", "2", "-o", tmp_path / name)
    else:
        res = run(model_app, "interpolate", fitted.flow6, f"{bank}:1", f"{bank}:2", "--steps", "4", "-o",
                  tmp_path / name)
    assert_clean_error(res, needle)
    assert not (tmp_path / name).exists()


def test_a_bank_named_like_a_time_is_written_and_read_back(catalogue, tmp_path):
    # R13: `-o 'morph 18:30'` was refused, though with no file 'morph 18' the name reads back as itself;
    # R14: `-o ':1'` was a traceback (a bank of no name)
    from dexed_data.voice import load_voice

    for name in ("morph 18:30", ":1"):
        res = run(data_app, "export", catalogue, "--limit", "2", "-o", tmp_path / name)
        assert res.exit_code == 0, res.output
        assert load_voice(f"{tmp_path / name}:2").name.strip()


def test_report_examples_are_bounded(dataset, tmp_path):
    # A9 L3: --examples 100000 drew one image 237,010 px tall (84 s, 2.3 GB)
    from dexed_data.report import MAX_EXAMPLES

    res = run(data_app, "report", dataset, "-o", tmp_path / "rep", "--examples", str(MAX_EXAMPLES + 1))
    assert_clean_error(res, f"--examples {MAX_EXAMPLES + 1}: must be at most {MAX_EXAMPLES}")
    assert not (tmp_path / "rep").exists()


def test_an_ids_file_names_its_bad_line_and_export_wav_names_every_unknown_id(catalogue, dataset, tmp_path):
    # A9 L5: a token that cannot be an id was "not in the catalogue", with no file or line; export-wav
    # named only the first unknown id
    from dexed_data.dataset import DatasetReader

    with DatasetReader(dataset) as ds:
        known = ds.ids[0]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{known}\n# a comment\n{known}, zzzz\n")
    for app, src in ((data_app, catalogue), (data_app, dataset)):
        command = "export" if src == catalogue else "export-wav"
        res = run(app, command, src, "--ids", ids, "-o", tmp_path / ("x.syx" if command == "export" else "wav"))
        assert_clean_error(res, f"--ids {ids}, line 3: 'zzzz' is not a preset id")
    ids.write_text(f"{known}\n{'a' * 16}\n{'b' * 16}\n")
    res = run(data_app, "export-wav", dataset, "--ids", ids, "-o", tmp_path / "wav")
    assert_clean_error(res, f"2 id(s) not in the dataset: {'a' * 16}, {'b' * 16}")
    assert not (tmp_path / "wav").exists()


def test_export_removes_what_a_killed_export_of_any_numbered_name_left_and_shows_progress(catalogue, tmp_path):
    # A9 L2: after kill -9 a shorter rerun removed only the temporary files of its own names (26 MB stayed);
    # a 28,000-file export showed nothing for two minutes
    dead = 4_194_303   # above any pid the kernel gives out: no such process
    left = [tmp_path / f".bank_{k}.syx.{dead}.tmp" for k in (1, 2, 7)] + [tmp_path / f".bank.syx.{dead}.tmp"]
    other = [tmp_path / f".mine.syx.{dead}.tmp", tmp_path / f".bank_x.syx.{dead}.tmp"]
    for p in left + other:
        p.write_bytes(b"partial")
    res = run(data_app, "export", catalogue, "--limit", "3", "--single", "-o", tmp_path / "bank.syx")
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in left) and all(p.exists() for p in other)
    assert sorted(p.name for p in tmp_path.glob("bank*.syx")) == ["bank.syx", "bank_2.syx", "bank_3.syx"]
    assert "export" in res.stderr and "3/3" in res.stderr    # the bar's closing line, in a log
    res = run(data_app, "export", catalogue, "--limit", "3", "--single", "-o", tmp_path / "b.syx", "--no-progress")
    assert res.exit_code == 0 and res.stderr.strip() == "", res.stderr


def test_info_names_a_damaged_header_and_a_render_segment(dataset, tmp_path):
    # A9 L9: "HDF5 file of unknown format '<unreadable: OSError>'" for a file whose attributes do not read
    # back; "unknown format None" for a segment of an unfinished render
    import h5py

    damaged = tmp_path / "damaged.h5"
    data = bytearray(dataset.read_bytes())
    assert b"GCOL" in data   # the global heap that holds the variable-length strings, "format" among them
    data[data.index(b"GCOL"):data.index(b"GCOL") + 4] = b"XXXX"
    damaged.write_bytes(bytes(data))
    for command in ("info", "list"):
        assert_clean_error(run(data_app, command, damaged), "damaged HDF5 file, its attributes cannot be read")
    segment = tmp_path / "d.h5.parts" / "seg-000000.h5"
    segment.parent.mkdir()
    with h5py.File(segment, "w") as f:
        f.create_dataset("status", data=np.zeros(2, np.int8))
    assert_clean_error(run(data_app, "info", segment), "a segment of an unfinished render", "rerun that render")
