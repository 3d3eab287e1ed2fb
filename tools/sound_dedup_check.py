"""Check dedup by sound on a SysEx corpus against the independent figures of DX7.md §6
(``../shared/reference/DX7.md``, beside the repository; not part of it).

Imports the corpus (``import-sysex``), renders every catalogue preset on the dataset's notes with
the paper's fixed values applied (audio only: no mel, no operators, which leaves the audio
bit-identical and is ~4× faster than a full ``dexed-data render``), computes the same fingerprints
the render workers store (:mod:`dexed_data.fingerprint`), and prints:

* presets, distinct by sound (exact fingerprint), distinct by the near key, silent on all notes,
  compared with DX7.md's 28,378 distinct signals and 95 silent voices for the CC0 corpus;
* how many audio merges the parameter-level ``sound_group`` of the catalogue already explains;
* a verification: a random sample of merged groups re-rendered, each member's audio compared
  sample by sample with its representative's (must be bit-identical).

Per-batch results are kept in ``OUT/batches`` so an interrupted run resumes. Usage::

    nice python tools/sound_dedup_check.py /work/shared/corpus/dx7-cc0 -o /tmp/sound_dedup --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

_THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
BATCH = 256
#: DX7.md §6, CC0 corpus, dexed-py, the six notes of PAPER.md.
REFERENCE = {"voices": 30245, "distinct_by_sound": 28378, "distinct_within_1e-3": 28320, "silent": 95}

_ENGINE = {}


def _render_batch(raws: np.ndarray, notes, hold: float, release: float, sample_rate: int) -> dict:
    from dexed_data.engines import EngineSpec, make_engine
    from dexed_data.features import silent_notes
    from dexed_data.fingerprint import exact_fingerprint, near_fingerprint

    engine = _ENGINE.get(sample_rate)
    if engine is None:
        engine = _ENGINE[sample_rate] = make_engine(EngineSpec(sample_rate=sample_rate))
    n = len(raws)
    out = {"exact": np.zeros((n, 16), np.uint8), "near": np.zeros((n, 16), np.uint8),
           "silent_notes": np.zeros((n, len(notes)), bool), "ok": np.zeros(n, bool)}
    for i, raw in enumerate(raws):
        try:
            audio = engine.render(raw, notes, hold, release).audio
        except Exception:  # noqa: BLE001 - a failed render is counted, not fatal
            continue
        out["exact"][i] = exact_fingerprint(audio)
        out["near"][i] = near_fingerprint(audio, sample_rate)
        out["silent_notes"][i] = silent_notes(audio)
        out["ok"][i] = True
    return out


def _samples(hold: float, release: float, sample_rate: int) -> int:
    from dexed_data.engines import n_samples

    return n_samples(hold, release, sample_rate)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/sound_dedup"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N catalogue presets (smoke runs)")
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--release", type=float, default=1.0)
    ap.add_argument("--verify-groups", type=int, default=40, help="merged groups to re-render and compare")
    ap.add_argument("--as-stored", action="store_true",
                    help="render the voices as stored (own TRANSPOSE) instead of with the paper's fixed values")
    args = ap.parse_args(argv)

    from dexed_data.catalogue import read_catalogue
    from dexed_data.importer import import_sysex
    from dexed_data.fingerprint import count_distinct, duplicate_of, exact_fingerprint, group_of
    from dexed_data.render import DEFAULT_NOTES
    from dexed_data.schema import apply_fixed

    from _cli import fail   # this folder

    if not Path(args.corpus).exists():
        fail(f"{args.corpus}: no such file or folder; give a SysEx corpus")
    args.out.mkdir(parents=True, exist_ok=True)
    cat_path, made_from = args.out / "presets.h5", args.out / "corpus.txt"
    corpus = os.path.realpath(args.corpus)
    if cat_path.exists() and (not made_from.exists() or made_from.read_text().rstrip("\n") != corpus):
        # its catalogue and batches were reused for another corpus, unsaid (audit Y7)
        if made_from.exists():
            fail(f"{args.out} holds the results of another corpus ({made_from.read_text().rstrip(chr(10))!r}, not "
                 f"{corpus!r}); give another -o or delete it")
        fail(f"{args.out} holds a presets.h5 with no record of its corpus (an older version of this script wrote "
             f"none; or it was put there by hand): give another -o, or, if it was made from {corpus}, write that "
             f"path into {made_from} to reuse it")
    t0 = time.perf_counter()
    if not cat_path.exists():
        import_sysex([args.corpus], cat_path, progress=False, command="tools/sound_dedup_check.py")
        made_from.write_text(corpus + "\n")
    cat = read_catalogue(cat_path)
    print(f"catalogue: {len(cat)} presets unique by values ({time.perf_counter() - t0:.0f} s)", flush=True)
    n = len(cat) if args.limit is None else min(args.limit, len(cat))
    raw = cat.raw[:n].copy() if args.as_stored else apply_fixed(cat.raw[:n])
    notes, sr = DEFAULT_NOTES, 22050

    batches = args.out / "batches"
    batches.mkdir(exist_ok=True)
    key = f"h{args.hold:g}-r{args.release:g}-n{n}" + ("-stored" if args.as_stored else "")
    todo = [s for s in range(0, n, BATCH) if not (batches / f"{key}-{s:06d}.npz").exists()]
    t1 = time.perf_counter()
    if todo:
        from joblib.externals.loky import get_reusable_executor

        ex = get_reusable_executor(max_workers=args.jobs, env=_THREADS)
        futs = {ex.submit(_render_batch, raw[s:s + BATCH], notes, args.hold, args.release, sr): s for s in todo}
        done = 0
        from concurrent.futures import as_completed

        for fut in as_completed(futs):
            s = futs[fut]
            np.savez(batches / f"{key}-{s:06d}.npz", **fut.result())
            done += min(BATCH, n - s)
            el = time.perf_counter() - t1
            print(f"  rendered {done}/{sum(min(BATCH, n - s) for s in todo)} "
                  f"({done / el:.1f} presets/s, {el:.0f} s)", flush=True)
    parts = [np.load(batches / f"{key}-{s:06d}.npz") for s in range(0, n, BATCH)]
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}
    ok = res["ok"]
    silent = ok & res["silent_notes"].all(axis=1)
    dup = duplicate_of(res["exact"], ok)
    distinct = count_distinct(res["exact"], ok)
    distinct_near = count_distinct(res["near"], ok)

    # how many audio merges does the parameter-level sound_key already predict?
    sg = cat.sound_group[:n]
    by_key = int(np.sum((dup >= 0) & (sg == sg[np.maximum(dup, 0)])))
    key_split = group_of(res["exact"], ok)
    key_groups_split = int(np.sum([len(np.unique(key_split[sg == g])) > 1 for g in np.unique(sg[ok])]))

    summary = {
        "presets": int(n), "rendered_ok": int(ok.sum()), "failed": int((~ok).sum()),
        "unique_raw_after_fixed": int(np.unique(np.ascontiguousarray(raw).view(np.dtype((np.void, 145)))).size),
        "distinct_by_sound": distinct, "duplicates": int(np.sum(dup >= 0)), "distinct_by_near_key": distinct_near,
        "silent_all_notes": int(silent.sum()),
        "exactly_zero_audio": int(np.sum(ok & (res["exact"] == exact_fingerprint(
            np.zeros((len(notes), _samples(args.hold, args.release, sr)), np.float32))).all(axis=1))),
        "fixed_transpose": not args.as_stored,
        "silent_per_note": res["silent_notes"][ok].sum(axis=0).tolist(),
        "distinct_parameter_sound_groups": int(np.unique(sg).size),
        "duplicates_explained_by_sound_key": by_key,
        "sound_key_groups_with_different_audio": key_groups_split,
        "render_seconds": round(time.perf_counter() - t1, 1),
    }
    ref = REFERENCE
    print(json.dumps(summary, indent=1))
    if args.limit is None:
        d = summary["distinct_by_sound"]
        print(f"distinct by sound {d} vs DX7.md {ref['distinct_by_sound']}: "
              f"{100 * (d - ref['distinct_by_sound']) / ref['distinct_by_sound']:+.2f} %")
        print(f"silent on all notes {summary['silent_all_notes']} (peak < -70 dBFS), "
              f"{summary['exactly_zero_audio']} exactly zero, vs DX7.md {ref['silent']}")
        print(f"presets {n} vs DX7.md {ref['voices']} voices unique by values")

    # verification: re-render sampled groups, compare every member with its representative
    groups = {}
    for i in np.flatnonzero(dup >= 0):
        groups.setdefault(int(dup[i]), []).append(int(i))
    rng = np.random.default_rng(0)
    reps = sorted(groups)
    pick = rng.choice(len(reps), min(args.verify_groups, len(reps)), replace=False) if reps else []
    from dexed_data.engines import EngineSpec, make_engine

    engine = make_engine(EngineSpec(sample_rate=sr))
    checked = identical = 0
    worst = 0.0
    for j in pick:
        r = reps[j]
        a = engine.render(raw[r], notes, args.hold, args.release).audio
        for m in groups[r][:5]:
            b = engine.render(raw[m], notes, args.hold, args.release).audio
            checked += 1
            identical += int(np.array_equal(a, b))
            worst = max(worst, float(np.abs(a - b).max()))
    print(f"verified {len(pick)} random merged groups: {identical}/{checked} members render bit-identically "
          f"to their representative (max |diff| {worst:g})")
    summary.update(verified_groups=len(pick), verified_members=checked, verified_identical=identical)
    (args.out / ("summary-stored.json" if args.as_stored else "summary.json")).write_text(json.dumps(summary, indent=1))
    return 0 if identical == checked else 1


if __name__ == "__main__":
    for k, v in _THREADS.items():
        os.environ.setdefault(k, v)
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
