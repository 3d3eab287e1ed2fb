"""Training throughput: model compute (paper-size and small) vs the data loader, in samples/s.

Three measurements in one run:

* ``train``: full training steps (forward, loss, backward, Adam) on random inputs, per model size;
* ``loader``: samples/s the DataLoader delivers from the file (lazy, ``--workers`` processes);
* ``fit``: short real ``fit`` runs (``--fit-steps`` batches) from disk and with the spectrograms
  held in RAM, reading samples/s and the **loader's share of step time** (the time each step
  waited for its batch) from metrics.csv, as a real run logs them (and GPU utilisation on CUDA).

If the loader delivers fewer samples/s than a training step consumes, training is loading-bound
(add --workers, hold the data in RAM, faster disk); otherwise compute-bound.

    python tools/bench_train.py                         # synthetic 257×347 dataset in a temp folder, CPU
    python tools/bench_train.py --data data64.h5 --sizes small --batch-size 64 --threads 1
    python tools/bench_train.py --data dataset.h5 --device cuda --batch-size 160 --workers 8 --sizes paper

Numbers on a shared machine are noisy: repeat and look at the spread (--repeats).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from preset_model.data import make_datasets, read_info  # noqa: E402
from preset_model.model import PresetModel, model_config  # noqa: E402
from preset_model.train import compute_loss  # noqa: E402


def train_rate(size: str, notes: int, n_mels: int, frames: int, batch: int, steps: int, device: torch.device,
               amp: bool) -> tuple[float, int]:
    """Samples/s of full training steps (forward, loss, backward, Adam) on random inputs; and the parameter count."""
    torch.manual_seed(0)
    model = PresetModel(model_config(size, notes=notes, n_mels=n_mels, frames=frames)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    mel = torch.rand(batch, notes, n_mels, frames, device=device) * 2 - 1
    d = model.cfg.latent_dim
    target = torch.rand(batch, d, device=device)
    mask = torch.ones(batch, d, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")

    def step() -> None:
        with autocast:
            out = model(mel)
        loss, _ = compute_loss(out, mel, target, mask, model, beta=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0), sum(p.numel() for p in model.parameters())


def loader_rate(data: Path, notes: int, batch: int, workers: int, batches: int) -> float:
    """Samples/s the DataLoader delivers from ``data`` (worker start-up excluded)."""
    train, _, _, _ = make_datasets(data, "numcat++", notes)
    loader = DataLoader(train, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += len(next(it)[0])
        except StopIteration:
            it = iter(loader)
    return n / (time.perf_counter() - t0)


def fit_rates(data: Path, size: str, notes: int, batch: int, steps: int, workers: int, device: str,
              in_memory: bool) -> tuple[float, float, float]:
    """(samples/s, loader share of step time, GPU utilisation %) of a short real ``fit`` on ``data``."""
    import csv

    from preset_model.train import TrainConfig, fit

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(epochs=1, batch_size=batch, max_steps=steps, workers=workers, device=device,
                          in_memory=in_memory)
        fit(data, Path(tmp) / "run", model_config(size, notes=notes), cfg, progress=False)
        row = list(csv.DictReader(open(Path(tmp) / "run" / "metrics.csv")))[-1]
    return float(row["samples_per_s"]), float(row["loader_share"]), float(row.get("gpu_utilisation", "nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a dataset.h5 (default: a synthetic 257×347 one in a temp folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--notes", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--loader-batches", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sizes", default="paper,small")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--fit-steps", type=int, default=10, help="batches of each short real fit (0: skip)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from model_fixtures import write_synthetic_dataset  # tests/ helper: documented dataset layout

            data = write_synthetic_dataset(Path(tmp) / "bench.h5", n=120, n_mels=257, frames=347,
                                           failed=(), silent=())
        info = read_info(data)
        print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
              f"{args.notes} notes × {info.n_mels}×{info.frames}, {args.repeats} repeats (median, min–max)")
        rates = {}
        for size in args.sizes.split(","):
            runs = [train_rate(size, args.notes, info.n_mels, info.frames, args.batch_size, args.steps, device,
                               not args.no_amp) for _ in range(args.repeats)]
            r = [x for x, _ in runs]
            rates[size] = statistics.median(r)
            print(f"train  {size:6s} {runs[0][1] / 1e6:6.1f} M params  {rates[size]:8.1f} samples/s  "
                  f"({min(r):.1f}–{max(r):.1f})")
        r = [loader_rate(data, args.notes, args.batch_size, args.workers, args.loader_batches)
             for _ in range(args.repeats)]
        load = statistics.median(r)
        print(f"loader {args.workers} workers         {load:8.1f} samples/s  ({min(r):.1f}–{max(r):.1f})")
        for size, rate in rates.items():
            print(f"  {size}: {'loading' if load < rate else 'compute'}-bound "
                  f"(loader/train = {load / rate:.1f}×)")
        if args.fit_steps:
            for size in args.sizes.split(","):
                for in_memory, workers in ((False, args.workers), (True, 0)):
                    rate, share, gpu = fit_rates(data, size, args.notes, args.batch_size, args.fit_steps,
                                                 workers, args.device, in_memory)
                    where = "in RAM" if in_memory else f"from disk, {workers} workers"
                    print(f"fit    {size:6s} {where:24s} {rate:8.1f} samples/s  loader share of step time "
                          f"{share:5.1%}" + (f"  GPU {gpu:.0f}%" if args.device.startswith("cuda") else ""))


if __name__ == "__main__":
    from _cli import run_main   # this folder: errors as one line

    run_main(main)
