"""Run every command under bad input, bad options, unwritable outputs, full disks, concurrency and
``kill -9``, and count the outcomes: clean one-line errors, tracebacks (or crashes), data losses
(an input or old file changed, a partial / temporary / 0-byte file left) and accepted bad input.

Usage::

    python tools/fault_matrix.py [--code DIR] [--work DIR] [-v]

``--code`` is the source tree to test (default: this repository), e.g. an older checkout to
compare with (``git archive COMMIT | tar -x -C /tmp/old``). Uses the 64 bundled presets, one short
note, and a tiny 1-note model. Full disks are simulated with ``RLIMIT_FSIZE`` (EFBIG, the same
error path as ENOSPC). A few cases are skipped on code that would start hundreds of processes or
allocate gigabytes (``--hold 100000``, ``--jobs 1000`` on code without their checks) unless
``--all`` is given. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--no-progress"]


@dataclass
class Case:
    name: str
    args: list[str]                       # after "python -m"
    expect: str = "refuse"                # "refuse" (exit 2) or "ok" (exit 0)
    check: Callable[[], bool] | None = None   # True when the files are as they must be
    limit: int | None = None              # RLIMIT_FSIZE in bytes (a full disk)
    setup: Callable[[], None] | None = None
    risky: bool = False                   # may start hundreds of processes / allocate GBs on old code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, default=REPO)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if not (args.code / "dexed_data" / "__init__.py").is_file():   # else the installed package ran, unsaid
        ap.error(f"--code {args.code}: not a checkout of this toolkit (no dexed_data/ in it)")
    work = args.work or Path(tempfile.mkdtemp(prefix="faults-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(args.code.resolve()))

    def py(cmd: list[str], limit: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        def pre():
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return subprocess.run([sys.executable, "-m", *map(str, cmd)], env=env, cwd=work, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=pre)

    # -- fixtures: catalogue, dataset, shards, a tiny run, audio, broken files -------------------
    cat, data, run = work / "presets.h5", work / "dataset.h5", work / "run"
    if not data.exists():
        shutil.rmtree(work / "in", ignore_errors=True)
        shutil.copytree(REPO / "presets", work / "in")
        for p in (cat, data):
            p.unlink(missing_ok=True)
        _ok(py(["dexed_data", "import-sysex", work / "in", "-o", cat, "--no-progress"]))
        _ok(py(["dexed_data", "render", cat, "-o", data, *SHORT]))
        for k in range(2):
            _ok(py(["dexed_data", "render", cat, "-o", work / f"shard{k}.h5", "--shard", f"{k}/2", "--limit", "8",
                    "--segment-size", "2", *SHORT]))
        _ok(py(["preset_model", "fit", "--data", data, "--out", run, "--size", "tiny", "--notes", "1",
                "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                "--no-progress"]))
    import h5py
    import numpy as np
    import soundfile as sf

    broken = work / "broken"
    shutil.rmtree(broken, ignore_errors=True)
    broken.mkdir()
    raw = data.read_bytes()
    (broken / "empty.h5").write_bytes(b"")
    (broken / "text.h5").write_text("not a dataset\n")
    (broken / "truncated.h5").write_bytes(raw[: len(raw) // 3])
    with h5py.File(data, "r") as src, h5py.File(broken / "attrs.h5", "w") as f:
        f.attrs.update(dict(src.attrs))
    (broken / "incomplete.h5").write_bytes(raw)
    with h5py.File(broken / "incomplete.h5", "r+") as f:
        f.attrs["complete"] = False
    shutil.copy(work / "shard1.h5", broken / "nomel.h5")
    with h5py.File(broken / "nomel.h5", "r+") as f:
        del f["mel"]
    audio = work / "audio"
    shutil.rmtree(audio, ignore_errors=True)
    audio.mkdir()
    sf.write(audio / "tone.wav", (0.3 * np.sin(np.arange(6615) * 0.1)).astype(np.float32), 22050, subtype="FLOAT")
    sf.write(audio / "nan.wav", np.full(2205, np.nan, np.float32), 22050, subtype="FLOAT")
    sf.write(audio / "long.wav", np.zeros(11 * 60 * 8000, np.int16), 8000, subtype="PCM_16")
    blocker = work / "blocker"
    blocker.write_text("a file")
    bank = REPO / "presets" / "toolkit_bank_a.syx"
    out = work / "out"

    def fresh() -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()

    def same(path: Path, content: bytes) -> Callable[[], bool]:
        return lambda: path.read_bytes() == content and not _leftovers(path.parent)

    def nothing_left(folder: Path = out) -> Callable[[], bool]:
        return lambda: not _leftovers(folder) and not list(folder.rglob("*.partial"))

    def old_bank(name: str) -> Callable[[], None]:
        def setup():
            fresh()
            (out / name).write_bytes(b"OLD" * 100)
        return setup

    def copy_in() -> None:
        fresh()
        shutil.copy(bank, out / "bank.syx")
        shutil.copy(cat, out / "cat.h5")
        shutil.copy(work / "shard0.h5", out / "shard0.h5")
        shutil.copy(audio / "tone.wav", out / "tone.wav")

    bank_bytes = bank.read_bytes()
    cat_bytes = cat.read_bytes()
    shard0 = (work / "shard0.h5").read_bytes()
    tone = (audio / "tone.wav").read_bytes()
    dd, pm = ["dexed_data"], ["preset_model"]
    cases = [
        # outputs that are inputs
        Case("import: -o is an input file", dd + ["import-sysex", out, "-o", out / "bank.syx", "--no-progress"],
             setup=copy_in, check=same(out / "bank.syx", bank_bytes)),
        Case("export: -o is the catalogue", dd + ["export", out / "cat.h5", "--limit", "3", "-o", out / "cat.h5"],
             setup=copy_in, check=same(out / "cat.h5", cat_bytes)),
        Case("merge: -o is a shard", dd + ["merge", out / "shard0.h5", work / "shard1.h5", "-o", out / "shard0.h5"],
             setup=copy_in, check=same(out / "shard0.h5", shard0)),
        Case("match: -o is the input wav", pm + ["match", run, out / "tone.wav", "-o", out / "tone.wav"],
             setup=copy_in, check=same(out / "tone.wav", tone)),
        Case("interpolate: -o is the input bank", pm + ["interpolate", run, f"{out / 'bank.syx'}:1",
                                                       f"{out / 'bank.syx'}:2", "-o", out / "bank.syx"],
             setup=copy_in, check=same(out / "bank.syx", bank_bytes)),
        # outputs that cannot be written
        Case("import: -o under a regular file", dd + ["import-sysex", bank, "-o", blocker / "x" / "p.h5"]),
        Case("import: -o in /proc", dd + ["import-sysex", bank, "-o", "/proc/p.h5"]),
        Case("import: -o is a folder", dd + ["import-sysex", bank, "-o", work / "broken"]),
        Case("export: -o under a regular file", dd + ["export", cat, "--limit", "2", "-o", blocker / "b.syx"]),
        Case("export-wav: -o is a file", dd + ["export-wav", data, "--limit", "1", "-o", blocker]),
        Case("report: -o is a file", dd + ["report", data, "-o", blocker]),
        Case("interpolate: -o in /proc", pm + ["interpolate", run, f"{bank}:1", f"{bank}:2", "-o", "/proc/m.syx"]),
        Case("match: -o is a folder", pm + ["match", run, audio / "tone.wav", "-o", work / "broken"]),
        Case("merge: -o in a missing folder (created)", dd + ["merge", work / "shard0.h5", work / "shard1.h5",
                                                              "-o", out / "new" / "m.h5"], expect="ok", setup=fresh,
             check=lambda: (out / "new" / "m.h5").exists() and not _leftovers(out)),
        Case("interpolate: -o in a missing folder (created)", pm + ["interpolate", run, f"{bank}:1", f"{bank}:2",
                                                                    "-o", out / "new" / "m.syx"], expect="ok",
             setup=fresh, check=lambda: (out / "new" / "m.syx").stat().st_size == 4104),
        # damaged inputs
        *[Case(f"info: {k} file", dd + ["info", broken / f"{k}.h5"]) for k in ("truncated", "attrs")],
        *[Case(f"report: {k} file", dd + ["report", broken / f"{k}.h5", "-o", out / "rep"], setup=fresh,
               check=lambda: not (out / "rep").exists()) for k in ("truncated", "attrs", "incomplete")],
        *[Case(f"export-wav: {k} file", dd + ["export-wav", broken / f"{k}.h5", "-o", out / "wav"], setup=fresh,
               check=lambda: not (out / "wav").exists()) for k in ("truncated", "attrs", "incomplete")],
        Case("merge: a shard without /mel", dd + ["merge", work / "shard0.h5", broken / "nomel.h5", "-o", out / "m.h5"],
             setup=fresh, check=lambda: not (out / "m.h5").exists() and not list(out.iterdir())),
        *[Case(f"fit: {k} dataset", pm + ["fit", "--data", broken / f"{k}.h5", "--out", out / "r", "--size", "tiny",
                                           "--epochs", "1", "--workers", "0", "--device", "cpu", "--no-progress"],
               setup=fresh) for k in ("empty", "text", "truncated", "incomplete")],
        *[Case(f"evaluate: {k} dataset", pm + ["evaluate", run, "--data", broken / f"{k}.h5", "-o", out / "e"],
               setup=fresh) for k in ("text", "truncated")],
        Case("export: --ids is an HDF5 file", dd + ["export", cat, "--ids", data, "-o", out / "x.syx"], setup=fresh),
        Case("render: --ids is an HDF5 file", dd + ["render", cat, "-o", out / "d.h5", "--ids", data, *SHORT],
             setup=fresh),
        # option values
        *[Case(f"render: --hold {v}", dd + ["render", cat, "-o", out / "d.h5", "--limit", "1", *SHORT[:2],
                                            "--hold", v, "--release", "0.1", "--no-progress"], setup=fresh, risky=v == "100000")
          for v in ("inf", "nan", "1e300", "100000", "-1")],
        Case("render: --jobs 1000", dd + ["render", cat, "-o", out / "d.h5", "--limit", "1", "--jobs", "1000", *SHORT],
             setup=fresh, risky=True),
        Case("render: --limit -1", dd + ["render", cat, "-o", out / "d.h5", "--limit", "-1", *SHORT], setup=fresh),
        Case("export: --limit -1", dd + ["export", cat, "--limit", "-1", "-o", out / "x.syx"], setup=fresh),
        *[Case(f"fit: {' '.join(o)}", pm + ["fit", "--data", data, "--out", out / "r", "--size", "tiny", "--notes", "1",
                                            "--workers", "0", "--no-progress", "--max-steps", "1", *o], setup=fresh)
          for o in (["--batch-size", "0"], ["--batch-size", "-5"], ["--lr", "-1"], ["--lr", "nan"],
                    ["--workers", "-1"], ["--epochs", "0"], ["--device", "foo"], ["--device", "cuda"])],
        Case("evaluate: --limit 0", pm + ["evaluate", run, "--limit", "0", "-o", out / "e"], setup=fresh),
        Case("report: --examples -1", dd + ["report", data, "--examples", "-1", "-o", out / "rep"], setup=fresh),
        Case("match: NaN audio", pm + ["match", run, audio / "nan.wav", "-o", out / "m.syx"], setup=fresh),
        Case("match: --gain-db nan", pm + ["match", run, audio / "tone.wav", "--gain-db", "nan", "-o", out / "m.syx"],
             setup=fresh),
        Case("match: 11-minute file", pm + ["match", run, audio / "long.wav", "-o", out / "m.syx"], setup=fresh),
        # full disks (file size limit) over an existing file
        Case("full disk: export over a bank", dd + ["export", cat, "--limit", "3", "-o", out / "b.syx", "--force"],
             limit=2000, setup=old_bank("b.syx"), check=same(out / "b.syx", b"OLD" * 100)),
        Case("full disk: import over a catalogue", dd + ["import-sysex", bank, "-o", out / "p.h5", "--force",
                                                         "--no-progress"],
             limit=2000, setup=old_bank("p.h5"), check=same(out / "p.h5", b"OLD" * 100)),
        Case("full disk: interpolate over a bank", pm + ["interpolate", run, f"{bank}:1", f"{bank}:2", "-o",
                                                         out / "b.syx", "--force"],
             limit=2000, setup=old_bank("b.syx"), check=same(out / "b.syx", b"OLD" * 100)),
        Case("full disk: match over a voice", pm + ["match", run, audio / "tone.wav", "-o", out / "b.syx", "--force"],
             limit=100, setup=old_bank("b.syx"), check=same(out / "b.syx", b"OLD" * 100)),
        Case("full disk: render segments", dd + ["render", cat, "-o", out / "d.h5", "--limit", "8", "--segment-size",
                                                 "4", *SHORT], limit=20_000, setup=fresh, check=nothing_left()),
        Case("full disk: report", dd + ["report", data, "-o", out / "rep"], limit=20_000, setup=fresh,
             check=nothing_left()),
        Case("full disk: export-wav", dd + ["export-wav", data, "--limit", "2", "-o", out / "wav"], limit=10_000,
             setup=fresh, check=nothing_left()),
        Case("full disk: evaluate report", pm + ["evaluate", run, "--limit", "2", "-o", out / "e"], limit=500,
             setup=fresh, check=nothing_left()),
    ]

    counts = {"clean": 0, "ok": 0, "traceback": 0, "data loss": 0, "accepted": 0, "skipped": 0}
    for case in cases:
        if case.risky and not args.all:
            counts["skipped"] += 1
            print(f"{'skipped':<10} {case.name} (old code may start hundreds of processes or allocate GBs; --all)")
            continue
        if case.setup:
            case.setup()
        # old code has no --force: drop it (it then overwrites, which is what --force asks)
        cmd = case.args if "--force" in _help(py, case.args) else [a for a in case.args if a != "--force"]
        proc = py(cmd, case.limit)
        verdict = _classify(proc, case)
        counts[verdict] += 1
        line = (proc.stderr.strip().splitlines() or [""])[-1][:150]
        print(f"{verdict:<10} {case.name}" + (f"  | {line}" if args.verbose or verdict != "clean" else ""))

    for verdict, n in _concurrency(py, cat, work).items():
        counts[verdict] += n
    verdict = _kill(py, cat, work, env)
    counts[verdict] += 1
    total = sum(v for k, v in counts.items() if k != "skipped")
    print(f"\n{total} cases run on {args.code}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


_HELP: dict = {}


def _help(py, args: list[str]) -> str:
    key = tuple(args[:2])
    if key not in _HELP:
        _HELP[key] = py([*args[:2], "--help"]).stdout
    return _HELP[key]


def _ok(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        sys.exit(f"fixture failed: {proc.args}\n{proc.stderr[-2000:]}")


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.endswith(".partial")
                                                           or p.stat().st_size == 0)]


def _classify(proc: subprocess.CompletedProcess, case: Case) -> str:
    """The worst outcome: data loss (files not as they must be), then traceback (or crash), then
    accepted bad input (exit 0), else a clean error."""
    if case.check is not None:
        try:
            good = case.check()
        except OSError:
            good = False
        if not good:
            return "data loss"
    if "Traceback" in proc.stderr or proc.returncode not in (0, 2):
        return "traceback"
    if case.expect == "ok":
        return "ok" if proc.returncode == 0 else "clean"
    if proc.returncode == 0:
        return "accepted"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return "clean" if lines and lines[-1].startswith("error:") else "traceback"


def _concurrency(py, cat: Path, work: Path, trials: int = 3) -> dict:
    """Two renders on one output started together: a file marked complete must equal a single run."""
    import h5py
    import numpy as np

    out = {"clean": 0, "ok": 0, "traceback": 0, "data loss": 0, "accepted": 0}
    ref = work / "conc-ref.h5"
    if not ref.exists():
        _ok(py(["dexed_data", "render", cat, "-o", ref, "--limit", "6", "--segment-size", "2", *SHORT]))
    for t in range(trials):
        target = work / f"conc{t}.h5"
        for p in work.glob(f"conc{t}.h5*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        cmd = ["dexed_data", "render", cat, "-o", target, "--limit", "6", "--segment-size", "2", "--jobs", "2", *SHORT]
        results = [None, None]

        def go(i):
            results[i] = py(cmd)
        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        tb = any("Traceback" in r.stderr or r.returncode not in (0, 2) for r in results)
        equal = target.exists()
        if equal:
            with h5py.File(target, "r") as a, h5py.File(ref, "r") as b:
                equal = bool(a.attrs.get("complete")) and all(
                    np.array_equal(a[k][()], b[k][()], equal_nan=True) for k in ("mel", "status", "presets/raw"))
        verdict = "data loss" if not equal else ("traceback" if tb else "clean")
        out[verdict] += 1
        print(f"{verdict:<10} two renders on one output, trial {t + 1}  | "
              + " / ".join(f"rc {r.returncode}" for r in results))
    return out


def _kill(py, cat: Path, work: Path, env: dict) -> str:
    """kill -9 of a render's main process: its workers must exit (checked 20 s later)."""
    target = work / "killed.h5"
    for p in work.glob("killed.h5*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    # six 12-s notes per preset, so the job is still running when it is killed (with short notes it
    # can finish between two polls now that the workers start in ~1.5 s)
    slow = ["--notes", "40:85,50:85,60:42,60:85,60:127,70:85", "--hold", "12", "--release", "0.5", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "dexed_data", "render", cat, "-o", target, "--jobs", "2",
                             "--segment-size", "4", *slow], env={**os.environ, "PYTHONPATH": env["PYTHONPATH"]},
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (time.monotonic() < deadline and proc.poll() is None
           and not list((work / "killed.h5.parts").glob("seg-*.h5"))):
        time.sleep(0.2)
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == proc.pid]
    if proc.poll() is not None:
        print(f"{'skipped':<10} kill -9 of render: the job ended (rc {proc.returncode}) before it could be killed")
        return "skipped"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(20)
    alive = [c for c in children if _alive(c)]
    for c in alive:
        os.kill(c, signal.SIGKILL)
    verdict = "clean" if children and not alive else "data loss" if alive else "traceback"
    print(f"{verdict:<10} kill -9 of render: {len(alive)} of {len(children)} child processes alive 20 s later")
    return verdict


def _ppid(p: Path) -> int | None:
    try:
        return int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    main()
