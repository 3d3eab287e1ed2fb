"""Rendering on a real Dask cluster (scheduler + 2 worker processes on loopback): a worker killed
mid-shard, a client killed mid-job, and the merged file equal to a ``--jobs 1`` run."""

from __future__ import annotations

import contextlib
import json

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

distributed = pytest.importorskip("distributed",
                                  reason='the cluster extra is not installed (pip install -e ".[cluster]")')
psutil = pytest.importorskip("psutil")

from dexed_data import cluster  # noqa: E402
from dexed_data.importer import import_sysex  # noqa: E402
from dexed_data.cluster import ClusterPlan, render_on_cluster  # noqa: E402
from dexed_data.errors import DexedDataError, RenderError  # noqa: E402
from dexed_data.render import RenderConfig, render_dataset  # noqa: E402

CFG = RenderConfig(notes=((40, 85), (60, 127)), hold=0.3, release=0.2, store=("mel",), compression="lzf")
N = 36



#: A test cluster's scheduler: no dashboard, its HTTP server on a free port (two clusters of one
#: session both took 8787: "Port 8787 is already in use").
NO_HTTP_PORT = {"dashboard": False, "dashboard_address": ":0"}

@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, presets_dir) -> Path:
    path = tmp_path_factory.mktemp("cat") / "presets.h5"
    import_sysex([presets_dir], path)
    return path


@pytest.fixture(scope="module")
def reference(catalogue, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "jobs1.h5"
    render_dataset(catalogue, out, CFG, jobs=1, progress=False, limit=N)
    return out


@pytest.fixture(scope="module")
def scheduler():
    """A scheduler and 2 single-threaded worker processes (each under a nanny that restarts it),
    started as docs/SCALING.md says (``DASK_DISTRIBUTED__WORKER__DAEMON=False``: not daemons).

    A dead worker's shard lock is freed after 2 s here instead of 30 s.
    """
    import dask

    with dask.config.set({"distributed.scheduler.locks.lease-timeout": "2s",
                          "distributed.scheduler.locks.lease-validation-interval": "0.5s",
                          "distributed.worker.daemon": False}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      host="127.0.0.1", scheduler_kwargs=NO_HTTP_PORT) as lc:
            yield lc.scheduler_address


def assert_same_data(a: Path, b: Path) -> None:
    """Every dataset and root attribute of ``a`` equals ``b``'s (the shard bookkeeping aside)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names_a, names_b = [], []
        fa.visit(lambda n: names_a.append(n) if isinstance(fa[n], h5py.Dataset) else None)
        fb.visit(lambda n: names_b.append(n) if isinstance(fb[n], h5py.Dataset) else None)
        assert sorted(names_a) == sorted(names_b)
        for n in names_a:
            x, y = fa[n][...], fb[n][...]
            assert x.dtype == y.dtype and x.shape == y.shape, n
            if x.dtype.kind == "O":                  # variable-length strings
                assert x.tolist() == y.tolist(), n
            else:
                assert x.tobytes() == y.tobytes(), n     # byte for byte, NaN levels included
        assert set(fa.attrs) == set(fb.attrs)
        for k in fa.attrs:
            x, y = np.asarray(fa.attrs[k]), np.asarray(fb.attrs[k])
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), k


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and its children, as when its machine goes away."""
    proc = psutil.Process(pid)
    for p in [*proc.children(recursive=True), proc]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def test_plan_depends_on_the_selection_only():
    assert ClusterPlan.for_selection(36) == ClusterPlan(36, 2, 18)
    big = ClusterPlan.for_selection(1_000_000)
    assert big.segment_size == 64 and big.shards == 512
    assert sum(big.shard_presets(k) for k in range(big.shards)) == 1_000_000
    assert ClusterPlan.for_selection(5).segment_size == 1 and ClusterPlan.for_selection(36, shards=4).shards == 4


def test_worker_killed_mid_shard_gives_the_jobs_1_file(catalogue, reference, scheduler, tmp_path):
    work = tmp_path / "shared"
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        with distributed.Client(scheduler, timeout="20s") as c:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = [w for w, keys in c.processing().items() if keys]
                if busy and list(work.glob("shard-*.h5")):   # a shard finished, others are running
                    pid = c.run(os.getpid, workers=[busy[0]])[busy[0]]
                    _kill_tree(pid)
                    killed.append(pid)
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    summary = render_on_cluster(catalogue, tmp_path / "cluster.h5", CFG, cluster=scheduler, work_dir=work,
                                limit=N, progress=False)
    killer.join()
    assert killed, "no worker was killed: the job ended before any shard finished?"
    # the killed shard resumes from its finished segments: at most its own presets come from the first try
    assert (summary.presets, summary.ok) == (N, N) and N - 2 <= summary.rendered <= N
    assert_same_data(tmp_path / "cluster.h5", reference)
    assert not work.exists()  # shard files and job record are removed after the merge


def test_client_killed_mid_job_resumes_without_redoing_finished_shards(catalogue, reference, scheduler, tmp_path,
                                                                      monkeypatch):
    work, out = tmp_path / "shared", tmp_path / "cluster.h5"
    cmd = [sys.executable, "-m", "dexed_data", "render", str(catalogue), "-o", str(out), "--notes", "40:85,60:127",
           "--hold", "0.3", "--release", "0.2", "--store", "mel", "--compression", "lzf", "--limit", str(N),
           "--cluster", scheduler, "--work-dir", str(work), "--no-progress"]
    client = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while len(list(work.glob("shard-*.h5"))) < 4 and client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    client.kill()
    _, err = client.communicate()
    assert client.returncode == -signal.SIGKILL, err.decode()[-2000:]
    time.sleep(0.5)   # the scheduler notices the lost client; tasks already running finish on their own
    done = {p: p.stat().st_mtime_ns for p in work.glob("shard-*.h5")}
    assert 4 <= len(done) < ClusterPlan.for_selection(N).shards

    at_merge = {}
    real_merge = cluster.merge

    def merge_spy(paths, out_path):
        at_merge.update({p: p.stat().st_mtime_ns for p in done})
        return real_merge(paths, out_path)

    monkeypatch.setattr(cluster, "merge", merge_spy)
    summary = render_on_cluster(catalogue, out, CFG, cluster=scheduler, work_dir=work, limit=N, progress=False)
    assert at_merge == done                        # the finished shard files were not rewritten
    assert summary.rendered <= N - 2 * len(done)   # 2 presets per shard: finished shards were not redone
    assert_same_data(out, reference)
    again = render_on_cluster(catalogue, out, CFG, cluster=scheduler, work_dir=work, limit=N, progress=False)
    assert again.rendered == 0


def test_work_dir_of_another_job_is_refused(catalogue, tmp_path):
    work = tmp_path / "shared"
    work.mkdir()
    (work / "job.json").write_text('{"format": "dexed-cluster-job", "selection_hash": "other"}')
    with pytest.raises(RenderError, match="another render job"):
        render_on_cluster(catalogue, tmp_path / "x.h5", CFG, cluster="local:1", work_dir=work, limit=N)
    with pytest.raises(RenderError, match="local:N"):
        render_on_cluster(catalogue, tmp_path / "x.h5", CFG, cluster="local:zero", work_dir=tmp_path / "w2", limit=N)


def test_a_second_job_on_one_output_stops_at_once(catalogue, tmp_path):
    """As a local render: a cluster client takes the output's job lock (two clients on one -o both
    rendered, then one failed at the end naming a --force render has not)."""
    from dexed_data.render import JobLock

    out = tmp_path / "x.h5"
    with JobLock(out):
        with pytest.raises(RenderError, match="another render job .* is writing x.h5"):
            render_on_cluster(catalogue, out, CFG, cluster="local:1", work_dir=None, limit=N)
    assert not (tmp_path / "x.h5.shards").exists() and not out.exists()


def test_the_same_command_after_its_catalogue_changed_is_told_to_delete_the_shards(catalogue, tmp_path):
    # audit Y: it was told to rerun "that command" (itself) or choose a --work-dir it never gave
    import json

    from dexed_data.cluster import ClusterPlan, _claim_work_dir
    from dexed_data.render import SEGMENT_SIZE, plan_job

    out, work = tmp_path / "f.h5", tmp_path / "f.h5.shards"
    job = plan_job(catalogue, CFG, None, N, None, SEGMENT_SIZE)
    work.mkdir()
    _claim_work_dir(work, job, ClusterPlan.for_selection(job.selection_size), out, "local:1")
    record = json.loads((work / "job.json").read_text())
    assert record["output"] == str(out)
    (work / "job.json").write_text(json.dumps({**record, "selection_hash": "before the catalogue changed"}))
    with pytest.raises(RenderError) as err:
        render_on_cluster(catalogue, out, CFG, cluster="local:1", work_dir=None, limit=N)
    assert "this same command that cannot be resumed" in str(err.value)
    assert f"delete {work} to render again" in str(err.value) and "rerun that command" not in str(err.value)
    # another job's folder names the command that finishes it, with its output and folder (audit Z14:
    # the recorded command had no -o, and with one it rendered locally, never reading the folder)
    (work / "job.json").write_text(json.dumps({**record, "command": "dexed-data render p.h5 --hold 2"}))
    with pytest.raises(RenderError) as err:
        render_on_cluster(catalogue, tmp_path / "g.h5", CFG, cluster="local:1", work_dir=work, limit=N)
    assert (f"rerun that command (dexed-data render p.h5 --hold 2 -o {out} --cluster local:1 --work-dir {work})"
            in str(err.value)), str(err.value)
    assert "output" not in str(err.value).split("differs in:")[1]
    # the same job resumed into another output is the same job (and an earlier version's job.json has no output)
    del record["output"]
    (work / "job.json").write_text(json.dumps(record))
    _claim_work_dir(work, job, ClusterPlan.for_selection(job.selection_size), tmp_path / "h.h5", "local:1")


def test_a_second_job_sharing_a_work_dir_stops_at_once(catalogue, tmp_path):
    """Two jobs on one --work-dir (other outputs) each deleted the shards after merging them: the
    other's merge then met files gone, a traceback after its output was published (audit Y)."""
    from dexed_data.render import JobLock

    work = tmp_path / "shared"
    work.mkdir()
    with JobLock(work / "job.json", "cluster render job"):   # the holder names its own kind
        with pytest.raises(RenderError, match=r"another cluster render job .* is writing job.json in .*shared; .*, or "
                                              r"give this one another --work-dir"):
            render_on_cluster(catalogue, tmp_path / "y.h5", CFG, cluster="local:1", work_dir=work, limit=N)
    assert list(work.iterdir()) == [] and not (tmp_path / "y.h5").exists()


def test_bad_cluster_outputs_and_sizes_are_refused_before_any_work(catalogue, tmp_path):
    # as a local render refuses them: output under a file, output = input, an uncreatable --work-dir,
    # and local:N beyond 4 × the cores (local:10**12 grew to 24 GB before the OOM killer ended it)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, work, why in ((afile / "x.h5", None, "not a folder"), (catalogue, None, "also an input"),
                           (tmp_path / "x.h5", afile, "--work-dir")):
        with pytest.raises(DexedDataError, match=why):
            render_on_cluster(catalogue, out, CFG, cluster="local:1", work_dir=work, limit=N)
    with pytest.raises(RenderError, match="from 1 to"):
        render_on_cluster(catalogue, tmp_path / "x.h5", CFG, cluster="local:1000000000000", work_dir=None, limit=N)
    assert not (tmp_path / "x.h5.shards").exists() and not (tmp_path / "x.h5").exists()


def test_a_shard_that_fails_on_our_error_is_said_once_not_retried(monkeypatch):
    # an error of ours (a full disk, a bad catalogue) comes back from the worker as a value: no retry
    # on every worker, no worker traceback in the log
    from dexed_data.errors import OutputError

    def full(*args, **kwargs):
        raise OutputError("no space left on the shard's disk")

    monkeypatch.setattr(cluster.render, "render_dataset", full)
    monkeypatch.setattr(distributed, "Lock", lambda name: __import__("contextlib").nullcontext())
    failed = cluster._render_shard(0, 2, "/nowhere/s.h5", "c.h5", CFG, None, None, 64, "cmd")
    assert isinstance(failed, cluster.ShardFailed) and "no space left" in failed.message


def test_a_lost_scheduler_is_said_as_such_in_one_line(monkeypatch, tmp_path):
    # audit Y: "shard 4/16 failed on the cluster (FutureCancelledError: …scheduler-connection-lost.\n
    # Client lost the connection…)": a shard blamed, Dask's line break inside the one error line
    class Lost:
        def result(self):
            raise RuntimeError("dexed-render-x-shard-4-of-16 cancelled for reason: scheduler-connection-lost.\n"
                               "Client lost the connection to the scheduler.")

    class Client:
        status = "closed"

        def register_plugin(self, *a, **k):
            pass

        def submit(self, *a, **k):
            return Lost()

        def cancel(self, futures):
            pass

        def close(self, timeout=None):
            pass

    monkeypatch.setattr(cluster, "_connect", lambda address: (Client(), None))
    monkeypatch.setattr(distributed, "as_completed", lambda futures: list(futures))
    plan = cluster.ClusterPlan.for_selection(8, 2)
    paths = [tmp_path / f"s{k}.h5" for k in range(2)]
    with pytest.raises(RenderError) as err:
        cluster._run_shards("tcp://10.0.0.1:8786", plan, [0, 1], paths, "h", False, ())
    message = str(err.value)
    assert message.startswith("lost the connection to the Dask scheduler at tcp://10.0.0.1:8786") and "\n" not in message
    assert "shard" not in message.split(";")[0] and "rerun the command to resume" in message


def test_without_dask_the_error_says_how_to_install(catalogue, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed → ImportError
    with pytest.raises(RenderError, match=r'pip install -e "\.\[cluster\]"'):
        render_on_cluster(catalogue, tmp_path / "x.h5", CFG, cluster="local:2", work_dir=tmp_path / "w", limit=N)
    from typer.testing import CliRunner

    from dexed_data.cli import app

    res = CliRunner().invoke(app, ["render", str(catalogue), "-o", str(tmp_path / "y.h5"), "--cluster", "local:2",
                                   "--limit", "4", "--no-progress"])
    assert res.exit_code == 2 and 'pip install -e ".[cluster]"' in res.output, res.output


def test_jobs_with_cluster_is_refused_not_ignored(catalogue, tmp_path):
    from typer.testing import CliRunner

    from dexed_data.cli import app

    res = CliRunner().invoke(app, ["render", str(catalogue), "-o", str(tmp_path / "y.h5"), "--cluster", "local:2",
                                   "--jobs", "4", "--work-dir", str(tmp_path / "w"), "--no-progress"])
    assert res.exit_code == 2 and "--jobs is for one machine" in res.output, res.output
    assert not (tmp_path / "y.h5").exists() and not (tmp_path / "w").exists()


def test_daemon_workers_get_the_instruction_not_a_traceback(catalogue, tmp_path):
    """Dask starts workers as daemons by default; they cannot start the render's worker process,
    and the job says how to start them instead."""
    import dask

    with dask.config.set({"distributed.worker.daemon": True}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                     host="127.0.0.1", scheduler_kwargs=NO_HTTP_PORT) as lc:
        with pytest.raises(RenderError, match="DASK_DISTRIBUTED__WORKER__DAEMON=False"):
            render_on_cluster(catalogue, tmp_path / "out.h5", CFG, cluster=lc.scheduler_address,
                              work_dir=tmp_path / "shared", limit=4, progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_a_relative_catalogue_path_gives_the_jobs_1_file(catalogue, scheduler, tmp_path, monkeypatch):
    # the workers get the absolute path; the file records the path as the user gave it, like --jobs 1
    monkeypatch.chdir(catalogue.parent)
    render_dataset(Path(catalogue.name), tmp_path / "local.h5", CFG, jobs=1, progress=False, limit=8)
    render_on_cluster(Path(catalogue.name), tmp_path / "cluster.h5", CFG, cluster=scheduler,
                      work_dir=tmp_path / "work", limit=8, progress=False)
    with h5py.File(tmp_path / "cluster.h5", "r") as f:
        assert f.attrs["command"].startswith(f"dexed-data render {catalogue.name} ")
    assert_same_data(tmp_path / "cluster.h5", tmp_path / "local.h5")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP", "SIGINT twice"])
def test_a_signal_to_the_group_of_a_local_cluster_render_gives_one_line(catalogue, tmp_path, signame):
    # the local cluster's worker processes took the group's signal too and printed 50-120 lines of
    # tracebacks and resource-tracker warnings after the one line (Python 3.11's resource tracker,
    # started from Dask's thread, unblocked SIGINT and SIGTERM there for the workers it then started)
    cmd = [sys.executable, "-m", "dexed_data", "render", str(catalogue), "-o", str(tmp_path / "d.h5"), "--notes",
           "40:85,60:127", "--hold", "0.5", "--release", "0.2", "--limit", str(N), "--cluster", "local:2",
           "--work-dir", str(tmp_path / "shards"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((tmp_path / "shards").glob("*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)                                   # the workers are rendering
    assert proc.poll() is None, "the render ended before it could be signalled"
    signum = getattr(signal, signame.split()[0])
    os.killpg(proc.pid, signum)
    if signame.endswith("twice"):   # a double Ctrl-C (or `timeout -s INT`) while the cluster shuts down (audit Y)
        time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    # a second signal during the tidy-up after the first ends the process (dexed_data.console): killed by it
    assert proc.returncode == 128 + signum or (signame.endswith("twice") and proc.returncode == -signum), err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_shards_that_cannot_be_removed_after_the_merge_are_a_warning(catalogue, tmp_path, monkeypatch, capsys):
    # audit Z14: an immutable shard gave a traceback and exit 1 after the output was published whole
    import errno
    from pathlib import Path

    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name.startswith("shard-"):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    out, work = tmp_path / "x.h5", tmp_path / "w"
    summary = render_on_cluster(catalogue, out, CFG, cluster="local:1", work_dir=work, limit=4, progress=False)
    assert summary.rendered == 4 and out.exists()
    assert f"warning: cannot remove the shard files in {work} (Operation not permitted); {out} is whole" \
        in capsys.readouterr().err


def test_a_local_cluster_worker_killed_mid_job_is_restarted_and_the_job_ends(catalogue, reference, tmp_path):
    """Audit A7: the nanny restarted a killed local:N worker as a daemon, which cannot start the render's
    process, so one dead worker failed the whole job. With one worker, every shard after the kill runs
    on the restarted one."""
    before = {p.pid for p in psutil.Process().children()}
    work = tmp_path / "work"
    killed: list[int] = []

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list(work.glob("shard-*.h5")):
                workers = [p for p in psutil.Process().children() if p.pid not in before
                           and "spawn_main" in " ".join(p.cmdline())]
                if workers:
                    _kill_tree(workers[0].pid)
                    killed.append(workers[0].pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    summary = render_on_cluster(catalogue, tmp_path / "cluster.h5", CFG, cluster="local:1", work_dir=work,
                                limit=N, progress=False)
    killer.join()
    assert killed, "no worker was killed: the job ended before any shard finished?"
    assert (summary.presets, summary.ok) == (N, N)
    assert_same_data(tmp_path / "cluster.h5", reference)


def test_two_jobs_of_one_selection_share_a_scheduler(catalogue, reference, scheduler, tmp_path):
    """Audit A7: task keys came from the selection and the shard number only, so a second job of the same
    presets with other settings, on the same scheduler at the same time, had its tasks taken for the
    first's and failed ("no such shard file")."""
    base = [sys.executable, "-m", "dexed_data", "render", str(catalogue), "--limit", str(N), "--hold", "0.3",
            "--release", "0.2", "--store", "mel", "--compression", "lzf", "--cluster", scheduler, "--no-progress"]
    jobs = [subprocess.Popen([*base, "-o", str(tmp_path / "a.h5"), "--notes", "40:85,60:127"], stderr=subprocess.PIPE,
                             text=True),
            subprocess.Popen([*base, "-o", str(tmp_path / "b.h5"), "--notes", "60:100"], stderr=subprocess.PIPE, text=True)]
    for proc in jobs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert_same_data(tmp_path / "a.h5", reference)
    other = RenderConfig(notes=((60, 100),), hold=0.3, release=0.2, store=("mel",), compression="lzf")
    render_dataset(catalogue, tmp_path / "b1.h5", other, jobs=1, progress=False, limit=N)
    with h5py.File(tmp_path / "b.h5", "r") as b, h5py.File(tmp_path / "b1.h5", "r") as b1:
        assert b["mel"][...].tobytes() == b1["mel"][...].tobytes()
    assert cluster.shard_key("h", tmp_path / "a" / "s.h5", 0, 2) != cluster.shard_key("h", tmp_path / "b" / "s.h5", 0, 2)


def test_shards_left_by_a_stop_after_the_merge_are_removed_by_the_rerun(catalogue, reference, tmp_path, monkeypatch):
    """Audit A7: a cluster render stopped between publishing OUT and removing its shards left them for good;
    the rerun said OUT was whole and kept them. Another job's shard folder is never touched."""
    work = tmp_path / "work"

    def stop(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cluster, "_remove_shards", stop)
    with pytest.raises(KeyboardInterrupt):
        render_on_cluster(catalogue, tmp_path / "c.h5", CFG, cluster="local:1", work_dir=work, limit=N, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "c.h5").exists() and list(work.glob("shard-*.h5")) and (work / "job.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "job.json").write_text((work / "job.json").read_text().replace('"selection_size": 36', '"selection_size": 5'))
    render_on_cluster(catalogue, tmp_path / "c.h5", CFG, cluster="local:1", work_dir=other, limit=N, progress=False)
    assert (other / "job.json").exists()
    # R10: the same presets and settings rendered into another output, unfinished (one shard missing), in
    # its own folder: a rerun of this finished job with that --work-dir must leave it to resume
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shards = sorted(work.glob("shard-*.h5"))
    for p in shards[1:]:
        (unfinished / p.name).write_bytes(p.read_bytes())
    (unfinished / "job.json").write_text((work / "job.json").read_text())
    render_on_cluster(catalogue, tmp_path / "c.h5", CFG, cluster="local:1", work_dir=unfinished, limit=N,
                      progress=False)
    assert sorted(p.name for p in unfinished.iterdir()) == sorted(["job.json", *[p.name for p in shards[1:]]])
    record = json.loads((work / "job.json").read_text())
    (unfinished / shards[0].name).write_bytes(shards[0].read_bytes())
    (unfinished / "job.json").write_text(json.dumps({**record, "output": str(tmp_path / "elsewhere.h5")}))
    render_on_cluster(catalogue, tmp_path / "c.h5", CFG, cluster="local:1", work_dir=unfinished, limit=N,
                      progress=False)
    assert len(list(unfinished.iterdir())) == len(shards) + 1
    summary = render_on_cluster(catalogue, tmp_path / "c.h5", CFG, cluster="local:1", work_dir=work, limit=N,
                                progress=False)
    assert summary.ok == N and not work.exists()
    assert_same_data(tmp_path / "c.h5", reference)


def test_the_shard_folders_lock_is_inside_it(catalogue, reference, tmp_path, monkeypatch):
    """Audit A7: the lock went beside --work-dir, so a folder of one's own in a folder one cannot write
    (/scratch/$USER) was refused ("cannot create the lock file …; choose another output")."""
    from dexed_data import render

    held: list[Path] = []
    real = render.JobLock.__enter__

    def enter(self):
        held.append(self.path)
        return real(self)

    monkeypatch.setattr(render.JobLock, "__enter__", enter)
    work = tmp_path / "scratch" / "user"
    render_on_cluster(catalogue, tmp_path / "c.h5", CFG, cluster="local:1", work_dir=work, limit=N, progress=False)
    assert work / ".job.json.lock" in held and not work.exists()
    assert not [p for p in held if p.parent == work.parent]
    assert_same_data(tmp_path / "c.h5", reference)
    with pytest.raises(RenderError, match="choose another --work-dir"):
        render.JobLock(tmp_path / "none" / "job.json", where="--work-dir").__enter__()
