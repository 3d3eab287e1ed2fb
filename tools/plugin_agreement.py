"""Count, over a whole catalogue, how far the real Dexed plug-in's renders are from the default engine's.

For every preset of ``--presets`` (a catalogue made by ``dexed-data import-sysex``) it renders the
paper's six notes through ``--engine dawdreamer --plugin PATH`` and through the default ``dexed``
engine, in the same process, and records the max |plug-in − dexed| of each note (float32 audio,
full scale 1.0). Nothing but a small JSON-lines file is written (``--out``, one line per preset,
appended; a rerun skips the presets already there, so an interrupted count resumes). Presets the
plug-in path refuses (sample-and-hold LFO) are recorded as refused. At the end it prints the share
of presets within 1e-3, 2e-3, 1e-2 and 0.1, the count over 2e-3 per note, and the worst presets:
the numbers of docs/FORMAT.md ("The DawDreamer path", "The whole corpus").

Usage::

    dexed-data import-sysex ../shared/corpus/dx7-cc0 -o cc0.h5
    python tools/plugin_agreement.py --presets cc0.h5 --plugin ../shared/plugins/Dexed.vst3 --jobs 2 --out agree.jsonl

(~65 ms per preset on one core: the 30,451 presets of the CC0 corpus take ~12 minutes with two.)
Dexed is loaded with ``HOME`` in a temporary folder (it writes settings there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NOTES = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))
THRESHOLDS = (1e-3, 2e-3, 1e-2, 0.1)


def _count(args: tuple[str, str, list[int], str, str]) -> int:
    """In a worker: compare the presets at ``rows``, appending one JSON line per preset to ``out``, with
    ``home`` as HOME (a folder the main process made, and removes)."""
    presets, plugin, rows, out, home = args
    os.environ["HOME"] = home   # the plug-in writes its settings there (../shared/plugins/README.md)
    from dexed_data.catalogue import read_catalogue
    from dexed_data.engines import EngineSpec, host_resettable, make_engine
    from dexed_data.schema import apply_fixed

    cat = read_catalogue(presets)
    plug = make_engine(EngineSpec(name="dawdreamer", plugin=plugin))
    ref = make_engine(EngineSpec())
    with open(out, "a") as f:
        for r in rows:
            raw = apply_fixed(cat.raw[r])
            rec: dict = {"row": int(r), "id": cat.ids[r], "name": cat.names[r].strip()}
            if not host_resettable(raw):
                rec["refused"] = True
            else:
                try:
                    a = plug.render(raw, NOTES, 3.0, 1.0).audio
                except Exception as exc:  # noqa: BLE001 - recorded, the count goes on
                    rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
                else:
                    b = ref.render(raw, NOTES, 3.0, 1.0).audio
                    rec["note_max"] = [float(x) for x in np.abs(a.astype(np.float64) - b).max(axis=1)]
            f.write(json.dumps(rec) + "\n")
            f.flush()
    return len(rows)


def summarize(records: list[dict]) -> str:
    """The printed table of a list of per-preset records."""
    ok = [r for r in records if "note_max" in r]
    lines = [f"{len(records)} presets: {sum('refused' in r for r in records)} refused (sample-and-hold LFO), "
             f"{sum('error' in r for r in records)} failed, {len(ok)} compared"]
    if not ok:
        return "\n".join(lines)
    m = np.array([r["note_max"] for r in ok])
    worst = m.max(1)
    lines.append("max |plug-in - dexed| per preset: " + ", ".join(
        f"<= {t:g}: {(worst <= t).mean():.1%} ({int((worst <= t).sum())})" for t in THRESHOLDS)
        + f"; median {np.median(worst):.2g}, max {worst.max():.3g}")
    lines.append("over 2e-3 per note: " + ", ".join(f"{p}:{v} {int((m[:, k] > 2e-3).sum())}"
                                                    for k, (p, v) in enumerate(NOTES)))
    for i in np.argsort(-worst)[:5]:
        lines.append(f"  worst: {ok[i]['name']!r} ({ok[i]['id']}) {worst[i]:.3g} on note "
                     f"{':'.join(map(str, NOTES[int(m[i].argmax())]))}")
    return "\n".join(lines)


def _not_ours(path: Path) -> str | None:
    """Why ``path`` is not a file of this tool's records (JSON objects with a row and an id, one per
    line; the last may be cut by an interruption), or None."""
    try:
        text = path.read_bytes().decode("utf-8")
        lines = text.splitlines()
    except UnicodeDecodeError:
        return "it is not text"
    except OSError as exc:
        return exc.strerror or str(exc)
    for k, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) - 1 and not text.endswith("\n"):
                continue                 # a line cut by an interruption (its newline not written)
            return f"line {k + 1} is not one of its JSON records"
        if not (isinstance(rec, dict) and "row" in rec and "id" in rec):
            return f"line {k + 1} is not one of its records"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", required=True, type=Path, help="catalogue (dexed-data import-sysex)")
    ap.add_argument("--plugin", default=str(REPO.parent / "shared" / "plugins" / "Dexed.vst3"))
    ap.add_argument("--out", required=True, type=Path, help="JSON lines, appended (a rerun resumes)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N presets")
    a = ap.parse_args()
    from _cli import fail

    if a.jobs < 1:
        fail(f"--jobs {a.jobs}: must be at least 1")
    if a.limit is not None and a.limit < 0:
        fail(f"--limit {a.limit}: must be 0 or more")
    if a.out.is_dir():
        fail(f"--out {a.out} is a folder; give a file for the JSON lines (e.g. {a.out / 'agreement.jsonl'})")
    if a.out.exists():
        not_ours = _not_ours(a.out)
        if not_ours is not None:   # audit A3: any file was rebuilt from the lines that parsed, the rest lost
            fail(f"--out {a.out} is not this tool's output ({not_ours}); it is left alone: give another --out")
    from dexed_data.catalogue import read_catalogue

    cat = read_catalogue(a.presets)
    n = len(cat.raw)
    n = n if a.limit is None else min(n, max(0, a.limit))
    done: dict[int, dict] = {}
    other = 0   # lines of another catalogue (another preset at that row): not this one's, redone
    parts = sorted(a.out.parent.glob(a.out.name + ".part*")) if a.out.parent.exists() else []
    for path in [a.out] + parts:
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:      # a line cut by an interruption: that preset is redone
                    continue
                row = rec.get("row")
                if not (isinstance(row, int) and 0 <= row < len(cat.ids) and rec.get("id") == cat.ids[row]):
                    other += 1
                    continue
                done[row] = rec
    if other:
        print(f"{a.out}: {other} line(s) of another catalogue (their ids differ) are not counted; they are redone "
              "(and replaced in the file)", flush=True)
    todo = [r for r in range(n) if r not in done]
    print(f"{a.presets}: {n} presets, {len(done)} already counted, {len(todo)} to render with {a.jobs} job(s)",
          flush=True)
    if todo:
        # each worker's HOME is made and removed here, after the workers have ended, however they end
        # (one was left in /tmp per worker and run; R13, R14: SIGTERM, Ctrl-C to the process group)
        from _cli import stop_on_sigterm   # this folder

        stop_on_sigterm()
        homes = [tempfile.mkdtemp(prefix="dexed-home-") for _ in range(a.jobs)]
        chunks = [(str(a.presets), a.plugin, todo[k::a.jobs], str(a.out) + f".part{k}", homes[k]) for k in range(a.jobs)]
        ex = ProcessPoolExecutor(a.jobs)
        try:
            list(ex.map(_count, chunks))
        except BaseException:   # Ctrl-C, SIGTERM (timeout, a batch system): the workers end too
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            for home in homes:
                shutil.rmtree(home, ignore_errors=True)
        for _, _, _, part, _ in chunks:
            for line in Path(part).read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[rec["row"]] = rec
        tmp = a.out.with_name(a.out.name + ".tmp")
        tmp.write_text("".join(json.dumps(done[r]) + "\n" for r in sorted(done)))
        os.replace(tmp, a.out)
        for _, _, _, part, _ in chunks:
            Path(part).unlink(missing_ok=True)
    print(summarize([done[r] for r in sorted(done) if r < n]))


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
