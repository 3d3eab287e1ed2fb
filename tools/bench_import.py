"""Benchmark `import-sysex` on the whole corpus, on one CPU core (target: under 10 s).

Usage::

    python tools/bench_import.py [CORPUS] [--repeat 3]

Runs the full import (walk, decode, dedup, HDF5 write, JSON report) ``--repeat`` times, each
into a fresh temporary folder, pinned to one core where the OS allows it, and prints files,
voices, the best and all wall times, voices per second and the ratio to the 10 s target. The
machine is shared, so the best of several runs is the number to quote.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dexed_data.importer import import_sysex

TARGET_S = 10.0
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dx7-cc0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=Path(os.environ.get("DEXED_CORPUS", DEFAULT_CORPUS)))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"corpus not found at {args.corpus}; pass its folder or set DEXED_CORPUS", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print(f"--repeat {args.repeat}: give 1 or more runs", file=sys.stderr)
        return 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            # a fresh folder per run: every run writes new files, as the first does (an existing
            # output is refused without --force, and replacing it would time a different path)
            run = Path(tmp) / f"run-{i + 1}"
            run.mkdir()
            start = time.perf_counter()
            rep = import_sysex([args.corpus], run / "presets.h5", report=run / "report.json")
            times.append(time.perf_counter() - start)
            shutil.rmtree(run)
    s = rep.summary
    best = min(times)
    print(f"corpus      {args.corpus}")
    print(f"files       {s['files_seen']}")
    print(f"voices      {s['voices']}  (unique raw {s['unique']['raw_values']})")
    print(f"seconds     {best:.2f} best of {len(times)}  ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"voices/s    {s['voices'] / best:,.0f}")
    print(f"vs target   {best / TARGET_S:.2f} of {TARGET_S:.0f} s  ({'OK' if best < TARGET_S else 'TOO SLOW'})")
    return 0 if best < TARGET_S else 1


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
