"""Training: run folder contents, exact resume, split, schema refusal, audibility mask, CLI, DDP on gloo."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from model_fixtures import write_synthetic_dataset  # noqa: E402

from preset_model.checkpoint import load_checkpoint, load_model  # noqa: E402
from preset_model.cli import app  # noqa: E402
from preset_model.data import make_datasets, split_ids  # noqa: E402
from preset_model.encoding import get_encoding  # noqa: E402
from preset_model.errors import CheckpointError, DataError, PresetModelError  # noqa: E402
from preset_model.model import model_config  # noqa: E402
from preset_model.train import TrainConfig, fit  # noqa: E402

torch.set_num_threads(1)
# no dropout: DDP ranks draw their own dropout masks, so "G ranks train like one process" holds without it
TINY = model_config("tiny", encoding="numcat", notes=6, dropout=0.0, head_dropout=0.0)
FAST = TrainConfig(epochs=2, batch_size=8, workers=0, beta_warmup_epochs=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "dataset.h5", n=60, failed=(1, 5), silent=(2,))


def test_fit_writes_a_complete_run_folder(dataset, tmp_path):
    out = tmp_path / "run"
    result = fit(dataset, out, TINY, FAST, progress=False)
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "metrics.csv", "split.json"}
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,step,beta")
    header = rows[0].split(",")
    assert {"valid_param", "train_minutes", "loader_share", "lr"} <= set(header)
    assert all(0 <= float(r.split(",")[header.index("loader_share")]) <= 1 for r in rows[1:])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["model_config"]["encoding"] == "numcat"
    assert ckpt["dataset"]["n_mels"] == 32 and ckpt["epoch"] + 1 == int(rows[-1].split(",")[0])
    assert ckpt["split"] == json.loads((out / "split.json").read_text())
    model, _ = load_model(out / "best.pt")
    assert not model.training and np.isfinite(result.best_valid)
    # failed (1, 5) and silent (2) presets are in no set; the sets are disjoint and cover the rest
    with h5py.File(dataset) as h5:
        ids = [b.decode() for b in h5["presets/id"][:]]
        mel = h5["mel"][:]
    split = ckpt["split"]
    # the dB bounds are the training split's own (PAPER.md), not the file's (which include the test set)
    train_rows = sorted(ids.index(i) for i in split["train"])
    assert ckpt["mel_bounds"] == [float(mel[train_rows].min()), float(mel[train_rows].max())]
    used = split["train"] + split["valid"] + split["test"]
    assert sorted(used) == sorted(i for r, i in enumerate(ids) if r not in (1, 2, 5))
    assert len(set(used)) == len(used)


def test_resume_gives_the_same_run_as_uninterrupted(dataset, tmp_path):
    cfg = replace(FAST, epochs=3)
    fit(dataset, tmp_path / "straight", TINY, cfg, progress=False)
    fit(dataset, tmp_path / "resumed", TINY, replace(cfg, epochs=2), progress=False)   # "interrupted" after epoch 2
    fit(dataset, tmp_path / "resumed", None, replace(cfg, workers=1), resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("straight", "resumed"))
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines() for run in ("straight", "resumed")]
    last = [r[-1].split(",") for r in rows]
    assert len(rows[0]) == len(rows[1]) == 4
    assert last[0][:16] == last[1][:16]  # every loss term of the epoch after the interruption, to the digit


def test_a_resume_refuses_a_metrics_file_cut_short_and_says_when_nothing_is_trained(dataset, tmp_path, capsys):
    # audit A11: metrics.csv cut in epoch 1's row (epoch 2's lost) resumed without a word, keeping the cut
    # row and a gap; --resume --epochs 1 on a 2-epoch run said "done (2 epochs)" with nothing trained
    run = tmp_path / "run"
    fit(dataset, run, TINY, replace(FAST, epochs=2), progress=False)
    whole = (run / "metrics.csv").read_bytes()
    lines = whole.splitlines(keepends=True)
    for name, text, said in (
            ("cut", whole[:len(lines[0]) + len(lines[1]) // 2], "the row of epoch 1 does not have the file's columns"),
            ("last lost", lines[0] + lines[1], r"holds epochs 1, but the checkpoint has finished epochs 1 … 2"),
            ("twice", lines[0] + lines[1] + lines[1] + lines[2], r"holds epochs 1, 1 … 2, but")):
        (run / "metrics.csv").write_bytes(text)
        with pytest.raises(CheckpointError, match=said):
            fit(dataset, run, None, replace(FAST, epochs=3), resume=True, progress=False)
        assert (run / "metrics.csv").read_bytes() == text and load_checkpoint(run / "last.pt")["epoch"] == 1
    (run / "metrics.csv").write_bytes(lines[0] + lines[2])   # moved away once: the rows after are consecutive
    fit(dataset, run, None, replace(FAST, epochs=3), resume=True, progress=False)
    assert [r.split(b",")[0] for r in (run / "metrics.csv").read_bytes().splitlines()[1:]] == [b"2", b"3"]
    (run / "metrics.csv").unlink()
    capsys.readouterr()
    fit(dataset, run, None, replace(FAST, epochs=4), resume=True, progress=False)
    assert "metrics.csv holds none of the run's 3 finished epoch(s): it gets the epochs from 4 on" in \
        capsys.readouterr().err
    res = CliRunner().invoke(app, ["fit", "--data", str(dataset), "--out", str(run), "--resume", "--epochs", "2",
                                   "--workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "note: the run already has 4 finished epoch(s), as many as --epochs 2 asks or more: nothing was " \
           "trained" in res.output, res.output


def test_resume_refuses_changed_settings(dataset, tmp_path):
    fit(dataset, tmp_path / "run", TINY, replace(FAST, epochs=1), progress=False)
    with pytest.raises(CheckpointError, match="already holds a run"):
        fit(dataset, tmp_path / "run", TINY, FAST, progress=False)
    with pytest.raises(CheckpointError, match="encoding"):
        fit(dataset, tmp_path / "run", replace(TINY, encoding="num"), FAST, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="lr"):
        fit(dataset, tmp_path / "run", None, replace(FAST, lr=1.0), resume=True, progress=False)


def test_other_schema_hash_is_refused(dataset, tmp_path):
    other = write_synthetic_dataset(tmp_path / "other.h5", n=60, schema_hash="0123456789abcdef")
    with pytest.raises(DataError, match="schema 0123456789abcdef"):
        fit(other, tmp_path / "fresh", TINY, FAST, progress=False)
    fit(dataset, tmp_path / "run", TINY, replace(FAST, epochs=1), progress=False)
    with pytest.raises(CheckpointError, match="dataset has parameter schema 0123456789abcdef.*checkpoint"):
        fit(other, tmp_path / "run", None, FAST, resume=True, progress=False)


def test_split_is_deterministic_by_id():
    ids = [f"{i * 7919:016x}" for i in range(2000)]
    a = split_ids(ids, fold=2)
    b = split_ids(ids[::-1] + [], fold=2)
    assert a == b
    assert abs(len(a.test) / 2000 - 0.2) < 0.03 and abs(len(a.valid) / 2000 - 0.16) < 0.03
    assert split_ids(ids[:1000], fold=2).test == tuple(i for i in a.test if i in set(ids[:1000]))
    folds = [set(split_ids(ids, fold=k).valid) for k in range(5)]
    assert set().union(*folds) == set(ids) - set(a.test) and sum(map(len, folds)) == 2000 - len(a.test)
    grouped = split_ids(ids, fold=0, groups=["same"] * 2000)  # one sound group → one set
    assert sum(1 for s in (grouped.train, grouped.valid, grouped.test) if s) == 1
    with pytest.raises(DataError, match="fold"):
        split_ids(ids, fold=5)


def test_dataset_items_scale_and_mask(dataset):
    train6, _, _, _ = make_datasets(dataset, "numcat++", 6)
    train1, _, _, _ = make_datasets(dataset, "numcat++", 1)
    mel, target, mask = train6[0]
    assert mel.shape == (6, 32, 32) and mel.dtype == torch.float32 and -1 <= mel.min() and mel.max() <= 1
    assert train1[0][0].shape == (1, 32, 32) and train1.note_index == (3,)  # (60, 85)
    row = train6.rows[0]
    with h5py.File(dataset) as h5:
        db = h5["mel"][row].astype(np.float32)
        audible = h5["audible"][row]
    lo, hi = train6.bounds   # the training split's dB range maps to [-1, 1]
    np.testing.assert_allclose(mel.numpy(), np.clip((db - lo) / (hi - lo) * 2 - 1, -1, 1), atol=1e-6)
    in_ram, _, _, _ = make_datasets(dataset, "numcat++", 6, in_memory=True, mel_bounds=(lo, hi))
    assert in_ram.mel_db is not None
    torch.testing.assert_close(in_ram[0][0], mel)   # RAM and file give the same items
    ops = get_encoding("numcat++").element_operator  # 0 = global, 1–6 = OP1–OP6
    torch.testing.assert_close(mask, torch.from_numpy(np.concatenate([[1.0], audible.any(0)])[ops]).float())
    torch.testing.assert_close(train1[0][2], torch.from_numpy(np.concatenate([[1.0], audible[3]])[ops]).float())


def test_cli_fit(dataset, tmp_path):
    out = tmp_path / "cli"
    args = ["fit", "--data", str(dataset), "--out", str(out), "--size", "tiny", "--encoding", "num",
            "--head", "mlp", "--notes", "1", "--epochs", "1", "--batch-size", "16", "--workers", "0", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "best validation parameter loss" in res.output
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["model_config"]["head"], ckpt["model_config"]["notes"], ckpt["train_config"]["batch_size"]) == ("mlp", 1, 16)
    res = CliRunner().invoke(app, ["fit", "--data", str(dataset), "--out", str(out), "--epochs", "2", "--resume",
                                   "--workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_cli_fit_notes_default_to_the_datasets(tmp_path):
    """Without --notes a dataset rendered on 60:85 alone trains a one-note model (it asked for --notes 1)."""
    one = write_synthetic_dataset(tmp_path / "one.h5", n=24, notes=((60, 85),))
    args = ["fit", "--data", str(one), "--out", str(tmp_path / "run"), "--size", "tiny", "--epochs", "1",
            "--batch-size", "8", "--max-steps", "1", "--workers", "0", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "run" / "last.pt")["model_config"]["notes"] == 1
    res = CliRunner().invoke(app, [*args[:4], str(tmp_path / "six"), *args[5:], "--notes", "6"])
    assert res.exit_code != 0 and "--notes 1" in res.output   # asked for, still refused with what to pass


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, epochs: int, resume: bool,
                weights: str) -> None:
    """One torchrun-like rank: fit (or resume) ``out``, save this rank's weights as ``weights/rankR.pt``
    and the checkpoint paths this rank wrote as ``weights/saves-rankR.txt``."""
    import os

    import preset_model.train as train

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    saves, save = [], train.save_checkpoint
    train.save_checkpoint = lambda path, state: (saves.append(Path(path).name), save(path, state))[1]
    result = fit(data, out, None if resume else TINY, replace(FAST, epochs=epochs, device="cpu"),
                 resume=resume, progress=False)
    torch.save(result.model.state_dict(), Path(weights) / f"rank{rank}.pt")
    (Path(weights) / f"saves-rank{rank}.txt").write_text("\n".join(saves))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_on_2_ranks(data: Path, out: Path, weights: Path, epochs: int, resume: bool = False):
    """Train (or resume) ``out`` on 2 gloo processes: each rank's weights, and the checkpoints each rank wrote."""
    weights.mkdir(parents=True, exist_ok=True)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(data), str(out), epochs, resume, str(weights)),
             nprocs=2, join=True)
    return ([torch.load(weights / f"rank{r}.pt", weights_only=True) for r in (0, 1)],
            [(weights / f"saves-rank{r}.txt").read_text().split() for r in (0, 1)])


@pytest.fixture(scope="module")
def even_dataset(tmp_path_factory) -> Path:
    """A dataset with an even training set: 2 ranks hold equal halves, no sample repeated as padding."""
    folder = tmp_path_factory.mktemp("even")
    for n in range(60, 70):
        path = write_synthetic_dataset(folder / f"dataset{n}.h5", n=n, failed=(1, 5), silent=(2,))
        if len(make_datasets(path, "numcat", 6)[0]) % 2 == 0:
            return path
    raise AssertionError("no n in 60-69 gives an even training set")


def _biases_before_batch_norm(model: torch.nn.Module) -> set[str]:
    """Biases of convolutions followed by a batch norm, and the running means that include them.

    Their gradient is zero up to rounding (the batch norm subtracts the batch mean), and Adam
    turns rounding noise into steps of ±lr: they differ between any two summation orders.
    """
    names = set()
    for prefix, m in model.named_modules():
        children = list(m.named_children()) if isinstance(m, torch.nn.Sequential) else []
        for (a, conv), (b, bn) in zip(children, children[1:]):
            if isinstance(conv, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(bn, torch.nn.BatchNorm2d):
                names |= {f"{prefix}.{a}.bias", f"{prefix}.{b}.running_mean"}
    return names


def _assert_close_to_one_process(w: dict, one: torch.nn.Module, steps: int) -> None:
    """DDP weights ``w`` equal one process's within float tolerance (see :func:`_biases_before_batch_norm`)."""
    rounding_driven = _biases_before_batch_norm(one)
    assert rounding_driven
    for k, v in one.state_dict().items():
        if k in rounding_driven:
            torch.testing.assert_close(w[k], v, rtol=0, atol=2 * FAST.lr * steps, msg=lambda m, k=k: f"{k}: {m}")
        else:
            # Adam turns a gradient that is rounding noise into a step of ±lr: the odd element whose
            # gradient is ~0 may differ by up to that (bounded below), every other one is tight.
            torch.testing.assert_close(w[k], v, rtol=0, atol=2 * FAST.lr * steps, msg=lambda m, k=k: f"{k}: {m}")
            close = torch.isclose(w[k].float(), v.float(), rtol=1e-3, atol=3e-5)
            assert close.float().mean() >= 0.999, f"{k}: {int((~close).sum())} of {close.numel()} elements differ"


@pytest.fixture(scope="module")
def one_process_run(even_dataset, tmp_path_factory) -> Path:
    """One epoch on one process with the global batch of the DDP runs."""
    out = tmp_path_factory.mktemp("one") / "run"
    fit(even_dataset, out, TINY, replace(FAST, epochs=1, device="cpu"), progress=False)
    return out


@pytest.fixture(scope="module")
def two_rank_run(even_dataset, tmp_path_factory):
    """One epoch on 2 gloo processes: (run folder, each rank's weights, checkpoints each rank wrote)."""
    folder = tmp_path_factory.mktemp("ddp")
    weights, saves = _fit_on_2_ranks(even_dataset, folder / "run", folder / "weights", epochs=1)
    return folder / "run", weights, saves


def test_ddp_two_gloo_processes_hold_identical_weights(two_rank_run, one_process_run):
    out, (w0, w1), saves = two_rank_run
    start = load_checkpoint(out / "last.pt")
    per_rank = -(-len(start["split"]["train"]) // 2)  # DistributedSampler pads to equal shards
    assert start["step"] == -(-per_rank // 4)          # global batch 8 = 4 per rank
    assert saves == [["best.pt", "last.pt"], []]        # checkpoints are written by rank 0 only (last.pt last)
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    for k in start["model"]:  # rank 0's checkpoint is the weights both ranks hold
        torch.testing.assert_close(start["model"][k], w0[k], rtol=0, atol=0, msg=k)

    # ... and the weights of one process trained on the same global batches (batch norm over the
    # global batch, each sample's own latent noise, masked means over the global batch)
    one, _ = load_model(one_process_run / "last.pt")
    assert load_checkpoint(one_process_run / "last.pt")["step"] == start["step"]
    _assert_close_to_one_process(w0, one, start["step"])


def test_ddp_checkpoint_resumes_on_another_number_of_ranks(even_dataset, two_rank_run, one_process_run, tmp_path):
    # reference: one process, 2 epochs (a 1-process resume equals an uninterrupted run, tested above)
    shutil.copytree(one_process_run, tmp_path / "straight")
    straight = fit(even_dataset, tmp_path / "straight", None, replace(FAST, epochs=2, device="cpu"), resume=True,
                   progress=False).model
    steps = load_checkpoint(tmp_path / "straight" / "last.pt")["step"]

    # 2 ranks → 1 process
    shutil.copytree(two_rank_run[0], tmp_path / "shrunk")
    shrunk = fit(even_dataset, tmp_path / "shrunk", None, replace(FAST, epochs=2, device="cpu"), resume=True,
                 progress=False).model
    assert load_checkpoint(tmp_path / "shrunk" / "last.pt")["step"] == steps
    _assert_close_to_one_process(shrunk.state_dict(), straight, steps)

    # 1 process → 2 ranks
    shutil.copytree(one_process_run, tmp_path / "grown")
    (w0, w1), saves = _fit_on_2_ranks(even_dataset, tmp_path / "grown", tmp_path / "weights", epochs=2, resume=True)
    assert saves[1] == [] and "last.pt" in saves[0]
    ckpt = load_checkpoint(tmp_path / "grown" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, steps)
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    _assert_close_to_one_process(w0, straight, steps)
    assert len((tmp_path / "grown" / "metrics.csv").read_text().splitlines()) == 3


def test_warmup_and_plateau_follow_their_config(dataset, tmp_path):
    """metrics.csv's lr column is lr × warm-up factor × the plateau rule replayed on valid_param."""
    import csv

    from preset_model.train import Plateau, lr_at

    cfg = replace(FAST, epochs=6, lr=1e-3, warmup_epochs=3, warmup_start=0.25, plateau_patience=0,
                  plateau_cooldown=0, plateau_factor=0.5)
    fit(dataset, tmp_path / "run", TINY, cfg, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["lr"]) for r in rows[:3]] == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    plateau = Plateau()
    for e, r in enumerate(rows):
        assert float(r["lr"]) == pytest.approx(lr_at(cfg, e, plateau))
        if e + 1 >= cfg.warmup_epochs:
            plateau.step(float(r["valid_param"]), cfg)
    # best.pt is the epoch with the lowest validation parameter loss
    best = min(range(len(rows)), key=lambda e: float(rows[e]["valid_param"]))
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == best


def test_final_anneal_follows_its_config(dataset, tmp_path):
    """With anneal_fraction, each step's lr is the warm-up/plateau lr × a half cosine over the last
    part of the run: metrics.csv's lr (the epoch's last step) follows anneal_factor exactly."""
    import csv

    from preset_model.train import anneal_factor

    cfg = replace(FAST, epochs=4, lr=1e-3, max_steps=2, warmup_epochs=0, plateau_patience=100, anneal_fraction=0.5)
    fit(dataset, tmp_path / "run", TINY, cfg, progress=False)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))]
    expected = [1e-3 * anneal_factor(cfg, (e + 0.5) / 4) for e in range(4)]      # last of 2 steps: i = 1
    assert lrs == pytest.approx(expected) and lrs[:2] == pytest.approx([1e-3, 1e-3])
    assert lrs[2] < 1e-3 and 0 < lrs[3] < lrs[2]
    assert anneal_factor(cfg, 1.0) == 0.0 and anneal_factor(replace(cfg, anneal_fraction=0.0), 0.99) == 1.0


def test_max_minutes_stops_checkpoints_and_resumes(dataset, tmp_path):
    cfg = replace(FAST, epochs=50, max_minutes=1e-4)       # 6 ms: spent within the first step
    result = fit(dataset, tmp_path / "run", TINY, cfg, progress=False)
    assert result.out_of_time and result.epoch == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] == 1 and ckpt["train_seconds"] >= 6e-3
    again = fit(dataset, tmp_path / "run", None, cfg, resume=True, progress=False)     # budget spent: no more steps
    assert again.out_of_time and load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1
    more = fit(dataset, tmp_path / "run", None, replace(cfg, max_minutes=None, epochs=2), resume=True, progress=False)
    assert not more.out_of_time and load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_training_settings_are_validated():
    from preset_model.errors import PresetModelError

    for bad in (dict(batch_size=0), dict(lr=-1.0), dict(lr=float("nan")), dict(epochs=0), dict(workers=-1),
                dict(max_minutes=0.0), dict(warmup_start=0.0), dict(anneal_fraction=1.5)):
        with pytest.raises(PresetModelError, match="out of range"):
            TrainConfig(**bad)
    # each bad option with its own rule (the message listed every rule but that one's)
    for bad, said in ((dict(weight_decay=-1.0), "--weight-decay -1.0 (must be finite, ≥ 0)"),
                      (dict(warmup_epochs=-1), "--warmup-epochs -1 (must be ≥ 0)"),
                      (dict(batch_size=1), "--batch-size 1 (must be ≥ 2)")):
        with pytest.raises(PresetModelError) as info:
            TrainConfig(**bad)
        assert str(info.value) == f"out of range: {said}"


def test_fit_says_when_the_test_split_is_empty_and_why_data_is_too_small(tmp_path):
    from preset_model.data import read_usable

    for n in range(3, 12):                 # a small dataset whose split (by id hash) has no test preset
        small = write_synthetic_dataset(tmp_path / f"small{n}.h5", n=n, failed=(), silent=())
        ids, usable, keys = read_usable(small)
        splits = [split_ids([ids[r] for r in usable], f, groups=[keys[r] for r in usable]) for f in range(5)]
        good = [f for f, sp in enumerate(splits) if sp.train and sp.valid]
        bad = [f for f, sp in enumerate(splits) if not sp.valid]
        if not splits[0].test and good and bad:
            break
    else:
        pytest.fail("no small synthetic dataset without a test split")
    result = fit(small, tmp_path / "run", TINY, replace(FAST, epochs=1, fold=good[0]), progress=False)
    assert json.loads((tmp_path / "run" / "split.json").read_text())["test"] == [] and result.split_sizes[2] == 0
    res = CliRunner().invoke(app, ["fit", "--data", str(small), "--out", str(tmp_path / "cli"), "--size", "tiny",
                                   "--epochs", "1", "--fold", str(good[0]), "--workers", "0", "--no-progress"])
    assert res.exit_code == 0 and "note: the test split is empty" in res.output, res.output
    hint = f"--fold {' or '.join(map(str, good))} leaves some for both"
    with pytest.raises(DataError, match=rf"{n} usable of {n}, in {n} near-copy group\(s\).*0 for validation fold "
                                        rf"{bad[0]}.*{hint}"):
        fit(small, tmp_path / "run2", TINY, replace(FAST, epochs=1, fold=bad[0]), progress=False)
    tiny = write_synthetic_dataset(tmp_path / "tiny.h5", n=3, failed=(1,), silent=(2,))
    with pytest.raises(DataError, match=r"1 usable of 3 \(1 failed, 1 silent left out\).*render more presets"):
        fit(tiny, tmp_path / "run3", TINY, replace(FAST, epochs=1), progress=False)


def test_keep_duplicates_is_suggested_only_where_it_leaves_enough(tmp_path):
    # presets that all sound the same are one near-copy group: --keep-duplicates was suggested, and
    # fit then failed again (audit Z16)
    import h5py

    for same in (True, False):
        data = write_synthetic_dataset(tmp_path / f"d{same}.h5", n=12, failed=(), silent=())
        with h5py.File(data, "r+") as h5:
            h5["duplicate_of"] = np.array([-1] + [0] * 11, np.int32)      # all duplicates of the first
            prints = np.zeros((12, 16), np.uint8) if same else np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
            h5["near_fingerprint"] = prints
        with pytest.raises(DataError) as err:
            fit(data, tmp_path / f"run{same}", TINY, replace(FAST, epochs=1), progress=False)
        assert "1 usable of 12 (11 duplicates by sound left out)" in str(err.value)
        assert ("--keep-duplicates" in str(err.value)) is (not same), str(err.value)


def test_ddp_training_losses_are_the_global_batchs(two_rank_run, one_process_run):
    # metrics.csv's train_* columns of 2 ranks are those of the global batch, as one process's (they
    # were rank 0's share: train_cat 8.21 against 9.00 in an audit)
    import csv

    out, _, _ = two_rank_run
    ddp = next(csv.DictReader(open(out / "metrics.csv")))
    one = next(csv.DictReader(open(one_process_run / "metrics.csv")))
    for k in ("train_loss", "train_rec", "train_num", "train_cat"):
        assert float(ddp[k]) == pytest.approx(float(one[k]), rel=1e-3), k


def test_a_plain_resume_keeps_the_runs_length_and_budget(dataset, tmp_path):
    # --resume without --epochs/--max-steps/--max-minutes keeps the checkpoint's (it reset --epochs
    # to 400 and dropped the other two)
    out = tmp_path / "run"
    common = ["--data", str(dataset), "--out", str(out), "--workers", "0", "--no-progress"]
    res = CliRunner().invoke(app, ["fit", *common, "--size", "tiny", "--encoding", "num", "--head", "mlp", "--notes",
                                   "1", "--epochs", "1", "--batch-size", "16", "--max-steps", "1",
                                   "--max-minutes", "30"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["fit", *common, "--resume", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    saved = load_checkpoint(out / "last.pt")
    assert saved["epoch"] == 1 and saved["train_config"]["max_steps"] == 1
    assert saved["train_config"]["max_minutes"] == 30 and saved["train_config"]["epochs"] == 2
    res = CliRunner().invoke(app, ["fit", *common, "--resume"])
    assert res.exit_code == 0 and "done (2 epochs)" in res.output, res.output
    assert load_checkpoint(out / "last.pt")["epoch"] == 1                 # nothing left to train


def _worker_made_a_folder_then_got_sigterm(tmp: str, inherit: bool, report) -> None:
    import multiprocessing.util
    import os
    import signal
    import tempfile

    from preset_model.train import _loader_worker

    tempfile.tempdir = tmp
    if inherit:                                   # the main process's folder, from before the fork
        multiprocessing.util.get_temp_dir()
    _loader_worker(0)
    report.send(multiprocessing.util.get_temp_dir())   # as the resource sharer makes it to send a batch
    report.close()
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("inherit", [False, True])
def test_a_loading_worker_ended_by_sigterm_removes_its_own_multiprocessing_folder(tmp_path, inherit):
    # os._exit skips multiprocessing's exit handler: a worker's pymp-* folder stayed in $TMPDIR
    # after a SIGTERM to fit --workers 2 (1 of 5); one it inherited is its parent's, and stays
    ctx = mp.get_context("fork")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_made_a_folder_then_got_sigterm, args=(str(tmp_path), inherit, child_end))
    proc.start()
    folder = Path(parent_end.recv())
    proc.join(30)
    assert proc.exitcode == 0
    assert folder.parent == tmp_path and folder.name.startswith("pymp-")
    assert folder.exists() == inherit


def test_a_diverged_fit_says_to_start_again_with_a_lower_lr(dataset, tmp_path, monkeypatch):
    """The run cannot be resumed with another --lr, so the message says to start a new one (its epoch
    counted from 1, as the progress lines and metrics.csv count)."""
    import preset_model.train as train
    from preset_model.errors import PresetModelError

    real = train.compute_loss

    def diverged(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        return loss * float("nan"), terms

    monkeypatch.setattr(train, "compute_loss", diverged)
    with pytest.raises(PresetModelError, match=r"^epoch 1, step 0: loss is nan .*lower --lr and another --out"):
        fit(dataset, tmp_path / "run", TINY, replace(FAST, epochs=1), progress=False)


def test_a_fit_diverging_on_validation_only_stops_too(dataset, tmp_path, monkeypatch):
    """A NaN validation loss with a finite (huge) training loss ended 'done' with rc 0 and a useless best.pt."""
    import preset_model.train as train
    from preset_model.errors import PresetModelError

    real = train.validation_losses

    def diverged(*args, **kwargs):
        return {k: float("nan") for k in real(*args, **kwargs)}

    monkeypatch.setattr(train, "validation_losses", diverged)
    with pytest.raises(PresetModelError, match=r"^epoch 1: validation loss is nan .*lower --lr and another --out"):
        fit(dataset, tmp_path / "run", TINY, replace(FAST, epochs=1), progress=False)


def test_read_mels_keeps_the_order_of_rows_given_in_any_order(tmp_path):
    # SpectrogramDataset(in_memory=True) read rows [5, 2, 9] as if ascending: item 1 got row 7's spectrogram
    import h5py

    from preset_model.data import read_mels

    path = tmp_path / "m.h5"
    mel = np.arange(12 * 2 * 3 * 4, dtype=np.float16).reshape(12, 2, 3, 4)
    with h5py.File(path, "w") as f:
        f["mel"] = mel
    for rows in ([5, 2, 9], [5, 2, 9, 0], [3, 3, 1], [0, 1, 11]):
        assert np.array_equal(read_mels(path, rows, [1], block=2), mel[rows][:, [1]]), rows


def test_spectrogram_dataset_refuses_bad_rows_and_a_file_replaced_under_it(dataset, tmp_path):
    # audit P4/P5: a raw IndexError / KeyError for bad rows or a file without /mel, and a file replaced
    # after the dataset was made was read on, its spectrograms paired with the old file's targets
    from preset_model.data import SpectrogramDataset

    notes, bounds = (0,), (-120.0, 0.0)
    for rows, said in (([0, 999], "row 999 is out of range; this dataset has 60 rows"),
                       ([-1], "row -1 is out of range"), ([0.5], "whole row numbers")):
        with pytest.raises(DataError, match=said):
            SpectrogramDataset(dataset, rows, "num", notes, bounds)
    with pytest.raises(DataError, match="notes \\[7\\]"):
        SpectrogramDataset(dataset, [0], "num", (7,), bounds)
    copy = tmp_path / "copy.h5"
    shutil.copy(dataset, copy)
    with h5py.File(copy, "r+") as f:
        del f["mel"]
    with pytest.raises(DataError, match="missing /mel"):
        SpectrogramDataset(copy, [0], "num", notes, bounds)
    shutil.copy(dataset, copy)
    ds = SpectrogramDataset(copy, [0, 3], "num", notes, bounds)
    shutil.copy(dataset, tmp_path / "other.h5")
    (tmp_path / "other.h5").replace(copy)                    # replaced before the first item is read
    with pytest.raises(DataError, match="was replaced or removed while it was being read"):
        ds[0]
    ds = SpectrogramDataset(copy, [0, 3], "num", notes, bounds)
    assert ds[1][0].shape[0] == 1 and len(ds) == 2


def test_an_epochs_files_are_written_together_and_a_kept_run_is_never_replaced(dataset, tmp_path, monkeypatch):
    # audit X: metrics.csv, best.pt and last.pt were written one by one: a kill while last.pt was written
    # left best.pt at an epoch that the resumed run redid differently (a model nothing else recorded)
    import preset_model.train as train

    out = tmp_path / "run"
    fit(dataset, out, TINY, replace(FAST, epochs=1, max_steps=1), progress=False)
    before = {name: (out / name).read_bytes() for name in ("metrics.csv", "best.pt", "last.pt")}
    real = train.save_checkpoint

    def stopped_at_last(path, state):
        if Path(path).name == "last.pt":
            raise KeyboardInterrupt                      # SIGTERM while last.pt is written
        real(path, state)

    monkeypatch.setattr(train, "save_checkpoint", stopped_at_last)
    with pytest.raises(KeyboardInterrupt):
        fit(dataset, out, None, replace(FAST, epochs=2, max_steps=1), resume=True, progress=False)
    assert {name: (out / name).read_bytes() for name in before} == before      # none of the epoch's files
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    monkeypatch.undo()
    # a finished run kept without last.pt (to save space) was trained over, best.pt and metrics.csv replaced
    (out / "last.pt").unlink()
    with pytest.raises(CheckpointError, match=r"already holds a run \(metrics.csv, best.pt\); pass --resume"):
        fit(dataset, out, TINY, replace(FAST, epochs=1, max_steps=1), progress=False)
    assert (out / "best.pt").read_bytes() == before["best.pt"]


def test_metrics_of_a_cuda_run_resumed_on_cpu_and_a_csv_saved_by_a_spreadsheet(tmp_path):
    from preset_model.train import _read_csv, _write_csv

    path = tmp_path / "metrics.csv"
    _write_csv(path, [{"epoch": 1, "loss": 0.5, "gpu_utilisation": 0.9}, {"epoch": 2, "loss": 0.4}])   # CUDA, then CPU
    assert path.read_text().splitlines() == ["epoch,loss,gpu_utilisation", "1,0.5,0.9", "2,0.4,"]
    path.write_text("\ufeffepoch,loss\n1.0,0.5\n2,0.4\n3,0.3\n", encoding="utf-8")      # BOM, "1.0"
    assert [r["loss"] for r in _read_csv(path, 2)] == ["0.5", "0.4"]
    path.write_text("when,loss\nyesterday,0.5\n")
    with pytest.raises(CheckpointError, match="metrics.csv: cannot read its epochs"):
        _read_csv(path, 2)


def test_a_plain_resume_keeps_the_runs_amp_and_a_size_is_compared(dataset, tmp_path):
    # audit X: a --no-amp run's plain --resume was refused (amp: saved False, asked True), and
    # --resume --size paper (or huge) on a tiny run was ignored
    out = tmp_path / "run"
    common = ["--data", str(dataset), "--out", str(out), "--workers", "0", "--no-progress", "--max-steps", "1",
              "--batch-size", "8"]
    res = CliRunner().invoke(app, ["fit", *common, "--size", "tiny", "--epochs", "1", "--no-amp"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["fit", *common, "--epochs", "2", "--resume"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "last.pt")["train_config"]["amp"] is False
    res = CliRunner().invoke(app, ["fit", *common, "--epochs", "3", "--resume", "--size", "paper"])
    assert res.exit_code == 2 and "this run's model has another size (channels" in res.output, res.output
    named = " ".join(res.output.split()).split("another size (")[1].split(" differ)")[0].split(", ")
    assert len(named) == len(set(named)), named                          # each field once
    res = CliRunner().invoke(app, ["fit", *common, "--epochs", "3", "--resume", "--size", "huge"])
    assert res.exit_code == 2 and "--size 'huge'" in res.output, res.output
    res = CliRunner().invoke(app, ["fit", *common, "--epochs", "3", "--resume", "--size", "tiny"])
    assert res.exit_code == 0, res.output
    # audit A3: on the CPU (where --amp does nothing) --amp or --no-amp on a resume was refused; the run's is kept
    res = CliRunner().invoke(app, ["fit", *common, "--epochs", "4", "--resume", "--amp", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out / "last.pt")["train_config"]["amp"] is False


def test_under_torchrun_errors_are_marked_by_rank_and_a_lost_peer_is_one_line(monkeypatch, capsys):
    # every rank printed the same error unmarked, and a rank whose peer died a 200-line gloo traceback
    import typer

    from preset_model.cli import _plain

    def peer_gone():
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [::1]:5")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(typer.Exit):
        _plain(peer_gone)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: [rank 1] another process of this torchrun job stopped")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(typer.Exit):
        _plain(lambda: (_ for _ in ()).throw(PresetModelError("--batch-size 7 is not divisible by the 2 processes")))
    assert capsys.readouterr().err == "error: --batch-size 7 is not divisible by the 2 processes\n"
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(RuntimeError, match="Connection closed"):   # one process: not a torchrun peer, raised as is
        _plain(peer_gone)
    # audit A1: raised in a DataLoader worker, our error came back as the worker's whole traceback
    worker = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                       '  File "worker.py", line 374, in _worker_loop\n    data = fetcher.fetch(index)\n'
                       "preset_model.errors.DataError: d.h5 was replaced or removed while it was being read (another "
                       "command wrote it)\n")
    with pytest.raises(typer.Exit):
        _plain(lambda: (_ for _ in ()).throw(worker))
    assert capsys.readouterr().err == ("error: d.h5 was replaced or removed while it was being read (another command "
                                       "wrote it)\n")

    class TerminatedWorkerError(RuntimeError):   # loky's: a render worker killed from outside (R1: a traceback)
        pass

    with pytest.raises(typer.Exit):
        _plain(lambda: (_ for _ in ()).throw(TerminatedWorkerError("The exit codes of the workers are {SIGKILL(-9)}")))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: a worker process was killed (SIGKILL) while it was needed; "
                                                    "run the same command again")


def test_the_wait_for_peers_keeps_a_signal_started_ignored():
    # nohup (SIGHUP) and a script's `cmd &` (SIGINT) start a fit with the signal ignored: closing the
    # terminal must not end a rank while it waits for its peers (audit Z15)
    import signal

    from preset_model.train import _signals_end_process

    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *a: None)
        with _signals_end_process():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_a_rank_waiting_for_its_peers_ends_on_sigterm(tmp_path):
    # torch waits for the other ranks in its own loop, where the command's Python handlers never run:
    # `timeout`'s SIGTERM left the fit running (seen for 10 minutes, until SIGKILL)
    import os
    import signal
    import subprocess
    import sys
    import time

    from model_fixtures import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "d.h5", n=24)
    env = dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="nonexistent.invalid",
               MASTER_PORT="29999", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "preset_model", "fit", "--data", str(data), "--out",
                             str(tmp_path / "r"), "--size", "tiny", "--device", "cpu", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(8)                                     # imports, checks, then the wait for rank 1
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "r" / "last.pt").exists()
