"""Render on a Dask cluster: the job split into shards, one task per shard, merged by the client.

``presets.h5`` ──► plan (shards of whole segments, fixed by the selection alone) ──► one Dask task
per shard: :func:`~dexed_data.render.render_dataset` with ``shard=K/N, jobs=1`` on a worker, into
``WORK_DIR/shard-K-of-N.h5`` ──► :func:`~dexed_data.merge.merge` by the client ──► ``OUT``.

``WORK_DIR`` must be storage every worker and the client see under the same path (NFS, Lustre,
a shared home); so must the catalogue. The plan depends only on the selection (never on how many
workers are up), so a client restarted with the same command finds the same shard files.

Faults are handled at two levels, with nothing home-made in between:

- a worker that dies (node lost, OOM-killed) loses its task; the scheduler gives the shard to
  another worker (up to ``distributed.scheduler.allowed-failures`` times), which resumes the
  shard from its finished segments (``shard-K-of-N.h5.parts``), exactly as a local rerun would;
- a client that stops (Ctrl-C, lost SSH session) loses nothing finished: rerunning the command
  skips every complete shard file and resumes the others.

The merged file's data equals a single-machine run of the same command, byte for byte: shards
copy the workers' encoded chunks and the merge copies them again untouched.

Example::

    >>> from dexed_data.cluster import render_on_cluster
    >>> from dexed_data.render import RenderConfig
    >>> summary = render_on_cluster("presets.h5", "dataset.h5", RenderConfig(), cluster="local:4",
    ...                             work_dir="/shared/scratch/dx7")               # doctest: +SKIP
    >>> summary.ok                                                                # doctest: +SKIP
    64
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import render
from .merge import merge
from .errors import DexedDataError, RenderError

#: A job is cut into at least this many segments when it has enough presets, so that a few dozen
#: presets still spread over a few workers; big jobs keep the usual 64-preset segments.
MIN_SEGMENTS = 16
#: At most this many shard files: the merge opens them all at once, and each task re-reads the
#: catalogue. 512 shards keep hundreds of workers busy with tasks of minutes, not seconds.
MAX_SHARDS = 512
INSTALL_HINT = 'install the cluster extra: pip install -e ".[cluster]" (or pip install "dask[distributed]")'


@dataclass(frozen=True)
class ClusterPlan:
    """How a selection of ``presets`` presets is cut: ``shards`` tasks of whole ``segment_size`` segments.

    Shard ``k`` holds the segments ``s`` with ``s % shards == k`` (see :class:`~dexed_data.render.Shard`).

    Example::

        >>> p = ClusterPlan.for_selection(40)
        >>> p.segment_size, p.shards, [p.shard_presets(k) for k in range(p.shards)][:3]
        (2, 20, [2, 2, 2])
    """

    presets: int
    segment_size: int
    shards: int

    @classmethod
    def for_selection(cls, presets: int, shards: int | None = None) -> "ClusterPlan":
        """The plan for ``presets`` selected presets; ``shards`` caps the count (default :data:`MAX_SHARDS`)."""
        if presets < 1:
            raise RenderError("nothing to render (empty selection)")
        if shards is not None and shards < 1:
            raise RenderError(f"shards={shards}: must be ≥ 1")
        segment_size = max(1, min(render.SEGMENT_SIZE, presets // MIN_SEGMENTS))
        segments = -(-presets // segment_size)
        return cls(presets, segment_size, min(segments, shards or MAX_SHARDS))

    def shard_presets(self, k: int) -> int:
        """Presets in shard ``k``."""
        bounds = render.segment_bounds(self.presets, self.segment_size)
        return sum(b - a for a, b in bounds[k::self.shards])

    def shard_path(self, work_dir, k: int) -> Path:
        """Where shard ``k`` is written (a complete dataset shard file; its ``.parts`` while in progress)."""
        return Path(work_dir) / f"shard-{k:04d}-of-{self.shards:04d}.h5"


def render_on_cluster(catalogue_path, out_path, config: render.RenderConfig, cluster: str, work_dir,
                      ids_file=None, limit: int | None = None, progress: bool = True, *,
                      shards: int | None = None) -> render.RenderSummary:
    """Render a catalogue on a Dask cluster into ``out_path`` (equal in data to :func:`render_dataset`).

    Args:
        catalogue_path: ``presets.h5``; workers open it under the same path.
        out_path: dataset to write (by the client, once every shard is done).
        config: rendering and storage settings, as for a local render.
        cluster: ``"tcp://HOST:8786"`` (a running ``dask scheduler``) or ``"local:N"`` (start a
            ``LocalCluster`` of N single-threaded worker processes on this machine).
        work_dir: folder for the shard files, seen by every worker and the client under the same
            path. ``None``: ``OUT.shards`` beside the output (fine for ``local:N`` and shared filesystems).
        ids_file, limit: preset selection, as for a local render.
        progress: progress bar (presets, from the cluster's finished tasks) on stderr.
        shards: at most this many shard tasks (default :data:`MAX_SHARDS`); fixed for a job's life.

    Returns:
        A :class:`~dexed_data.render.RenderSummary` of ``out_path``; ``rendered`` counts presets
        rendered by this run (shards found complete count as earlier work).

    Raises:
        RenderError: Dask not installed, scheduler unreachable, ``work_dir`` or ``out_path`` belong to
            another job, or a shard failed on every worker it was given to.
    """
    t0 = time.perf_counter()
    try:
        importlib.import_module("distributed")   # only to fail early with the install hint
    except ImportError:
        raise RenderError(f"--cluster needs Dask distributed, which is not installed; {INSTALL_HINT}") from None

    from .outputs import check_output, make_parents

    local_workers(cluster)   # a bad local:N before anything is read or made
    out = Path(out_path).absolute()
    catalogue = Path(catalogue_path).absolute()
    # as a local render checks it: not an input, not a folder, a writable place (an existing file is
    # handled by the resume rules below)
    check_output(out, inputs=[catalogue_path, ids_file], force=True, rendering_ok=True)
    make_parents(out)   # its lock file goes beside it
    with render.JobLock(out):   # one job per output, as for a local render (a second one stops at once)
        # a file of ids must be found by the workers; comma-separated ids travel as they are
        ids = Path(ids_file).absolute() if ids_file is not None and Path(ids_file).is_file() else ids_file
        # the whole selection, to size the plan and to recognise a finished output; read here, not on workers
        job = render.plan_job(catalogue_path, config, ids_file, limit, None, render.SEGMENT_SIZE)
        work = Path(work_dir).absolute() if work_dir is not None else out.with_name(out.name + ".shards")
        if out.exists():
            render.check_finished(out, job)
            _remove_finished_shards(work, job, out)
            return render.summarize_output(out, 0, time.perf_counter() - t0)
        plan = ClusterPlan.for_selection(job.selection_size, shards)
        _make_work_dir(work)
        # the shard folder's lock too: two jobs sharing a --work-dir each deleted the shards after
        # merging them, and the other's merge then met files gone (a traceback after its output was published)
        with _locked_work(work):
            fresh = not (work / "job.json").exists()
            _claim_work_dir(work, job, plan, out, cluster)

            paths = [plan.shard_path(work, k) for k in range(plan.shards)]
            todo = [k for k in range(plan.shards) if not paths[k].exists()]
            rendered = 0
            if todo:
                try:
                    rendered = _run_shards(cluster, plan, todo, paths, job.selection_hash, progress,
                                           args=(str(catalogue), config, str(ids) if ids else None, limit,
                                                 plan.segment_size, job.command))
                except RenderError:   # e.g. no scheduler at --cluster: a job that never started leaves nothing behind
                    if fresh and not any(p.exists() for p in paths):
                        (work / "job.json").unlink(missing_ok=True)   # and its folder (_locked_work)
                    raise
            merge(paths, out)   # a signal once it has published changes nothing (console.outputs_published)
            _remove_shards(work, paths, out)
            return render.summarize_output(out, rendered, time.perf_counter() - t0)


@contextlib.contextmanager
def _locked_work(work: Path):
    """The shard folder's lock: ``.job.json.lock`` inside it, not beside it (audit A7: a --work-dir of
    one's own in a folder one cannot write, as /scratch/$USER, was refused). When the job's record is
    gone at the end (its output published, or a job that never started), the folder goes too if
    nothing else is in it (it may be a shared folder holding other things)."""
    try:
        with render.JobLock(work / "job.json", "cluster render job", ", or give this one another --work-dir",
                            where="--work-dir"):
            yield
    finally:
        if not (work / "job.json").exists():
            with contextlib.suppress(OSError):
                work.rmdir()


def _remove_shards(work: Path, paths: list[Path], out: Path) -> None:
    """The shard files and job record of a job whose output ``out`` is published."""
    try:   # a shard that cannot be removed only leaves the folder behind
        for p in [*paths, work / "job.json"]:
            p.unlink(missing_ok=True)
    except OSError as exc:
        print(f"warning: cannot remove the shard files in {work} ({exc.strerror or exc}); {out} is "
              "whole: delete that folder yourself", file=sys.stderr)


def _remove_finished_shards(work: Path, job, out: Path) -> None:
    """``work``'s shards when they are all there and its ``job.json`` is ``job``'s for this output, which
    is whole: a job stopped between its merge and the removal of its shards left them (audit A7).
    Anything else is left alone: another output's job of the same presets and settings, still
    unfinished, must be able to resume (R10), and a folder another job holds is not waited for."""
    mine = json.loads(json.dumps(render.job_record(job)))

    def finished_shards() -> list[Path] | None:
        try:
            found = json.loads((work / "job.json").read_text())
            plan = ClusterPlan(int(found["selection_size"]), int(found["segment_size"]), int(found["shards"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        paths = [plan.shard_path(work, k) for k in range(plan.shards)]
        if (found.get("output") != str(out) or any(found.get(k) != v for k, v in mine.items() if k != "segment_size")
                or not all(p.is_file() for p in paths)):
            return None
        return paths

    if finished_shards() is None:   # without taking the folder's lock: most reruns find nothing to tidy
        return
    with contextlib.suppress(RenderError), _locked_work(work):   # held by a job: not this one's to tidy
        paths = finished_shards()   # again, under the lock (R11)
        if paths is not None:
            _remove_shards(work, paths, out)


def _make_work_dir(work: Path) -> None:
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RenderError(f"--work-dir {work}: cannot make this folder for the shard files ({exc.strerror or exc}); "
                          "choose a folder you can write (every worker must see it under the same path)") from None


def _claim_work_dir(work: Path, job, plan: ClusterPlan, out: Path, cluster: str) -> None:
    """Record the job in ``work/job.json``; refuse a folder that holds another job's shards, naming
    the command that finishes that job (its ``output`` is kept for that message, not compared: a
    job resumed into another output is the same job)."""
    record = {"format": "dexed-cluster-job", **render.job_record(job), "command": job.command,
              "shards": plan.shards, "segment_size": plan.segment_size}
    if not (work / "job.json").exists() and any(work.glob("shard-*")):
        raise RenderError(f"the shard folder {work} holds shard files but no job.json; choose an empty --work-dir")
    try:
        found = json.loads((work / "job.json").read_text())
        earlier, output = found.get("command"), found.get("output")
    except (OSError, ValueError, AttributeError):
        found = earlier = output = None
    if found is None or output is not None:   # (a job.json of an earlier version has none)
        # compared with the recorded output, so that only what makes another job is named as differing
        record["output"] = output if output is not None else str(out)
    if earlier == job.command:   # "rerun that command" would be this one again: the catalogue changed
        other = (f"the shard folder {work} holds an unfinished render of this same command that cannot be resumed: "
                 f"what it read from the catalogue, or the engine or package version, changed since it started; "
                 f"delete {work} to render again (or give another --work-dir)")
    else:
        if earlier and isinstance(output, str):   # the command that finishes it (a plain render never reads --work-dir)
            earlier += f" -o {shlex.quote(output)} --cluster {shlex.quote(cluster)} --work-dir {shlex.quote(str(work))}"
        other = (f"the shard folder {work} holds shards of another render job (other options, selection or "
                 f"catalogue); rerun that command{f' ({earlier})' if earlier else ''} to finish it, or delete {work} "
                 "to start over (or give another --work-dir)")
    render.claim_job_file(work / "job.json", record, other)


def local_workers(cluster: str) -> int | None:
    """N of ``"local:N"`` (checked as ``--jobs`` is: 1 to 4 × the CPU cores), None for a scheduler address."""
    if not cluster.startswith("local:"):
        return None
    try:
        n = int(cluster[len("local:"):])
    except ValueError:
        n = 0
    most = render.MAX_JOBS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= n <= most:
        raise RenderError(f"--cluster {cluster!r}: write local:N with N from 1 to {most} worker processes "
                          f"({render.MAX_JOBS_PER_CORE} × the {os.cpu_count() or 1} CPU cores), e.g. local:4")
    return n


@dataclass(frozen=True)
class ShardFailed:
    """What a shard task returns when its render stops on an error the user must fix (a full disk,
    a bad catalogue): said once by the client, not retried on every worker with a logged traceback."""
    message: str


def _connect(cluster: str):
    """``(client, local_cluster or None)`` for ``"local:N"`` or a scheduler address."""
    from distributed import Client, LocalCluster

    n = local_workers(cluster)
    if n is not None:
        import logging

        import dask

        # worker processes that may start the render's own worker process (see _render_shard); their
        # logs are not the user's business (a failed shard is said once, by this process)
        # the cluster's processes start with the group's signals held, and so keep them held: a Ctrl-C
        # (or SIGTERM, SIGHUP) to the group reaches this process alone, which closes the cluster; taken
        # by the workers too, it printed 30–120 lines of their tracebacks after the one line
        # (the resource trackers first: started from Dask's thread, Python 3.11's unblocks SIGINT and
        # SIGTERM in that thread, and the workers it starts next would inherit that)
        with dask.config.set({"distributed.worker.daemon": False}), render.group_signals_held():
            render._start_trackers()
            lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                              silence_logs=logging.CRITICAL,
                              # no dashboard; its scheduler's HTTP server takes a free port, not 8787, which
                              # a Dask scheduler already running here holds ("Port 8787 is already in use")
                              scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"})
        return Client(lc), lc
    try:
        return Client(cluster, timeout="30s"), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise RenderError(f"--cluster {cluster}: cannot reach a Dask scheduler there ({exc}); start one with "
                          f"`dask scheduler` and workers with `dask worker {cluster}` (see docs/SCALING.md)") from None


def _run_shards(cluster: str, plan: ClusterPlan, todo: list[int], paths: list[Path], selection_hash: str,
                progress: bool, args: tuple) -> int:
    """Submit one task per shard in ``todo``, follow them to the end; presets rendered by this run.

    A ``local:N`` cluster's workers are not daemons for the cluster's whole life: a nanny reads that
    setting again when it restarts a worker that died (killed, out of memory), and a daemon cannot
    start the render's process (audit A7: one dead worker failed the job)."""
    import dask

    with dask.config.set({"distributed.worker.daemon": False}) if local_workers(cluster) else contextlib.nullcontext():
        return _follow_shards(cluster, plan, todo, paths, selection_hash, progress, args)


def shard_key(selection_hash: str, shard_path: Path, k: int, n: int) -> str:
    """The Dask key of shard ``k`` of ``n``: the shard file's path makes it a job's own (two jobs of one
    selection with other settings share a scheduler: with the same keys, the second one's tasks were
    taken for the first's and its shards never written, audit A7); a rerun of the job has the same."""
    import hashlib

    where = hashlib.sha256(str(Path(shard_path).absolute()).encode()).hexdigest()[:12]
    return f"dexed-render-{selection_hash}-{where}-shard-{k}-of-{n}"


def _follow_shards(cluster: str, plan: ClusterPlan, todo: list[int], paths: list[Path], selection_hash: str,
                   progress: bool, args: tuple) -> int:
    from distributed import as_completed
    from dexed_data.console import interrupts_deferred, progress as progress_bar

    import logging

    client, local = _connect(cluster)
    # its "Failed to reconnect to scheduler ... closing client" log came before the one error line
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    client.register_plugin(_render_pool_cleanup(), name="dexed-render-pool-cleanup")
    bar = progress_bar(progress, total=plan.presets, initial=plan.presets - sum(plan.shard_presets(k) for k in todo),
                       unit="preset", smoothing=0.05, dynamic_ncols=True)
    rendered = 0
    futures: dict = {}
    try:
        futures = {client.submit(_render_shard, k, plan.shards, str(paths[k]), *args,
                                 key=shard_key(selection_hash, paths[k], k, plan.shards),
                                 retries=2, pure=False): k for k in todo}
        for fut in as_completed(futures):
            k = futures[fut]
            try:
                summary = fut.result()
            except Exception as exc:  # noqa: BLE001 - any cause: report which shard, keep finished ones
                from .inputs import first_line

                if _scheduler_lost(client, exc):   # not this shard's fault: every task was cancelled
                    raise RenderError(f"lost the connection to the Dask scheduler at {cluster} (it stopped, or the "
                                      f"network failed); finished shards are kept in {paths[k].parent}: restart "
                                      "the scheduler and its workers, then rerun the command to resume") from None
                raise RenderError(f"shard {k}/{plan.shards} failed on the cluster ({type(exc).__name__}: "
                                  f"{first_line(exc)}); finished shards are kept in {paths[k].parent}: rerun the "
                                  "command to resume") from exc
            if isinstance(summary, ShardFailed):
                raise RenderError(f"shard {k}/{plan.shards}: {summary.message}; finished shards are kept in "
                                  f"{paths[k].parent}: rerun the command to resume")
            rendered += summary.rendered
            bar.update(plan.shard_presets(k))
            bar.set_postfix(workers=len(client.scheduler_info().get("workers", {})), refresh=False)
    finally:
        # a second Ctrl-C while the cluster shuts down (a double press, `timeout -s INT`) broke the one
        # line of the first into tracebacks: held back until the shutdown ends, which the timeouts bound
        with interrupts_deferred():
            bar.close()
            with contextlib.suppress(Exception):   # stop the other shards' tasks before the client goes
                client.cancel(list(futures))
            with contextlib.suppress(Exception):
                client.close(timeout=10)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.close(timeout=10)
    return rendered


def _scheduler_lost(client, exc: BaseException) -> bool:
    """Whether a task failed because the client lost its scheduler (Dask cancels every task then)."""
    return "scheduler-connection-lost" in str(exc) or getattr(client, "status", "running") in ("closing", "closed")


def _render_shard(k: int, n: int, shard_path: str, catalogue: str, config: render.RenderConfig,
                  ids_file: str | None, limit: int | None, segment_size: int, command: str
                  ) -> render.RenderSummary | ShardFailed:
    """On a worker: render shard ``k`` of ``n`` into ``shard_path`` (resuming its finished segments),
    recording the client's creation ``command`` (its catalogue path as the user gave it); an
    error of ours becomes a :class:`ShardFailed`."""
    from distributed import Lock

    try:
        # The render runs in its own worker process (loky: per-preset timeout, crash isolation), reused
        # by the worker's next shard, gone after 5 idle minutes. Daemonic processes may not have
        # children, and Dask starts its workers as daemons unless told otherwise.
        if multiprocessing.current_process().daemon:
            raise RenderError("this Dask worker runs as a daemon process, which cannot start the render's worker "
                              "process; start the workers with DASK_DISTRIBUTED__WORKER__DAEMON=False in their "
                              "environment, e.g. `DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker ADDR "
                              "--nworkers N --nthreads 1` (docs/SCALING.md)")
        # One writer per shard file. A client that stops does not stop the tasks already running: when
        # it is restarted, its new task for the same shard may land on another worker and must wait
        # for the first to finish (and then finds the shard complete). The scheduler frees the lease
        # of a worker that died after distributed.scheduler.locks.lease-timeout (30 s).
        with Lock(f"dexed-render-{Path(shard_path).resolve()}"):
            return render.render_dataset(catalogue, shard_path, config, jobs=1, shard=render.Shard(k, n),
                                         progress=False, ids_file=ids_file, limit=limit, segment_size=segment_size,
                                         command=command)
    except render.WorkersStopped:   # this worker is closing (preempted, stopped): Dask runs the shard elsewhere
        raise
    except DexedDataError as exc:
        return ShardFailed(str(exc))


def _render_pool_cleanup():
    """A worker plugin that ends the worker's render process when the worker closes.

    Without it a closing worker waits on that process until its nanny kills it, leaving the render
    process to linger until its 5-minute idle timeout. (A worker killed outright still leaves it so.)
    """
    from distributed import WorkerPlugin

    class RenderPoolCleanup(WorkerPlugin):
        idempotent = True   # registering again (the next job) must not end the warm render process

        def teardown(self, worker) -> None:
            render.shutdown_workers()

    return RenderPoolCleanup()
