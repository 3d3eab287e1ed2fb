"""Benchmark `import-sysex` on adversarial files up to the 64 MB limit: time and memory must grow
linearly with the file, not with its square.

Usage::

    python tools/bench_import_limits.py [--mb 16] [--kinds variants,unrelated,junk]

Three kinds of file, made in a temporary folder from the bundled bank ``presets/toolkit_bank_a.syx``:

* ``variants``: one voice 32 times per bank with OP6's four EG rates drawn at random (a patch
  randomiser's output; every voice a near-copy of every other: the near-copy grouping was quadratic);
* ``unrelated``: the bank's voices with every operator's four EG rates drawn at random (unrelated
  voices, sorted beside each other by the one-step rule);
* ``jitter``: one voice with every byte of its packed sound raised by one step or not, at random
  (voices one step apart in dozens of parameters: the one-step rule compared every pair in full);
* ``junk``: banks of random 7-bit bytes (values out of range everywhere: one problem per value
  made 140 MB of memory per MB of input).

Each kind is imported at ``--mb`` MB and at a quarter of it, each in its own process pinned to one
core; the script prints seconds and peak memory (resident, MB) of both, per MB of input, and the
ratio of the two sizes' times and memory: about 4 is linear, 16 quadratic. Measured in one run, as
the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BANK = Path(__file__).resolve().parents[1] / "presets" / "toolkit_bank_a.syx"
HEADER = bytes([0xF0, 0x43, 0x00, 0x09, 0x20, 0x00])
KINDS = ("variants", "unrelated", "jitter", "junk")


def bank(voices: np.ndarray) -> bytes:
    """A 4,104-byte bank of 32 packed voices ``(32, 128)`` with its checksum."""
    data = voices.astype(np.uint8).tobytes()
    return HEADER + data + bytes([(-sum(data)) & 0x7F, 0xF7])


def make(kind: str, banks: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    voices = np.frombuffer(BANK.read_bytes()[6:6 + 4096], np.uint8).reshape(32, 128)
    out = []
    for _ in range(banks):
        if kind == "variants":
            v = np.repeat(voices[:1], 32, 0)
            v[:, 0:4] = rng.integers(0, 100, (32, 4))          # OP6 EG rates 1-4
        elif kind == "jitter":
            v = np.repeat(voices[:1], 32, 0)
            v[:, :118] = np.minimum(v[:, :118] + rng.integers(0, 2, (32, 118)), 0x7F)
        elif kind == "unrelated":
            v = voices.copy()
            for op in range(6):
                v[:, op * 17:op * 17 + 4] = rng.integers(0, 100, (32, 4))
        else:
            v = rng.integers(0, 128, (32, 128))
        out.append(bank(v))
    return b"".join(out)


def import_once(path: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one `import-sysex` in its own process."""
    cmd = [sys.executable, "-m", "dexed_data", "import-sysex", str(path), "-o", str(out), "--no-progress"]
    pin = (lambda: os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})) \
        if hasattr(os, "sched_setaffinity") else None
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stderr=proc.stderr.read())
    proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024   # kB on Linux


def main() -> int:
    from _cli import at_least, fail

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=16, help="size of the larger file, MB (at most 64)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of " + ", ".join(KINDS))
    args = parser.parse_args()
    at_least(args, mb=4)
    if args.mb > 64:
        fail(f"--mb {args.mb}: the import reads files of at most 64 MB")
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - set(KINDS):
        fail(f"--kinds {args.kinds}: give some of {', '.join(KINDS)}")
    print(f"{'kind':<10} {'MB':>6} {'voices':>8} {'s':>8} {'s/MB':>6} {'peak MB':>8} {'peak/MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            rows = []
            for mb in (args.mb / 4, args.mb):
                banks = int(mb * 2**20) // 4104
                path = Path(tmp) / f"{kind}-{mb:g}.syx"
                path.write_bytes(make(kind, banks))
                seconds, peak = import_once(path, Path(tmp) / f"{kind}-{mb:g}.h5")
                size = path.stat().st_size / 2**20
                rows.append((size, seconds, peak))
                print(f"{kind:<10} {size:6.1f} {banks * 32:8,} {seconds:8.1f} {seconds / size:6.2f} {peak:8.0f} "
                      f"{peak / size:8.1f}")
                path.unlink()
            (s0, t0, m0), (s1, t1, m1) = rows
            print(f"{kind:<10} {s1 / s0:.1f}× the input: {t1 / t0:.1f}× the time, {m1 / m0:.1f}× the peak memory "
                  f"(linear: {s1 / s0:.1f}, quadratic: {(s1 / s0) ** 2:.0f})")
    return 0


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
