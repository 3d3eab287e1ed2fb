"""Render jobs as processes: two jobs on one output, ``kill -9`` of the main process, resume
across versions, a full disk while writing segments. Real ``dexed-data render`` subprocesses on a
few bundled presets and one short note."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--notes", "60:85", "--hold", "0.2", "--release", "0.1", "--no-progress"]


def render_cmd(catalogue: Path, out: Path, *extra: str) -> list[str]:
    """The render command line: SHORT's settings, but those ``extra`` gives (an option given twice is refused)."""
    short = [w for k in range(0, len(SHORT) - 1, 2) if SHORT[k] not in extra for w in SHORT[k:k + 2]] + SHORT[-1:]
    return [sys.executable, "-m", "dexed_data", "render", str(catalogue), "-o", str(out), *short, *extra]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    from dexed_data.importer import import_sysex

    path = tmp_path_factory.mktemp("jobs") / "presets.h5"
    import_sysex([REPO / "presets"], path)
    return path


def content(path: Path) -> dict:
    """Everything a reader sees in a dataset file (its arrays and attributes)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "attrs":
            assert a[k] == b[k]
        else:
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=np.asarray(a[k]).dtype.kind == "f"), k


def test_two_renders_on_one_output_never_give_a_bad_file(catalogue, tmp_path):
    single = tmp_path / "single.h5"
    subprocess.run(render_cmd(catalogue, single, "--limit", "6", "--segment-size", "2"), env=env(), check=True,
                   capture_output=True)
    reference = content(single)
    for trial in range(2):
        out = tmp_path / f"both{trial}.h5"
        procs = [subprocess.Popen(render_cmd(catalogue, out, "--limit", "6", "--segment-size", "2", "--jobs", "2"),
                                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        for rc, err in results:
            assert "Traceback" not in err, err
            assert rc == 0 or (rc == 2 and "another render job" in err and err.count("\n") == 1), (rc, err)
        assert any(rc == 0 for rc, _ in results)
        assert_same(content(out), reference)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((f"both{trial}", f".both{trial}"))) \
            == [f"both{trial}.h5"]


def test_a_locked_output_stops_a_second_job_at_once(catalogue, tmp_path):
    out = tmp_path / "d.h5"
    with open(tmp_path / ".d.h5.lock", "w") as lock:
        lock.write("12345")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        proc = subprocess.run(render_cmd(catalogue, out, "--limit", "2"), env=env(), capture_output=True, text=True)
        assert time.monotonic() - t0 < 30
    assert proc.returncode == 2 and proc.stderr.startswith("error: another render job (pid 12345)"), proc.stderr
    assert not out.exists() and not (tmp_path / "d.h5.parts").exists()
    from dexed_data.errors import RenderError
    from dexed_data.render import JobLock    # the holder names its own kind (audit Z20: "another evaluation" for a match)

    with JobLock(out, what="match"):
        with pytest.raises(RenderError, match=rf"another match \(pid {os.getpid()}\) is writing d.h5"):
            JobLock(out, what="evaluation").__enter__()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def left_running(workers: list[int], seconds: float) -> list[int]:
    """The ``workers`` still running ``seconds`` from now (killed then, so they do not leak into the session)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    return left


def test_workers_exit_when_the_main_process_is_killed(catalogue, tmp_path):
    out = tmp_path / "d.h5"
    # six 12 s notes per preset: ~4 s of rendering on two workers, so the job is still running
    # when it is killed (with the short notes it could finish between two polls on a fast machine)
    slow = ["--notes", "40:85,50:85,60:42,60:85,60:127,70:85", "--hold", "12", "--release", "0.5",
            "--jobs", "2", "--limit", "64", "--segment-size", "4"]
    proc = subprocess.Popen(render_cmd(catalogue, out, *slow),
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if workers and list((tmp_path / "d.h5.parts").glob("seg-*.h5")):
            break   # the workers render (a finished segment)
        time.sleep(0.05)
    assert proc.poll() is None, "the render finished before it could be killed; make the job longer"
    assert workers, "no worker processes found"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = left_running(workers, 20)
    assert not left, f"{len(left)} of {len(workers)} child processes still running 20 s after kill -9"
    # and the job resumes: the same command finishes the file
    proc = subprocess.run(render_cmd(catalogue, out, *slow), env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and not (tmp_path / "d.h5.parts").exists()


def test_resume_refuses_segments_of_another_version(catalogue, tmp_path):
    out = tmp_path / "d.h5"
    parts = tmp_path / "d.h5.parts"
    # a first run stopped by a full disk at its first segment (files limited to 20 kB, a segment is ~40 kB)
    proc = subprocess.run(render_cmd(catalogue, out, "--limit", "8", "--segment-size", "2"), env=env(),
                          capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and "rerun the same command" in proc.stderr, proc.stderr
    assert sorted(p.name for p in parts.iterdir()) == ["job.json"]   # no partial segment
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5.parts"]   # no lock, no temporary file
    record = json.loads((parts / "job.json").read_text())
    record["engine_version"] = "dexed-py 0.0.1 + dc_block(x/8)"
    (parts / "job.json").write_text(json.dumps(record))
    proc = subprocess.run(render_cmd(catalogue, out, "--limit", "8", "--segment-size", "2"), env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "engine_version" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()


def _disk_use(folder: Path) -> int:
    """Bytes allocated on disk by the files under ``folder`` (files may vanish while counted)."""
    used = 0
    for root, _, names in os.walk(folder):      # unlike rglob, walk skips a folder removed mid-walk
        for name in names:
            try:
                used += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return used


def test_peak_disk_is_the_final_file_written_once(catalogue, tmp_path):
    """Uncompressed (the default), rows go straight into the dataset file: the disk never holds a
    second copy, and the file that appears is the one the workers wrote (renamed, not copied)."""
    out = tmp_path / "d.h5"
    proc = subprocess.Popen(render_cmd(catalogue, out, "--notes", "40:85,50:85,60:42,60:85,60:127,70:85",
                                       "--hold", "2", "--jobs", "2", "--segment-size", "4"),
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, inodes = 0, set()
    partial = tmp_path / "d.h5.parts" / "dataset.h5"
    while proc.poll() is None:
        peak = max(peak, _disk_use(tmp_path))
        try:
            inodes.add(partial.stat().st_ino)
        except OSError:
            pass
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()
    final = out.stat().st_blocks * 512
    assert final > 20e6                        # 64 presets × ~1 MB of spectrograms
    assert peak <= 1.2 * final, (peak, final)
    assert out.stat().st_ino in inodes         # the unfinished file itself became the dataset


@pytest.mark.parametrize("compression", ["none", "gzip-1"])
def test_a_render_interrupted_while_finishing_resumes_to_the_same_data(catalogue, tmp_path, monkeypatch, compression):
    import dexed_data.fingerprint as fingerprint
    from dexed_data.render import RenderConfig, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1, store=("audio", "mel"), compression=compression)
    render_dataset(catalogue, tmp_path / "clean.h5", cfg, jobs=1, progress=False, limit=40)

    def interrupted(*args, **kwargs):   # the last step of the finish: every other array is written
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(fingerprint, "duplicate_of", interrupted)
        with pytest.raises(KeyboardInterrupt):
            render_dataset(catalogue, tmp_path / "resumed.h5", cfg, jobs=1, progress=False, limit=40)
    assert not (tmp_path / "resumed.h5").exists()
    render_dataset(catalogue, tmp_path / "resumed.h5", cfg, jobs=1, progress=False, limit=40)
    assert_same(content(tmp_path / "resumed.h5"), content(tmp_path / "clean.h5"))
    # the arrays the first finish wrote are kept, not deleted and written again
    assert (tmp_path / "resumed.h5").stat().st_size < (tmp_path / "clean.h5").stat().st_size + 4096


def test_a_resume_with_the_catalogue_path_spelled_otherwise_keeps_the_finished_segments(catalogue, tmp_path,
                                                                                          monkeypatch):
    # the creation command (catalogue path as typed) differed, so the unfinished file was taken for
    # another job's and every finished segment was deleted without a word
    import dexed_data.fingerprint as fingerprint
    from dexed_data.render import RenderConfig, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    out = tmp_path / "d.h5"

    def interrupted(*args, **kwargs):   # at the finish: every segment is rendered
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(fingerprint, "duplicate_of", interrupted)
        with pytest.raises(KeyboardInterrupt):
            render_dataset(catalogue, out, cfg, jobs=1, progress=False, limit=12, segment_size=4)
    monkeypatch.chdir(catalogue.parent)
    summary = render_dataset(Path(catalogue.name), out, cfg, jobs=1, progress=False, limit=12, segment_size=4)
    assert summary.rendered == 0 and summary.ok == 12
    with h5py.File(out, "r") as f:
        assert f.attrs["command"].startswith(f"dexed-data render {catalogue.name} ")   # the command that finished it
    render_dataset(catalogue, tmp_path / "clean.h5", cfg, jobs=1, progress=False, limit=12, segment_size=4)
    a, b = content(out), content(tmp_path / "clean.h5")
    a["attrs"].pop("command"), b["attrs"].pop("command")
    assert_same(a, b)


def test_a_refused_resume_says_what_differs_and_which_command_to_rerun(catalogue, tmp_path, monkeypatch):
    # it said "(differs in: config)" and "rerun that command" without naming either
    import dexed_data.fingerprint as fingerprint
    from dexed_data.errors import RenderError
    from dexed_data.render import RenderConfig, render_dataset

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(fingerprint, "duplicate_of", interrupted)
        with pytest.raises(KeyboardInterrupt):
            render_dataset(catalogue, tmp_path / "d.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1),
                           jobs=1, progress=False, limit=4)
    with pytest.raises(RenderError) as err:
        render_dataset(catalogue, tmp_path / "d.h5", RenderConfig(notes=((60, 85),), hold=0.3, release=0.1),
                       jobs=1, progress=False, limit=4)
    text = str(err.value)
    assert "config.hold (0.2 there, 0.3 here)" in text
    assert f"rerun that command (dexed-data render {catalogue} --engine dexed --notes 60:85" in text
    assert "--hold 0.2 " in text
    assert f" -o {tmp_path / 'd.h5'}) to finish it" in text          # the command as it can be pasted
    # the same command whose catalogue content changed (or an earlier version's job): not "rerun that command"
    job = tmp_path / "d.h5.parts" / "job.json"
    record = json.loads(job.read_text())
    job.write_text(json.dumps({**record, "selection_hash": "0123456789abcdef"}))
    with pytest.raises(RenderError) as err:
        render_dataset(catalogue, tmp_path / "d.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1),
                       jobs=1, progress=False, limit=4)
    assert "unfinished render of this same command that cannot be resumed" in str(err.value)
    assert "rerun that command" not in str(err.value) and "delete" in str(err.value)
    job.write_text(json.dumps(record))
    render_dataset(catalogue, tmp_path / "d.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1),
                   jobs=1, progress=False, limit=4)
    with h5py.File(tmp_path / "d.h5", "r+") as f:
        f.attrs["selection_hash"] = "0123456789abcdef"
    with pytest.raises(RenderError, match="rendered by this command from other catalogue content"):
        render_dataset(catalogue, tmp_path / "d.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1),
                       jobs=1, progress=False, limit=4)
    monkeypatch.chdir(tmp_path)   # a plug-in path is the same job however it is spelled
    a = RenderConfig(engine="dawdreamer", plugin="p/Dexed.vst3").job_key()["plugin"]
    assert a == RenderConfig(engine="dawdreamer", plugin=str(tmp_path / "p" / "Dexed.vst3")).job_key()["plugin"]
    with pytest.raises(RenderError, match="--engine foo: unknown engine"):
        RenderConfig(engine="foo", plugin="x")


@contextlib.contextmanager
def command_signal_handlers():
    """The command line's signal handlers (dexed_data.console), installed for the block, then the test's back."""
    from dexed_data import console

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    console._installed.clear()
    for s in before:
        signal.signal(s, signal.SIG_DFL)
    console._install()
    try:
        yield
    finally:
        console._installed.clear()
        for s, h in before.items():
            signal.signal(s, h)


def test_a_signal_once_the_output_is_published_changes_nothing(catalogue, tmp_path, monkeypatch):
    # Ctrl-C or SIGTERM in the second after render published its file said "interrupted ... run the
    # same command again" (exit 130 / 143) and left OUT.parts half removed beside the finished OUT
    import dexed_data.outputs as outputs
    from dexed_data.render import RenderConfig, render_dataset

    real = outputs.publish

    def publish_then_signal(source, target, *args, **kwargs):
        real(source, target, *args, **kwargs)
        if Path(target).name == "d.h5":          # the dataset itself (not job.json)
            os.kill(os.getpid(), signal.SIGINT)  # lands before the work folder is removed
            time.sleep(0.05)

    monkeypatch.setattr(outputs, "publish", publish_then_signal)
    with command_signal_handlers():
        summary = render_dataset(catalogue, tmp_path / "d.h5", RenderConfig(notes=((60, 85),), hold=0.2, release=0.1),
                                 jobs=1, progress=False, limit=4)
    assert summary.ok == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_a_signal_once_a_merge_is_published_changes_nothing(catalogue, tmp_path, monkeypatch):
    # audit A7: merge said "interrupted ... run the same command again" (exit 130) after its output was
    # whole, and the same command was then refused ("already exists")
    import dexed_data.outputs as outputs
    from dexed_data.merge import merge
    from dexed_data.render import RenderConfig, Shard, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    shards = [tmp_path / f"s{k}.h5" for k in range(2)]
    for k, path in enumerate(shards):
        render_dataset(catalogue, path, cfg, jobs=1, progress=False, limit=4, shard=Shard(k, 2), segment_size=2)
    real = outputs.publish

    def publish_then_signal(source, target, *args, **kwargs):
        real(source, target, *args, **kwargs)
        if Path(target).name == "m.h5":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    monkeypatch.setattr(outputs, "publish", publish_then_signal)
    with command_signal_handlers():
        assert merge(shards, tmp_path / "m.h5") == tmp_path / "m.h5"
    with h5py.File(tmp_path / "m.h5", "r") as f:
        assert len(f["status"]) == 4


def test_a_disk_too_full_to_finish_or_to_lock_gives_one_line_and_the_rerun_finishes(catalogue, tmp_path, monkeypatch):
    # HDF5 meeting a full disk while finishing could not close the file: 110 lines of errors and a
    # segmentation fault; a full disk when the lock file was written gave a traceback
    import errno
    import shutil as shutil_module

    import dexed_data.writer as writer
    from dexed_data.errors import DexedDataError, RenderError
    from dexed_data.render import JobLock, RenderConfig, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    real = shutil_module.disk_usage
    with monkeypatch.context() as m:
        calls = []      # room to create the file (the first check), too little to finish it

        def filling(path):
            calls.append(path)
            return real(path)._replace(free=200_000 if len(calls) > 1 else real(path).free)

        m.setattr(writer.shutil, "disk_usage", filling)
        with pytest.raises(DexedDataError, match=r"cannot finish .*writing the small arrays may need up to 0\.\d MB \(a safe "
                                                 r"margin over its size\) and only 0\.2 MB are free on that disk; free space "
                                                 "and rerun"):
            render_dataset(catalogue, tmp_path / "d.h5", cfg, jobs=1, progress=False, limit=4)
    assert not (tmp_path / "d.h5").exists()
    summary = render_dataset(catalogue, tmp_path / "d.h5", cfg, jobs=1, progress=False, limit=4)
    assert summary.rendered == 0 and summary.ok == 4          # the segments were kept

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", full)
        with pytest.raises(RenderError, match=r"cannot write the lock file .*No space left on device; free space"):
            JobLock(tmp_path / "x.h5").__enter__()
    assert not list(tmp_path.glob(".x.h5*"))


def test_workers_shut_down_from_outside_record_no_failed_preset(catalogue, tmp_path):
    """A Dask worker that closes (preempted, or a --cluster local:N client interrupted) shuts its render
    workers down from another thread: the job stops as interrupted, never finishing its segments with
    'failed' presets that a resume would keep for good; the rerun equals an uninterrupted render."""
    import threading

    from dexed_data import render
    from dexed_data.render import RenderConfig, WorkersStopped, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    whole = tmp_path / "whole.h5"
    render_dataset(catalogue, whole, cfg, jobs=1, progress=False, limit=24, segment_size=2)
    out = tmp_path / "out.h5"
    parts = Path(str(out) + ".parts")
    stopper = threading.Thread(target=lambda: (_wait_for(lambda: len(list(parts.glob("seg-*.h5"))) >= 2),
                                               render.shutdown_workers()))
    stopper.start()
    with pytest.raises(WorkersStopped, match="rerun the same command to resume"):
        render_dataset(catalogue, out, cfg, jobs=1, progress=False, limit=24, segment_size=2)
    stopper.join()
    assert not out.exists() and len(list(parts.glob("seg-*.h5"))) < 12
    render_dataset(catalogue, out, cfg, jobs=1, progress=False, limit=24, segment_size=2)
    assert_same(content(out), content(whole))


def test_a_stopped_pools_manager_thread_failing_later_does_not_refuse_the_next_job(monkeypatch):
    """CI, once: after workers were shut down from another thread, the old pool's loky manager thread
    ended with its own KeyError a moment later, and the next job (a new pool) refused to start, blaming
    the system's limits. Only the job's own pool's manager thread counts."""
    import threading
    from concurrent.futures import Future
    from types import SimpleNamespace

    from dexed_data import render
    from dexed_data.errors import RenderError

    old, new = threading.Thread(target=int), threading.Thread(target=int)
    monkeypatch.setattr(render, "_MANAGER_FAILED", [(old, KeyError(74))])
    late = Future()
    threading.Timer(1.5, late.set_result, ("probed",)).start()
    assert render._first_result(late, 1, SimpleNamespace(_executor_manager_thread=new)) == "probed"
    render._MANAGER_FAILED.append((new, RuntimeError("can't start new thread")))
    with pytest.raises(RenderError, match=r"^cannot run 1 worker process\(es\) \(RuntimeError: can't start new "
                                          r"thread\); the system's limits may be too low"):
        render._first_result(Future(), 1, SimpleNamespace(_executor_manager_thread=new))
    # the attribute is loky's own: the executor a job gets has its manager thread there
    assert isinstance(render._new_executor(1)._executor_manager_thread, threading.Thread)


def _wait_for(condition, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)


def test_the_recorded_command_renders_the_file_again_with_a_space_in_its_path(catalogue, tmp_path):
    """FORMAT.md: the `command` attribute plus -o FILE renders the file again (it was not quoted)."""
    import shlex
    import shutil

    spaced = tmp_path / "my presets" / "cat alog.h5"
    spaced.parent.mkdir()
    shutil.copy(catalogue, spaced)
    first = tmp_path / "a.h5"
    res = subprocess.run(render_cmd(spaced, first, "--limit", "3"), env=env(), capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr
    with h5py.File(first, "r") as f:
        command = f.attrs["command"]
    words = shlex.split(command)
    assert words[:3] == ["dexed-data", "render", str(spaced)]
    again = subprocess.run([sys.executable, "-m", "dexed_data", *words[1:], "-o", str(tmp_path / "b.h5"),
                            "--no-progress"], env=env(), capture_output=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert_same(content(first), content(tmp_path / "b.h5"))


def test_a_finished_output_is_this_command_whatever_its_paths_spelling(catalogue, tmp_path, monkeypatch):
    # audit Y5: a resume took `--plugin p/Dexed.vst3/` (tab completion's slash) or `./p/…` for the same
    # job, yet a rerun of the finished file with it was "not made by this command"
    from dexed_data.catalogue import read_catalogue
    from dexed_data.errors import RenderError
    from dexed_data.render import RenderConfig, _same_command, render_dataset

    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(read_catalogue(catalogue).ids[:3]) + "\n")
    out = tmp_path / "d.h5"
    render_dataset(catalogue, out, cfg, jobs=1, progress=False, ids_file=ids)
    monkeypatch.chdir(tmp_path)
    other = Path(os.path.relpath(catalogue, tmp_path))                 # the catalogue spelled otherwise too
    again = render_dataset(other, out, cfg, jobs=1, progress=False, ids_file=Path("ids.txt"))
    assert again.rendered == 0 and again.ok == 3
    with pytest.raises(RenderError, match="not made by this command"):   # another selection is still another job
        render_dataset(catalogue, out, cfg, jobs=1, progress=False, limit=3)
    a = "dexed-data render cat.h5 --engine dawdreamer --plugin p/Dexed.vst3 --notes 60:85"
    assert _same_command(a, a.replace("p/Dexed.vst3", "./p/Dexed.vst3/"))
    assert _same_command(a, a.replace("p/Dexed.vst3", str(tmp_path / "p" / "Dexed.vst3")))
    assert not _same_command(a, a.replace("p/Dexed.vst3", "q/Dexed.vst3"))
    assert not _same_command(a, a.replace("60:85", "60:86")) and not _same_command(None, a)
    assert not _same_command(a, a.replace("cat.h5", "p/Dexed.vst3"))   # a path only where the command has one
