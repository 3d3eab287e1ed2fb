"""Benchmark the real-plug-in path (``--engine dawdreamer``) on the same presets, in one run.

Prints presets/s (the paper's six notes, 3 s + 1 s, unless told otherwise) for:

* **raw**: DawDreamer alone, one plug-in instance, each preset's 145 parameters set by name and
  the six notes rendered one after another, nothing else (no reset, no read-back, no features):
  the ceiling of any host;
* **engine**: :class:`dexed_data.engines.DawDreamerEngine` in this process (the clean-state reset
  render before each note and the read-back of the voice from the plug-in's state included);
* **--jobs 1** and **--jobs 2**: the whole ``dexed-data render --engine dawdreamer`` command in a
  fresh process (start-up, features, mel spectrograms, writing the file), and past its
  workers' start-up;

and the ratios the issue sets as targets: ``--jobs 1`` ≥ 0.8 × raw, ``--jobs 2`` ≥ 1.7 × ``--jobs 1``.

Usage::

    python tools/bench_plugin.py [--plugin ../shared/plugins/Dexed.vst3] [--presets 64]
                                 [--source bundled|corpus|DIR|presets.h5] [--hold 3 --release 1]

Dexed is loaded with HOME in a temporary folder (it writes settings there). Timings on a shared
machine are noisy: compare the ratios printed by one run, not runs.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

from _cli import stop_on_sigterm  # same folder
from bench_render import _catalogue, _command  # same folder: presets.h5 from a source; a timed command

REPO = Path(__file__).resolve().parents[1]
NOTES = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))


def _raw_rate(plugin: str, raws, hold: float, release: float) -> float:
    """DawDreamer alone: set every parameter by name, render the notes (see the module docstring)."""
    import dawdreamer
    import numpy as np

    from dexed_data.schema import VOICE_PARAMS

    engine = dawdreamer.RenderEngine(22050.0, 512)
    proc = engine.make_plugin_processor("raw", plugin)
    index = {proc.get_parameter_name(i): i for i in range(proc.get_plugin_parameter_size())}
    slots = [(p.voice_offset, index[p.name], p.max) for p in VOICE_PARAMS]
    engine.load_graph([(proc, [])])
    t = time.perf_counter()
    for raw in raws:
        for k, i, mx in slots:
            proc.set_parameter(i, float(raw[k]) / mx)
        for pitch, velocity in NOTES:
            proc.clear_midi()
            proc.add_midi_note(pitch, velocity, 0.0, hold)
            engine.render(hold + release)
            np.asarray(engine.get_audio())
    return len(raws) / (time.perf_counter() - t)


def _engine_rate(plugin: str, raws, hold: float, release: float) -> float:
    from dexed_data.engines import EngineSpec, host_resettable, make_engine

    engine = make_engine(EngineSpec(name="dawdreamer", plugin=plugin))
    todo = [r for r in raws if host_resettable(r)]
    t = time.perf_counter()
    for raw in todo:
        engine.render(raw, NOTES, hold, release)
    return len(todo) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plugin", default=str(REPO.parent / "shared" / "plugins" / "Dexed.vst3"))
    p.add_argument("--presets", type=int, default=64)
    p.add_argument("--source", default="bundled", help="bundled (64 presets), corpus, a SysEx folder or presets.h5")
    p.add_argument("--hold", type=float, default=3.0)
    p.add_argument("--release", type=float, default=1.0)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_plugin"))
    args = p.parse_args()
    os.environ["HOME"] = tempfile.mkdtemp(prefix="bench-plugin-home-")   # the plug-in writes its settings there
    atexit.register(shutil.rmtree, os.environ["HOME"], True)
    stop_on_sigterm()   # (the atexit handler runs then too)
    args.work.mkdir(parents=True, exist_ok=True)

    from dexed_data.catalogue import read_catalogue
    from dexed_data.schema import apply_fixed

    cat = _catalogue(args.source, args.work)
    raws = apply_fixed(read_catalogue(cat).raw[: args.presets])
    n = len(raws)
    print(f"{n} presets from {args.source}, six notes of {args.hold:g} s + {args.release:g} s, plug-in {args.plugin}")

    raw = _raw_rate(args.plugin, raws, args.hold, args.release)
    print(f"raw DawDreamer (set parameters + render the notes)   {raw:6.1f} presets/s")
    eng = _engine_rate(args.plugin, raws, args.hold, args.release)
    print(f"engine (clean-state reset + read-back), in process   {eng:6.1f} presets/s   {eng / raw:.2f} × raw")
    extra = ["--engine", "dawdreamer", "--plugin", args.plugin, "--hold", f"{args.hold:g}",
             "--release", f"{args.release:g}"]
    rates = {}
    for jobs in (1, 2):
        wall, startup, _ = _command(cat, args.work / f"jobs{jobs}.h5", n, jobs, extra)
        rates[jobs] = (n / wall, n / max(wall - startup, 1e-9))
        print(f"dexed-data render --jobs {jobs}: whole command            {rates[jobs][0]:6.1f} presets/s   "
              f"(past start-up {rates[jobs][1]:.1f}; start-up {startup:.1f} s)")
    j1, j2 = rates[1], rates[2]
    print(f"--jobs 1 / raw:     {j1[0] / raw:.2f} whole command, {j1[1] / raw:.2f} past start-up   (target ≥ 0.8)")
    print(f"--jobs 2 / --jobs 1: {j2[0] / j1[0]:.2f} whole command, {j2[1] / j1[1]:.2f} past start-up   "
          "(target ≥ 1.7)")


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
