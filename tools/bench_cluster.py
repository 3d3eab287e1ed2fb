"""Benchmark the Dask cluster path against ``--jobs N`` on the same machine and presets, in one run.

Prints, for the same N presets and settings (default: the paper's six notes, 3 s + 1 s):

* **cold**: the whole command in a fresh process, ``dexed-data render --jobs N`` vs
  ``dexed-data render --cluster local:N`` (cluster start, worker start-up, shards, merge included);
* **warm**: this process, second run of each with workers already up: ``render_dataset(jobs=N)``
  vs ``render_on_cluster`` on a running ``LocalCluster`` of N workers (the steady-state overhead
  of shards, task scheduling, shard files and the merge);
* the throughput ratio cluster / ``--jobs N`` for both (1.0 = no overhead).

With ``--scheduler tcp://HOST:8786`` the warm cluster run uses that scheduler's workers instead
(then the ratio compares a whole cluster with this machine's ``--jobs N``).

Usage::

    python tools/bench_cluster.py [--presets 64] [--jobs 2] [--source bundled|corpus|DIR|presets.h5]
                                  [--hold 3 --release 1] [--work /tmp/bench_cluster] [--scheduler ADDR]

Timings on a shared machine are noisy: compare the ratios printed by one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_render import _catalogue  # same folder: presets.h5 from corpus|bundled|DIR|.h5



def _clean(out: Path) -> None:
    for p in (out, out.with_name(out.name + ".parts"), out.with_name(out.name + ".shards")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _cli(cat: Path, out: Path, args: argparse.Namespace, how: list[str]) -> float:
    """Wall seconds of ``dexed-data render ... HOW`` in a fresh process."""
    _clean(out)
    cmd = [sys.executable, "-m", "dexed_data", "render", str(cat), "-o", str(out), "--limit", str(args.presets),
           "--hold", f"{args.hold:g}", "--release", f"{args.release:g}", "--no-progress", *how]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _same_data(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visit(lambda n: names.append(n) if isinstance(fa[n], h5py.Dataset) else None)
        return all(np.array_equal(fa[n][...], fb[n][...], equal_nan=fa[n].dtype.kind == "f") for n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2, help="--jobs N and local:N workers (default 2)")
    p.add_argument("--source", default="bundled", help="bundled (64 presets), corpus, a SysEx folder or presets.h5")
    p.add_argument("--hold", type=float, default=3.0)
    p.add_argument("--release", type=float, default=1.0)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_cluster"))
    p.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of a running scheduler for the warm run")
    args = p.parse_args()

    import dask
    from distributed import LocalCluster

    from dexed_data.cluster import render_on_cluster
    from dexed_data.render import RenderConfig, render_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    cat = _catalogue(args.source, args.work)
    n, j = args.presets, args.jobs
    print(f"{n} presets, {args.hold:g} s + {args.release:g} s, paper's 6 notes; --jobs {j} vs --cluster local:{j}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    # -- cold: whole commands ---------------------------------------------------------------------
    a, b = args.work / "jobs.h5", args.work / "cluster.h5"
    t_jobs = _cli(cat, a, args, ["--jobs", str(j)])
    t_cluster = _cli(cat, b, args, ["--cluster", f"local:{j}", "--work-dir", str(args.work / "shards")])
    same = _same_data(a, b)
    print(f"cold  --jobs {j:<3}            {t_jobs:7.1f} s  {n / t_jobs:6.2f} presets/s")
    print(f"cold  --cluster local:{j:<3}    {t_cluster:7.1f} s  {n / t_cluster:6.2f} presets/s"
          f"   ratio {t_jobs / t_cluster:.2f}   same data: {same}")

    # -- warm: workers already up, second run of each ---------------------------------------------
    cfg = RenderConfig(hold=args.hold, release=args.release, store=("mel",), compression="lzf")

    def timed(fn, out: Path) -> float:
        _clean(out)
        t = time.perf_counter()
        fn(out)
        return time.perf_counter() - t

    local = None
    address = args.scheduler
    if address is None:
        # as dexed_data.cluster starts `--cluster local:N`: non-daemon workers, which may start the
        # render's own worker process (Dask starts daemon workers unless told otherwise)
        with dask.config.set({"distributed.worker.daemon": False}):
            local = LocalCluster(n_workers=j, threads_per_worker=1, processes=True, dashboard_address=None)
        address = local.scheduler_address
    try:
        def run_jobs(out: Path) -> None:
            render_dataset(cat, out, cfg, jobs=j, progress=False, limit=n)

        def run_cluster(out: Path) -> None:
            render_on_cluster(cat, out, cfg, cluster=address, work_dir=args.work / "shards", limit=n, progress=False)

        timed(run_jobs, a), timed(run_cluster, b)            # start-up: workers import the engine stack
        w_jobs, w_cluster = timed(run_jobs, a), timed(run_cluster, b)
    finally:
        if local is not None:
            local.close()
    where = f"--cluster {args.scheduler}" if args.scheduler else f"--cluster local:{j}"
    print(f"warm  render_dataset(jobs={j})  {w_jobs:7.1f} s  {n / w_jobs:6.2f} presets/s")
    print(f"warm  {where:<24} {w_cluster:7.1f} s  {n / w_cluster:6.2f} presets/s   ratio {w_jobs / w_cluster:.2f}")
    print("ratio = cluster throughput / --jobs throughput (1.00: the distributed path costs nothing)")


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
