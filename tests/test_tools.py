"""The benchmark and demo scripts under tools/: the cheap parts (argument and output handling), run
as the user runs them, in a subprocess. The expensive measurements themselves are not run here."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def _tool(name: str):
    """A tools/ script imported as a module (its main() not run)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- demo.sh: a relative WORK_DIR is the caller's ---------------------------------------------------

_STUB = """#!/usr/bin/env bash
echo "$(basename "$0") | $PWD | $*" >> "$STUB_LOG"
if [[ "${1:-}" == fit ]]; then      # demo.sh reads the run's split.json after fit
  while [[ $# -gt 0 ]]; do
    if [[ "$1" == --out ]]; then mkdir -p "$2"; echo '{"test": ["t0"]}' > "$2/split.json"; fi
    shift
  done
fi
"""


def _run_demo(tmp_path: Path, cwd: Path, *args: str, script: Path = TOOLS / "demo.sh") -> list[str]:
    """demo.sh run from ``cwd`` with stub ``dexed-data`` / ``preset-model`` commands; their log lines."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name in ("dexed-data", "preset-model"):
        (stubs / name).write_text(_STUB)
        (stubs / name).chmod(0o755)
    log = tmp_path / "stub.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", STUB_LOG=str(log))
    subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   timeout=60)
    return log.read_text().splitlines()


def test_demo_relative_work_dir_is_the_callers(tmp_path):
    caller = tmp_path / "caller"
    caller.mkdir()
    lines = _run_demo(tmp_path, caller, "mydemo")
    assert (caller / "mydemo").is_dir()
    assert not (REPO / "mydemo").exists()
    first = lines[0].split(" | ")
    assert first[0] == "dexed-data" and first[1] == str(REPO)        # the commands still run in the repo
    assert f"-o {caller}/mydemo/presets.h5" in first[2]
    assert all(f"{REPO}/mydemo" not in line for line in lines)


def test_demo_default_and_absolute_work_dir(tmp_path):
    # a copy of the script in a repository-like folder: run from its root, the default is demo-run/ there
    fake = tmp_path / "repo"
    (fake / "tools").mkdir(parents=True)
    shutil.copy(TOOLS / "demo.sh", fake / "tools" / "demo.sh")
    lines = _run_demo(tmp_path, fake, script=fake / "tools" / "demo.sh")
    assert (fake / "demo-run").is_dir()
    assert f"-o {fake}/demo-run/presets.h5" in lines[0]
    # from elsewhere, the default is that folder's demo-run/; an absolute WORK_DIR is kept as it is
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run_demo(tmp_path, elsewhere, script=fake / "tools" / "demo.sh")
    assert (elsewhere / "demo-run").is_dir()
    absolute = tmp_path / "abs" / "work"
    lines = _run_demo(tmp_path, elsewhere, str(absolute), script=fake / "tools" / "demo.sh")
    assert absolute.is_dir() and f"-o {absolute}/presets.h5" in lines[0]


# -- bench_import: every --repeat runs -----------------------------------------------------------------

def test_bench_import_repeats(tmp_path, corpus_dir):
    few = tmp_path / "few"
    few.mkdir()
    for src in sorted(corpus_dir.rglob("*.syx"))[:5]:
        shutil.copy(src, few / src.name)
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_import.py"), str(few), "--repeat", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "best of 2" in proc.stdout and "files       5" in proc.stdout


def test_bench_import_refuses_no_repeat(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_import.py"), str(tmp_path), "--repeat", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--repeat 0" in proc.stderr


# -- bench_refine --out: a folder or a FILE.json, checked before any work --------------------------------

@pytest.fixture(scope="module")
def bench_refine():
    return _tool("bench_refine")


def test_bench_refine_out_folder(tmp_path, bench_refine):
    out = tmp_path / "a" / "b" / "bench"
    results, tables = bench_refine.output_paths(out)
    assert out.is_dir()
    assert (results, tables) == (out / "bench_refine.json", out / "bench_refine.md")
    existing = tmp_path / "existing"
    existing.mkdir()
    assert bench_refine.output_paths(existing)[0] == existing / "bench_refine.json"
    assert list(existing.iterdir()) == []          # the check leaves nothing behind


def test_bench_refine_out_json_file(tmp_path, bench_refine):
    out = tmp_path / "missing" / "quick.json"
    assert bench_refine.output_paths(out) == (out, out.with_suffix(".md"))
    assert out.parent.is_dir() and not out.exists()


def test_bench_refine_atomic_write(tmp_path, bench_refine):
    path = tmp_path / "r.json"
    bench_refine.write_atomic(path, "1")
    bench_refine.write_atomic(path, "2")
    assert path.read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.parametrize("make, out", [
    (lambda t: (t / "afile").write_text(""), "afile"),               # --out names a file, not a folder
    (lambda t: (t / "afile").write_text(""), "afile/sub/"),          # a parent is a file
    (lambda t: (t / "d.json").mkdir(), "d.json"),                     # FILE.json is a folder
    (lambda t: (t / "e" / "bench_refine.json").mkdir(parents=True), "e"),
], ids=["file-not-folder", "parent-is-file", "json-is-folder", "results-name-is-folder"])
def test_bench_refine_bad_out_fails_at_once(tmp_path, make, out):
    make(tmp_path)
    start = time.perf_counter()
    # --data does not exist either: the --out check comes first, before reading or rendering anything
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_refine.py"), "--data", "missing.h5", "--out", out],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {out.rstrip('/')}"), proc.stderr
    assert "Traceback" not in proc.stderr and time.perf_counter() - start < 20
    assert not list(tmp_path.rglob("*.tmp"))


# -- bench_render: no negative steady state ---------------------------------------------------------

def test_bench_render_steady_state_not_negative():
    per_extra = _tool("bench_render").per_extra_preset
    assert per_extra(10.0, 4.0, 7) == pytest.approx(1.0)
    assert per_extra(4.0, 4.7, 16) is None          # the N-preset run was faster than the 1-preset one
    assert per_extra(4.0, 4.0, 16) is None
    assert per_extra(5.0, 1.0, 1) is None


def test_bench_render_refuses_too_few_presets():
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_render.py"), "--presets", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--presets 1: at least 4" in proc.stderr


# -- audit Y7: scripts that deleted or overwrote what was not theirs, tracebacks ----------------------

def test_tools_keep_what_is_not_theirs_and_fail_in_one_line(tmp_path):
    def run(*args, cwd=tmp_path):
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)

    precious = tmp_path / "precious"                      # bench_render --work deleted a folder it did not make
    precious.mkdir()
    (precious / "thesis.txt").write_text("mine")
    res = run(TOOLS / "bench_render.py", "--presets", "4", "--source", tmp_path / "nothing", "--work", precious)
    assert res.returncode == 2 and "holds files not marked as this script's" in res.stderr, res.stderr
    assert (precious / "thesis.txt").read_text() == "mine"
    res = run(TOOLS / "bench_render.py", "--presets", "4", "--source", tmp_path / "nothing", "--work", tmp_path / "w")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert (tmp_path / "w" / ".benchmark-scratch").exists()   # its own: emptied by the next run
    (tmp_path / "link").symlink_to(tmp_path / "w")
    res = run(TOOLS / "bench_render.py", "--presets", "4", "--source", tmp_path / "nothing", "--work", tmp_path / "link")
    assert res.returncode == 2 and "is a link" in res.stderr and (tmp_path / "w").is_dir(), res.stderr
    res = run(TOOLS / "bench_train.py", "--data", tmp_path / "none.h5")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "none.h5" in res.stderr, res.stderr
    results = tmp_path / "RESULTS.md"                     # experiments.py overwrote cpu_experiment.py's file
    results.write_text("# x\n<!-- end of tools/cpu_experiment.py output; sections below are kept -->\nkept\n")
    res = run(TOOLS / "experiments.py", "--small", "--out", tmp_path / "exp", "--results", results)
    assert res.returncode == 2 and "is written by tools/cpu_experiment.py" in res.stderr, res.stderr
    assert results.read_text().endswith("kept\n") and not (tmp_path / "exp").exists()
    res = run(TOOLS / "fault_matrix.py", "--code", tmp_path / "nowhere")   # it tested the installed package
    assert res.returncode == 2 and "not a checkout of this toolkit" in res.stderr
    notes = tmp_path / "notes.txt"                       # audit A3: rebuilt from its JSON lines, the rest lost
    notes.write_text("00d671d7c67dab1f\n")
    res = run(TOOLS / "plugin_agreement.py", "--presets", tmp_path / "none.h5", "--out", notes, "--limit", "1")
    assert res.returncode == 2 and "is not this tool's output (line 1" in res.stderr, res.stderr
    assert notes.read_text() == "00d671d7c67dab1f\n"
    for args, said in ((["--out", tmp_path], "is a folder"), (["--out", tmp_path / "a.jsonl", "--limit", "-1"],
                                                               "--limit -1: must be 0 or more")):
        res = run(TOOLS / "plugin_agreement.py", "--presets", tmp_path / "none.h5", *args)
        assert res.returncode == 2 and said in res.stderr and "Traceback" not in res.stderr, res.stderr
    for tool, args in (("lsd_anatomy.py", ["--steps", "-1"]), ("lsd_anatomy.py", ["--sounds", "0"]),
                       ("bench_gain.py", ["--sounds", "0"]), ("bench_refine.py", ["--budget", "0", "--out", tmp_path]),
                       ("refine_oracle.py", ["--sounds", "0", "--out", tmp_path / "o.json"])):
        res = run(TOOLS / tool, "--data", tmp_path / "none.h5", *args)
        assert res.returncode == 2 and res.stderr.startswith(f"error: {args[0]} {args[1]}: must be at least"), res.stderr
    res = subprocess.run(["bash", TOOLS / "demo.sh", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and "Usage: bash tools/demo.sh [WORK_DIR]" in res.stdout
    assert not (tmp_path / "--help").exists()            # it ran the whole demo into ./--help
    res = subprocess.run(["bash", TOOLS / "demo.sh", "-x"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "no such option" in res.stderr


def test_sound_dedup_check_refuses_another_corpus_in_its_output(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(REPO / "presets" / "toolkit_bank_a.syx", a)
    shutil.copy(REPO / "presets" / "toolkit_bank_b.syx", b)
    out = tmp_path / "sdc"
    first = subprocess.run([sys.executable, TOOLS / "sound_dedup_check.py", a, "-o", out, "--limit", "2"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    res = subprocess.run([sys.executable, TOOLS / "sound_dedup_check.py", b, "-o", out, "--limit", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "holds the results of another corpus" in res.stderr, res.stderr
    (out / "corpus.txt").unlink()                        # an older version's output: said so, with how to reuse it
    res = subprocess.run([sys.executable, TOOLS / "sound_dedup_check.py", a, "-o", out, "--limit", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "no record of its corpus" in res.stderr and "corpus.txt" in res.stderr, res.stderr
