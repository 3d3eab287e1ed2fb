"""Training: the loss and :func:`fit`, one loop to read top to bottom.

Run folder (``out``)::

    last.pt       checkpoint after every epoch (resume from it)
    best.pt       checkpoint of the epoch with the lowest validation parameter loss (num + 0.2·cat)
    metrics.csv   one row per epoch (numbered from 1): train and validation loss terms, β, lr, samples/s,
                  the share of the epoch's time spent waiting for the data loader, GPU utilisation (CUDA)
    split.json    the train / validation / test preset ids
    tensorboard/  the same metrics, if the ``tensorboard`` package is installed

Distributed: launched under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), :func:`fit`
joins the process group (``nccl`` on CUDA, ``gloo`` on CPU), shards batches with a
``DistributedSampler`` and wraps the model in ``DistributedDataParallel``; ``batch_size`` is the
global batch, split across ranks; only rank 0 writes files. G ranks train like one process on the
same global batches (up to float rounding): batch norms use the global batch's statistics
(:class:`GlobalBatchNorm2d`, ``SyncBatchNorm`` on CUDA), each sample gets the latent noise one
process would draw for it, and the masked loss means divide by the global count.

Example::

    >>> from preset_model.model import model_config
    >>> from preset_model.train import TrainConfig, fit
    >>> fit("dataset.h5", "runs/tiny", model_config("tiny"), TrainConfig(epochs=2))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import multiprocessing.process
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dexed_data.console import progress as progress_bar

from .checkpoint import check_dataset_schema, load_checkpoint, save_checkpoint
from .data import Split, make_datasets, read_info
from .errors import CheckpointError, PresetModelError
from .model import ModelConfig, ModelOutput, PresetModel

TERMS = ("loss", "rec", "kl", "logdet", "num", "cat")
#: Losses of the numerical parameters (``TrainConfig.numerical_loss``, ``fit --num-loss``).
NUMERICAL_LOSSES = ("mse", "l1")
#: What the terms mean (printed by ``fit``, columns of metrics.csv as ``train_*`` / ``valid_*``):
TERM_HELP = {
    "loss": "the total training loss: rec + beta*(kl - logdet) + num + cat_weight*cat",
    "rec": "spectrogram reconstruction MSE (model-input scale, [-1, 1])",
    "kl": "log q(z0|x) - log p(zK) per latent dimension (one sample; z0 = mu in validation)",
    "logdet": "the latent flow's log-determinant per latent dimension (kl - logdet is the KL to the prior)",
    "num": "MSE (--num-loss l1: mean absolute error) of the numerical parameters (fractions of their ranges), "
           "audible operators only",
    "cat": "cross-entropy of the categorical parameters, audible operators only",
    "param": "num + cat_weight*cat: the validation parameter loss that selects best.pt and drives the LR plateau",
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the paper's.

    Attributes:
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: global batch (divided among DDP ranks).
        lr: Adam learning rate.
        fold: validation fold, 0–4 (20 % of presets are the test set, never used here).
        beta_start, beta, beta_warmup_epochs: β rises linearly from ``beta_start`` to ``beta``
            over the first ``beta_warmup_epochs`` epochs.
        categorical_weight: weight of the categorical cross-entropy (paper: 0.2).
        numerical_loss: ``"mse"`` (the paper's) or ``"l1"``: the loss of the numerical outputs.
            L1 is minimised by the median of what a sound leaves undetermined, the mean absolute
            error's own optimum, where MSE is minimised by the mean.
        seed: seeds the model init, the shuffling and the latent noise.
        workers: DataLoader worker processes per rank.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        amp: mixed precision (bf16, or fp16 with loss scaling) on CUDA; ignored on CPU.
        max_steps: stop each epoch after this many batches (short epochs for CPU runs and smoke
            runs: each epoch then sees a fresh random part of the training set); None = all.
        keep_duplicates: also train on presets whose audio equals an earlier preset's
            (``/duplicate_of`` of the dataset); they are left out by default.
        weight_decay: Adam's L2 weight decay (the reference code's 1e-4).
        warmup_epochs, warmup_start: the learning rate rises linearly from ``warmup_start × lr``
            at epoch 0 to ``lr`` at epoch ``warmup_epochs`` (the reference code: 6 epochs from 0.1×).
        plateau_factor, plateau_patience, plateau_cooldown: after the warm-up, the learning rate
            is multiplied by ``plateau_factor`` when the validation parameter loss has not improved
            (by 1e-4 relative) for more than ``plateau_patience`` epochs, then left alone for
            ``plateau_cooldown`` epochs (torch's ReduceLROnPlateau rule; reference: 0.2, 6, 6).
        max_minutes: stop when this many minutes of training (summed over resumptions) are spent,
            ending the epoch early, validating and checkpointing it; None = no limit.
        anneal_fraction: over this last fraction of the run (of ``max_minutes`` when it is set,
            else of ``epochs``), the learning rate falls along a half cosine to 0, step by step,
            on top of warm-up and plateau (0 = off, the reference code's recipe). A fixed time
            budget otherwise ends at a high learning rate when the plateau never fires.
        in_memory: hold the spectrograms in RAM (None: when they fit in a quarter of the available
            memory); DataLoader workers are not used then.
    """

    epochs: int = 400
    batch_size: int = 160
    lr: float = 2e-4
    fold: int = 0
    beta_start: float = 0.1
    beta: float = 0.2
    beta_warmup_epochs: int = 25
    categorical_weight: float = 0.2
    numerical_loss: str = "mse"
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: bool = True
    max_steps: int | None = None
    keep_duplicates: bool = False
    weight_decay: float = 1e-4
    warmup_epochs: int = 6
    warmup_start: float = 0.1
    plateau_factor: float = 0.2
    plateau_patience: int = 6
    plateau_cooldown: int = 6
    max_minutes: float | None = None
    anneal_fraction: float = 0.0
    in_memory: bool | None = None

    def __post_init__(self) -> None:
        finite = math.isfinite
        checks = {   # option → (valid, its rule as said when it is not)
            "epochs": (self.epochs >= 1, "≥ 1"), "batch_size": (self.batch_size >= 2, "≥ 2"),
            "lr": (finite(self.lr) and self.lr > 0, "finite, > 0"), "workers": (self.workers >= 0, "≥ 0"),
            "weight_decay": (finite(self.weight_decay) and self.weight_decay >= 0, "finite, ≥ 0"),
            "warmup_epochs": (self.warmup_epochs >= 0, "≥ 0"), "warmup_start": (0 < self.warmup_start <= 1, "in (0, 1]"),
            "plateau_factor": (0 < self.plateau_factor <= 1, "in (0, 1]"),
            "plateau_patience": (self.plateau_patience >= 0, "≥ 0"), "plateau_cooldown": (self.plateau_cooldown >= 0, "≥ 0"),
            "max_minutes": (self.max_minutes is None or (finite(self.max_minutes) and self.max_minutes > 0), "finite, > 0"),
            "max_steps": (self.max_steps is None or self.max_steps >= 1, "≥ 1"),
            "anneal_fraction": (0 <= self.anneal_fraction <= 1, "in [0, 1]"), "fold": (0 <= self.fold < 5, "0 to 4"),
            "beta": (finite(self.beta) and self.beta >= 0, "finite, ≥ 0"),
            "categorical_weight": (finite(self.categorical_weight) and self.categorical_weight >= 0, "finite, ≥ 0"),
            "numerical_loss": (self.numerical_loss in NUMERICAL_LOSSES, " or ".join(NUMERICAL_LOSSES))}
        bad = [k for k, (ok, _) in checks.items() if not ok]
        if bad:
            options = {"anneal_fraction": "anneal", "numerical_loss": "num-loss"}
            raise PresetModelError("out of range: " + "; ".join(
                f"--{options.get(k, k).replace('_', '-')} {getattr(self, k)!r} (must be {checks[k][1]})" for k in bad))

    def warmup_factor(self, epoch: int) -> float:
        """Learning-rate factor of the warm-up at (0-based) ``epoch``: ``warmup_start`` → 1."""
        if epoch >= self.warmup_epochs:
            return 1.0
        return self.warmup_start + (1.0 - self.warmup_start) * epoch / self.warmup_epochs

    def beta_at(self, epoch: int) -> float:
        """β of (0-based) ``epoch``."""
        if epoch >= self.beta_warmup_epochs:
            return self.beta
        return self.beta_start + (self.beta - self.beta_start) * epoch / self.beta_warmup_epochs


@dataclass
class Plateau:
    """The learning-rate plateau rule of :class:`TrainConfig` (torch's ``ReduceLROnPlateau``, mode min,
    relative threshold 1e-4), as plain state that a checkpoint stores.

    Example::

        >>> p = Plateau()
        >>> cfg = TrainConfig(plateau_patience=1, plateau_cooldown=1, plateau_factor=0.5)
        >>> [p.step(v, cfg) for v in (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)]
        [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """

    scale: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0
    cooldown: int = 0

    def step(self, metric: float, cfg: TrainConfig) -> float:
        """Record one epoch's validation ``metric``; returns the new learning-rate scale."""
        if metric < self.best * (1.0 - 1e-4):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown > 0:
            self.cooldown -= 1
            self.bad_epochs = 0
        if self.bad_epochs > cfg.plateau_patience:
            self.scale *= cfg.plateau_factor
            self.cooldown, self.bad_epochs = cfg.plateau_cooldown, 0
        return self.scale


def anneal_factor(cfg: TrainConfig, progress: float) -> float:
    """Learning-rate factor of the final anneal at ``progress`` (0 → 1) through the run: 1 until
    ``1 − anneal_fraction``, then a half cosine down to 0 at the end.

        >>> cfg = TrainConfig(anneal_fraction=0.5)
        >>> [round(anneal_factor(cfg, p), 3) for p in (0.0, 0.5, 0.75, 1.0)]
        [1.0, 1.0, 0.5, 0.0]
    """
    if cfg.anneal_fraction <= 0:
        return 1.0
    t = (progress - (1.0 - cfg.anneal_fraction)) / cfg.anneal_fraction
    return 1.0 if t <= 0 else 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def lr_at(cfg: TrainConfig, epoch: int, plateau: Plateau) -> float:
    """Learning rate of (0-based) ``epoch``: ``lr`` × warm-up factor × plateau scale."""
    return cfg.lr * cfg.warmup_factor(epoch) * plateau.scale


def compute_loss(out: ModelOutput, mel: Tensor, target: Tensor, mask: Tensor, model: PresetModel,
                 beta: float, categorical_weight: float = 0.2, *,
                 global_counts: bool = False, numerical_loss: str = "mse") -> tuple[Tensor, dict[str, Tensor]]:
    """The paper's loss and its terms (detached), for one batch.

    ``loss = rec + β·(kl − logdet) + num + categorical_weight·cat`` where

    * ``rec``: spectrogram MSE (mean over every value);
    * ``kl``: ``log q₀(z₀|x) − log p(z_K)`` (one sample; in eval mode z₀ = μ), ``logdet``: the
      latent flow's Σ log|det|, so that ``kl − logdet`` is KL(q(z_K|x) ‖ N(0, I)); both per latent
      dimension (divided by D) so that β means the same for the three encodings;
    * ``num``: MSE (or with ``numerical_loss="l1"`` the absolute error) of the head's float
      outputs (unclamped) against ``raw / max``;
    * ``cat``: cross-entropy of softmax(u / T) per one-hot group;

    ``num`` and ``cat`` are means over the elements/groups whose ``mask`` is 1 (operators
    audible in at least one input note; global parameters always).

    Args:
        out: the model's output for ``mel`` ``(B, K, mels, frames)``.
        target, mask: ``(B, D)`` encoded presets and loss weights from the dataset.
        global_counts: under DDP, divide the masked sums by the mean count per rank over all
            ranks (not this rank's own), so that the ranks' averaged gradients are those of one
            process on the global batch.
    """
    d = out.mu.shape[1]
    rec = F.mse_loss(out.mel.float(), mel)
    # log q₀(z₀|x) − log p(z_K), one sample; the 2π constants cancel. With − log det it is
    # KL(q(z_K|x) ‖ N(0, I)): the prior is evaluated after the flow, so the flow cannot win by
    # inflating its log-determinant.
    eps = (out.z0 - out.mu) * (-0.5 * out.logvar).exp()
    kl = 0.5 * (out.zk ** 2 - out.logvar - eps ** 2).sum(1).mean() / d
    logdet = out.logdet.mean() / d
    act = model.activation
    w = mask[:, act.float_index]
    diff = out.logits[:, act.float_index] - target[:, act.float_index]
    err = diff.abs() if numerical_loss == "l1" else diff ** 2
    num = (err * w).sum() / _count(w.sum(), global_counts)
    ce_sum, count = out.logits.new_zeros(()), out.logits.new_zeros(())
    for idx, logits in zip(act.group_index, act.group_logits(out.logits)):
        wg = mask[:, idx[:, 0]]                                   # (B, groups of this size)
        ce = F.cross_entropy(logits.transpose(1, 2), target[:, idx].argmax(-1), reduction="none")
        ce_sum, count = ce_sum + (ce * wg).sum(), count + wg.sum()
    cat = ce_sum / _count(count, global_counts)
    loss = rec + beta * (kl - logdet) + num + categorical_weight * cat
    return loss, {k: v.detach() for k, v in zip(TERMS, (loss, rec, kl, logdet, num, cat))}


def _count(count: Tensor, global_counts: bool) -> Tensor:
    """Divisor of a masked mean: this rank's ``count``, or with ``global_counts`` the ranks' mean count."""
    if global_counts and dist.is_initialized() and dist.get_world_size() > 1:
        count = count.detach().clone()
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp_min(1)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of each rank's input is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics cover the global batch of all DDP ranks.

    What ``torch.nn.SyncBatchNorm`` does on GPUs, for CPU (gloo) runs: two differentiable
    all-reduces per layer (sums, then squared deviations). Without them each rank normalises by
    its own slice of the batch, and a run on G processes would not train like one process on the
    same global batch. Outside DDP, or in eval mode, it is a plain ``BatchNorm2d``.

    Example::

        >>> bn = GlobalBatchNorm2d(4)
        >>> bn(torch.randn(8, 4, 3, 3)).shape   # not distributed: plain batch norm
        torch.Size([8, 4, 3, 3])
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        xf = x.float()
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        n = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        dist.all_reduce(n)
        mean = all_reduce(xf.sum(dims)) / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / (n - 1).clamp_min(1), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _global_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch norm of ``model`` use global-batch statistics under DDP (before wrapping it)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d   # same state, only forward differs: parameters stay in place
    return model


def _global_noise(batch: int, dim: int, world: int, rank: int, device: torch.device) -> Tensor:
    """This rank's rows ``(batch, dim)`` of the latent noise one process would draw for the global batch.

    A ``DistributedSampler`` deals the global batch out round-robin (rank r holds global rows
    r, r + G, ...), and every rank draws the same global noise from the same seed.
    """
    return torch.randn(batch * world, dim)[rank::world].to(device)


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained (unwrapped) model, the last finished epoch and the best validation loss."""

    model: PresetModel
    epoch: int
    best_valid: float
    out: Path
    out_of_time: bool = False
    split_sizes: tuple[int, int, int] = (0, 0, 0)   # presets in training, validation, test
    first_epoch: int = 0                            # the first epoch this call trained (0-based; > epoch: none)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def _move(batch, device):
    return [t.to(device, non_blocking=True) for t in batch]


#: What a spectrogram that is not finite means (only a damaged or hand-edited file holds one).
DAMAGED_MEL = ("the dataset's spectrograms hold NaN or infinite values (a damaged file: `dexed-data render` "
               "never writes them); render the dataset again")


@torch.no_grad()
def validation_losses(model, loader, device, beta: float, categorical_weight: float, autocast,
                      numerical_loss: str = "mse") -> dict[str, float]:
    """Mean loss terms over ``loader`` (eval mode, z₀ = μ), summed across DDP ranks."""
    model.eval()
    sums = torch.zeros(len(TERMS) + 1, dtype=torch.float64, device=device)
    for mel, target, mask in loader:
        mel, target, mask = _move((mel, target, mask), device)
        if not torch.isfinite(mel).all():
            raise PresetModelError(f"validation: {DAMAGED_MEL}")
        with autocast:
            out = model(mel)
        _, terms = compute_loss(out, mel, target, mask, _unwrap(model), beta, categorical_weight,
                                numerical_loss=numerical_loss)
        sums += torch.stack([*(terms[k].double() * len(mel) for k in TERMS), torch.tensor(len(mel), device=device)])
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train()
    return {k: (sums[i] / sums[-1]).item() for i, k in enumerate(TERMS)}


def _gpu_utilisation(device: torch.device) -> float:
    """GPU busy percentage over the last sample period (NVML via torch; NaN where unavailable)."""
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # pynvml missing or not an NVIDIA device
        return float("nan")


class _Loader(DataLoader):
    """A DataLoader whose worker processes start with the process group's signals held (blocked):
    they set them in :func:`_loader_worker` before they let them in. An interrupt in the main
    process waits until the workers are started: one raised half-way left an iterator that torch
    could not shut down ("Exception ignored in … __del__", seen once in 20 SIGTERM)."""

    def _get_iterator(self):
        if self.num_workers == 0:
            return super()._get_iterator()
        from dexed_data.console import interrupts_deferred
        from dexed_data.render import group_signals_held

        with interrupts_deferred(), group_signals_held():
            return super()._get_iterator()


#: The main process's multiprocessing folder when a worker started (None: it had none).
_INHERITED_TEMPDIR: str | None = None


def _loader_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the data-loading workers: they leave Ctrl-C and SIGHUP to the main
    process, which stops them, and end quietly on SIGTERM.

    Torch's own SIGTERM handler in a worker exits quietly only when the main process sent the
    signal; one from anyone else (``kill`` or a batch system's time limit to the process group,
    ``timeout``) kills the worker, and torch's SIGCHLD handler in the main process then raised
    "DataLoader worker … is killed by signal: Terminated" in the middle of the interrupt's clean-up:
    a 300-line traceback and exit 1 (6 of 7 SIGTERM to ``fit --workers 2`` after its workers
    started). SIGTERM is not ignored: multiprocessing's exit handler stops a worker left running
    with it (an ignoring worker made fit wait for ever)."""
    import signal

    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    global _INHERITED_TEMPDIR
    _INHERITED_TEMPDIR = multiprocessing.process.current_process()._config.get("tempdir")
    signal.signal(signal.SIGTERM, _end_worker)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _end_worker(signum, frame) -> None:
    """End a data-loading worker on SIGTERM, removing its own ``pymp-*`` folder first (made when it
    sent a batch's shared memory through multiprocessing's resource sharer): ``os._exit`` skips the
    exit handler that removes it, which left it in ``$TMPDIR`` (1 of 5 SIGTERM to ``fit --workers 2``)."""
    tempdir = multiprocessing.process.current_process()._config.get("tempdir")
    if tempdir and tempdir != _INHERITED_TEMPDIR:
        shutil.rmtree(tempdir, ignore_errors=True)
    os._exit(0)


def _stop_loader_workers(*loaders) -> None:
    """Stop the persistent data-loading workers now, also when fit is leaving on an interrupt: an
    iterator kept alive by the traceback's frames left them running, and multiprocessing's exit
    handler then waited for them for ever (a fit that hung after Ctrl-C in its first seconds)."""
    for loader in loaders:
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def _clock(seconds: float, device: torch.device) -> float:
    """Training seconds spent, agreed by the DDP ranks (the latest rank's clock), so that they stop
    together and step with one learning rate; this process's own clock without DDP."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor(seconds, dtype=torch.float64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        seconds = float(flag.item())
    return seconds


def _summed(sums: dict[str, float], done: int, device: torch.device) -> dict[str, float]:
    """Each term's sum over every rank's batches, scaled to ``done`` batches (this rank's count): the
    epoch's training losses of the global batch, not of this rank's share of it; as given without DDP."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return sums
    both = torch.tensor([*sums.values(), float(done)], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    total = float(both[-1].item())
    return {k: float(v) * done / max(total, 1.0) for k, v in zip(sums, both[:-1].tolist())}


def _unwrap(model) -> PresetModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _write_atomic(path: Path, text: str) -> None:
    """Write a run-folder text file whole or not at all (:func:`dexed_data.outputs.write_text`)."""
    from dexed_data.errors import OutputError
    from dexed_data.outputs import write_text

    try:
        write_text(path, text, "run file")
    except OutputError as exc:
        raise CheckpointError(str(exc)) from None


#: The files of a run that record its epochs (written together after each epoch).
RUN_RECORDS = ("metrics.csv", "best.pt", "last.pt")


def _write_csv(path: Path, rows: list[dict]) -> None:
    import io

    buf = io.StringIO()
    # every row's columns: a CUDA run resumed on CPU has rows with and without gpu_utilisation
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
    writer.writeheader()
    writer.writerows([{k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
                      for r in rows])                                 # no value: an empty cell
    _write_atomic(path, buf.getvalue())


def read_render_attrs(path: str | Path) -> dict:
    """How a dataset's audio was made (its attributes), stored in every checkpoint so that a run can
    match and interpolate without its dataset."""
    import h5py

    keys = ("engine", "engine_version", "sample_rate", "hold", "release", "plugin")
    with h5py.File(path, "r") as h5:
        a = h5.attrs
        out = {k: (a[k].item() if hasattr(a[k], "item") else a[k]) for k in keys if k in a}
        out = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in out.items()}
        out["notes"] = [[int(p), int(v)] for p, v in np.asarray(a["notes"])]
        for k in ("mel_config", "fixed_params"):
            if k in a:
                out[k] = json.loads(a[k])
    return out


def _read_csv(path: Path, last_epoch: int) -> list[dict]:
    """Metrics rows of epochs ≤ ``last_epoch`` (1-based; rows after the last checkpoint are dropped on resume)."""
    if not path.is_file():
        if last_epoch > 0:
            _note_no_rows(path, last_epoch)
        return []
    move = ("put back the file fit wrote (a copy edited by another program, or one cut short), or move it away: the "
            "resumed run then writes the epochs from here on only")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:   # -sig: saved by a spreadsheet, with a BOM
            rows = [r for r in csv.DictReader(f) if int(float(r["epoch"])) <= last_epoch]
    except (KeyError, ValueError, TypeError, UnicodeError) as exc:
        raise CheckpointError(f"{path}: cannot read its epochs ({type(exc).__name__}: {exc}); {move}") from None
    # every row whole, and the epochs one after another up to the checkpoint's (a file cut short kept a
    # row cut in the middle and lost the last epochs' rows without a word: audit A11); a file moved away
    # once starts later, which is what it says
    cut = next((r for r in rows if None in r or None in r.values()), None)
    if cut is not None:
        raise CheckpointError(f"{path}: the row of epoch {cut['epoch']} does not have the file's columns; {move}")
    epochs = [int(float(r["epoch"])) for r in rows]
    if epochs and epochs != list(range(epochs[0], last_epoch + 1)):
        raise CheckpointError(f"{path}: holds epochs {_spans(epochs)}, but the checkpoint has finished epochs "
                              f"1 … {last_epoch}; {move}")
    if not rows and last_epoch > 0:
        _note_no_rows(path, last_epoch)
    return rows


def _note_no_rows(path: Path, last_epoch: int) -> None:
    print(f"note: {path} holds none of the run's {last_epoch} finished epoch(s): it gets the epochs from "
          f"{last_epoch + 1} on", file=sys.stderr)


def _spans(epochs: list[int]) -> str:
    """``1, 2, 3, 5`` → ``"1 … 3, 5"``."""
    out, start = [], epochs[0]
    for a, b in zip(epochs, [*epochs[1:], None]):
        if b != a + 1:
            out.append(str(a) if a == start else f"{start} … {a}")
            start = b
    return ", ".join(out)


@contextlib.contextmanager
def _signals_end_process():
    """Let Ctrl-C, SIGTERM and SIGHUP end the process at once inside this block: while torch waits
    for the other ranks to connect (minutes, in its own loop) a Python handler never runs, and the
    command's handlers kept a fit that ``timeout`` had sent SIGTERM running for good. A signal the
    process was started with ignored (``nohup``, a script's ``cmd &``) stays ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    found = {getattr(signal, n): signal.getsignal(getattr(signal, n)) for n in names if hasattr(signal, n)}
    held = {signum: h for signum, h in found.items() if h is not signal.SIG_IGN}   # an ignored one stays so
    for signum in held:
        signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)


#: How long a rank other than 0 waits for rank 0 to finish a killed publish of the run folder (s).
SETTLE_WAIT = 300.0


def settle_run_folder(out: str | Path, rank: int) -> None:
    """Put a killed epoch's files in place before anything reads them (:func:`dexed_data.outputs.
    finish_killed_publishes`): rank 0 finishes the publish; the other ranks wait until its journal is
    gone, so that every rank resumes from the same ``last.pt`` (rank 1 read the previous epoch's
    while rank 0 renamed the next one's into place, and the two trained from different epochs)."""
    import time

    from dexed_data.outputs import finish_killed_publishes, killed_publish_pending

    out = Path(out)
    if not out.is_dir():
        return
    if rank == 0:   # a kill between an epoch's renames: its files are put in place together first
        finish_killed_publishes(out / name for name in RUN_RECORDS)
        return
    deadline = time.monotonic() + SETTLE_WAIT
    while killed_publish_pending(out / name for name in RUN_RECORDS):
        if time.monotonic() > deadline:
            raise CheckpointError(f"{out}: the files of a killed epoch were not put in place by rank 0 within "
                                  f"{SETTLE_WAIT:g} s; run the same command again")
        time.sleep(0.05)


def fit(data: str | Path, out: str | Path, model_cfg: ModelConfig | None = None, cfg: TrainConfig | None = None,
        resume: bool = False, progress: bool = True) -> FitResult:
    """Train a :class:`PresetModel` on ``data`` (a ``dataset.h5``), writing checkpoints and metrics to ``out``.

    Args:
        data: the dataset file.
        out: the run folder (created).
        model_cfg: architecture; ``n_mels``, ``frames`` come from the dataset. With ``resume``,
            None means "the checkpoint's"; a different one is refused.
        cfg: training settings; with ``resume``, None means the checkpoint's (only ``epochs``,
            ``workers``, ``device`` and ``max_steps`` may change when resuming).
        resume: continue from ``out/last.pt`` exactly where it stopped.
        progress: show a progress bar (rank 0).
    """
    # -- processes and devices -------------------------------------------------------------
    out = Path(out)
    rank, world, local_rank = _distributed()
    ckpt = None
    from dexed_data.errors import OutputError
    from dexed_data.outputs import together

    settle_run_folder(out, rank)
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        on_cpu = cfg is not None and _device(cfg.device, local_rank).type == "cpu"
        model_cfg, cfg = _resumed_configs(ckpt, model_cfg, cfg, on_cpu, out / "last.pt")
    elif any((out / name).exists() for name in RUN_RECORDS):   # best.pt alone too: a finished run kept small
        held = ", ".join(name for name in RUN_RECORDS if (out / name).exists())
        raise CheckpointError(f"{out} already holds a run ({held}); pass --resume to continue it or choose another "
                              "--out")
    model_cfg, cfg = model_cfg or ModelConfig(), cfg or TrainConfig()
    device = _device(cfg.device, local_rank)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if progress:   # the wait can be long, and a signal in it ends the process without a word (below)
            import sys

            print(f"[rank {rank}] waiting for the other {world - 1} process(es) at "
                  f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} (Ctrl-C ends it; "
                  "nothing is written before they connect)", file=sys.stderr, flush=True)
        with _signals_end_process():   # waiting for the other ranks inside torch: nothing written yet
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % world:
        if resume:   # the batch is the run's (fixed): the number of processes is what can change
            fits = [g for g in range(1, min(cfg.batch_size // 2, 64) + 1) if cfg.batch_size % g == 0]
            raise PresetModelError(f"this run's batch of {cfg.batch_size} (fixed by its checkpoint) is not divisible by "
                                   f"the {world} processes; resume it on a number of processes that divides it "
                                   f"({', '.join(map(str, fits[:12]))}{', …' if len(fits) > 12 else ''})")
        raise PresetModelError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    if cfg.batch_size // world < 2:     # batch normalisation of a 1 × 1 feature map needs two presets
        raise PresetModelError(f"--batch-size {cfg.batch_size}: must be at least 2 per process"
                               + (f" ({2 * world} for {world} processes)" if world > 1 else ""))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    try:
        # -- data ----------------------------------------------------------------------------
        info = read_info(data)
        if ckpt is not None:
            check_dataset_schema(ckpt, info.schema_hash, data)
            _check_resumed_data(ckpt, data)
        split = Split.from_dict(ckpt["split"]) if ckpt else None
        train_ds, valid_ds, split, info = make_datasets(data, model_cfg.encoding, model_cfg.notes, cfg.fold, split,
                                                         cfg.keep_duplicates, cfg.in_memory,
                                                         tuple(ckpt["mel_bounds"]) if ckpt else None)
        model_cfg = replace(model_cfg, n_mels=info.n_mels, frames=info.frames)
        workers = 0 if train_ds.mel_db is not None else cfg.workers   # in RAM, a batch is a few copies
        train_sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed)
        valid_sampler = DistributedSampler(valid_ds, world, rank, shuffle=False)
        loader_args = dict(batch_size=cfg.batch_size // world, num_workers=workers,
                           pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                           generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG untouched
        if workers:
            loader_args["worker_init_fn"] = _loader_worker
        alone = len(train_sampler) % loader_args["batch_size"] == 1   # a last batch of one: batch norm fails
        train_loader = _Loader(train_ds, sampler=train_sampler, drop_last=alone, **loader_args)
        valid_loader = _Loader(valid_ds, sampler=valid_sampler, **loader_args)

        # -- model and optimizer ---------------------------------------------------------------
        torch.manual_seed(cfg.seed)
        model = PresetModel(model_cfg).to(device)
        if world > 1:
            model = _global_batch_norm(model, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start_epoch, step, best_valid, best_epoch, spent = 0, 0, math.inf, -1, 0.0
        plateau = Plateau()
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
            best_valid, best_epoch = ckpt["best_valid"], ckpt["best_epoch"]
            plateau, spent = Plateau(**ckpt.get("plateau", {})), float(ckpt.get("train_seconds", 0.0))
        n_params = sum(p.numel() for p in model.parameters())
        if world > 1:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        # -- run folder ------------------------------------------------------------------------
        rows: list[dict] = []
        tb = None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _write_atomic(out / "split.json", split.to_json())
            rows = _read_csv(out / "metrics.csv", start_epoch)
            if progress:
                mb = n_params * 4 * 3 / 2**20   # weights + Adam's two moments, float32
                tqdm.write(f"model: {n_params / 1e6:.2f} M parameters, checkpoints ~{mb:.0f} MB; "
                           f"{len(train_ds)} training / {len(valid_ds)} validation presets"
                           f"{' held in RAM' if train_ds.mel_db is not None else ''}; "
                           f"mel bounds {train_ds.bounds[0]:.1f} … {train_ds.bounds[1]:.1f} dB (training split)")
            try:
                from torch.utils.tensorboard import SummaryWriter
                tb = SummaryWriter(out / "tensorboard")
            except ImportError:  # TensorBoard is optional
                pass

        # -- the loop ----------------------------------------------------------------------------
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        out_of_time = budget is not None and spent >= budget
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.epochs if not out_of_time else start_epoch):
            beta = cfg.beta_at(epoch)
            lr = lr_at(cfg, epoch, plateau)
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_sampler.set_epoch(epoch)
            # the latent noise of an epoch depends only on (seed, epoch): a resumed run draws the same,
            # and every rank draws the whole global batch's (see _global_noise)
            torch.manual_seed(cfg.seed + 1_000_003 * (epoch + 1))
            model.train()
            sums = {k: 0.0 for k in TERMS}
            seen, t0 = 0, time.perf_counter()
            n_batches = len(train_loader) if cfg.max_steps is None else min(cfg.max_steps, len(train_loader))
            bar = progress_bar(progress and rank == 0, iterable=train_loader, total=n_batches,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
            done, waited, util = 0, 0.0, []
            asked = time.perf_counter()
            for i, batch in enumerate(bar):
                waited += time.perf_counter() - asked      # time the step waited for the loader
                now = None if budget is None else _clock(spent + time.perf_counter() - t0, device)
                if i == n_batches or (now is not None and now >= budget):
                    break
                if cfg.anneal_fraction > 0:
                    through = now / budget if now is not None else (epoch + i / max(n_batches, 1)) / cfg.epochs
                    for group in optimizer.param_groups:
                        group["lr"] = lr * anneal_factor(cfg, through)
                mel, target, mask = _move(batch, device)
                with autocast:
                    out_ = model(mel, eps=_global_noise(len(mel), model_cfg.latent_dim, world, rank, device))
                loss, terms = compute_loss(out_, mel, target, mask, _unwrap(model), beta, cfg.categorical_weight,
                                           global_counts=True, numerical_loss=cfg.numerical_loss)
                if not torch.isfinite(loss):
                    if not torch.isfinite(mel).all():
                        raise PresetModelError(f"epoch {epoch + 1}, step {step}: {DAMAGED_MEL}")
                    raise PresetModelError(f"epoch {epoch + 1}, step {step}: loss is {loss.item()} "
                                           f"({ {k: round(v.item(), 4) for k, v in terms.items()} }); start again "
                                           "with a lower --lr and another --out (this run cannot be resumed with "
                                           "another learning rate)")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                seen += len(mel) * world
                done += 1
                if device.type == "cuda" and i % 20 == 0:
                    util.append(_gpu_utilisation(device))
                asked = time.perf_counter()
                for k in TERMS:
                    sums[k] += terms[k].item()
                bar.set_postfix({k: f"{terms[k].item():.4f}" for k in TERMS}, refresh=False)
            bar.close()
            elapsed = time.perf_counter() - t0
            # the ranks' agreed clock (each rank's own one made them stop after different epochs, and
            # the one still training died in its next collective: a traceback under torchrun)
            spent = _clock(spent + elapsed, device)
            out_of_time = budget is not None and spent >= budget
            # an epoch cut before its first step (a spent time budget) has no training loss, not one of 0
            train = {k: v / done if done else float("nan") for k, v in _summed(sums, done, device).items()}
            valid = validation_losses(model, valid_loader, device, cfg.beta, cfg.categorical_weight, autocast,
                                      cfg.numerical_loss)
            valid["param"] = valid["num"] + cfg.categorical_weight * valid["cat"]
            # diverged (the training loss may still be finite); an empty validation split is said elsewhere
            if len(valid_loader.dataset) and not all(math.isfinite(v) for v in valid.values()):
                raise PresetModelError(f"epoch {epoch + 1}: validation loss is {valid['loss']} "
                                       f"({ {k: round(v, 4) for k, v in valid.items()} }); start again with a lower "
                                       "--lr and another --out (this run cannot be resumed with another learning "
                                       "rate)")
            if epoch + 1 >= cfg.warmup_epochs:
                plateau.step(valid["param"], cfg)

            # -- checkpoint and log (rank 0) -----------------------------------------------------
            is_best = valid["param"] < best_valid
            if is_best:
                best_valid, best_epoch = valid["param"], epoch
            if rank == 0:
                state = {"model_config": asdict(model_cfg), "train_config": asdict(cfg),
                         "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                         "best_valid": best_valid, "best_epoch": best_epoch,
                         "mel_bounds": list(train_ds.bounds), "notes": [list(n) for n in info.notes],
                         "note_index": list(train_ds.note_index), "split": json.loads(split.to_json()),
                         "plateau": asdict(plateau), "train_seconds": spent,
                         "dataset": {"path": str(Path(data).resolve()), "name": Path(data).name,
                                     "schema_hash": info.schema_hash, "n_mels": info.n_mels, "frames": info.frames,
                                     "n_presets": info.n_presets},
                         "render": read_render_attrs(data)}
                lr = optimizer.param_groups[0]["lr"]          # the last step's (after the anneal)
                row = {"epoch": epoch + 1, "step": step, "beta": beta, "lr": lr,
                       **{f"train_{k}": v for k, v in train.items()},
                       **{f"valid_{k}": v for k, v in valid.items()},
                       "samples_per_s": seen / max(elapsed, 1e-9), "time_s": elapsed, "train_minutes": spent / 60,
                       "loader_share": waited / max(elapsed, 1e-9),
                       **({"gpu_utilisation": float(np.nanmean(util)) if util else float("nan")}
                          if device.type == "cuda" else {})}
                rows.append(row)
                # the epoch's files together (dexed_data.outputs.together): interrupted before their renames,
                # none changed and the resumed run redoes the epoch; killed between them, the next fit in
                # this folder finishes them first. One by one, a kill after best.pt left it at an epoch
                # that the resumed run redid differently, so it held a model nothing else recorded
                try:
                    with together():
                        _write_csv(out / "metrics.csv", rows)
                        if is_best:
                            save_checkpoint(out / "best.pt", state)
                        save_checkpoint(out / "last.pt", state)
                except (OutputError, CheckpointError) as exc:
                    # a full disk (save_checkpoint says it as a CheckpointError): say how to go on (a plain
                    # rerun is refused once last.pt exists)
                    again = "rerun with --resume" if (out / "last.pt").is_file() else "run the same command again"
                    raise CheckpointError(f"{exc}; free space and {again}" if "no space left" in str(exc)
                                          else str(exc)) from None
                if tb is not None:
                    for k, v in row.items():
                        tb.add_scalar(k, v, epoch + 1)
                if progress:
                    tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  train loss {train['loss']:.4f}  valid loss {valid['loss']:.4f}"
                               f"  (rec {valid['rec']:.4f} num {valid['num']:.4f} cat {valid['cat']:.4f}"
                               f" param {valid['param']:.4f})  lr {lr:.2e}  {seen / max(elapsed, 1e-9):.1f} samples/s"
                               + ("  *best*" if is_best else "") + (f"  [time budget of {cfg.max_minutes:g} min spent]"
                                                                    if out_of_time else ""))
            if out_of_time:
                break
        if tb is not None:
            tb.close()
        return FitResult(_unwrap(model), epoch, best_valid, out, out_of_time,
                         (len(split.train), len(split.valid), len(split.test)), start_epoch)
    finally:
        _stop_loader_workers(locals().get("train_loader"), locals().get("valid_loader"))
        if own_group:
            dist.destroy_process_group()


def _check_resumed_data(ckpt: dict, data) -> None:
    """A resumed run goes on with data rendered as its own was (notes, note length, sample rate,
    spectrogram settings), or not at all."""
    from .inference import read_render_settings, settings_differences, settings_from_checkpoint

    if "render" not in ckpt:
        return
    diffs = settings_differences(settings_from_checkpoint(ckpt["render"]), read_render_settings(data),
                                 mel="mel_config" in ckpt["render"])
    if diffs:
        raise CheckpointError(f"{data}: rendered with other settings than the data this run was trained on "
                              f"({'; '.join(diffs)}); resume on the dataset the run started with")


def _resumed_configs(ckpt: dict, model_cfg: ModelConfig | None, cfg: TrainConfig | None, on_cpu: bool = False,
                     path: str | Path = "last.pt") -> tuple[ModelConfig, TrainConfig]:
    """The checkpoint's configs, after checking that the requested ones (if any) agree with them.
    ``on_cpu``: resumed on the CPU, where mixed precision is off whatever ``amp`` says, so a run's
    ``amp`` is kept (for a later GPU resume) without refusing ``--no-amp`` (audit A3)."""
    from .checkpoint import model_config, train_config

    saved_model, saved_train = model_config(ckpt, path), train_config(ckpt, path)
    if model_cfg is not None:
        asked = replace(model_cfg, n_mels=saved_model.n_mels, frames=saved_model.frames)
        diff = {k: (v, getattr(asked, k)) for k, v in asdict(saved_model).items() if getattr(asked, k) != v}
        if diff:
            raise CheckpointError("--resume with another model configuration than the checkpoint's: "
                                  + ", ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in diff.items()))
    if cfg is None:
        return saved_model, saved_train
    if on_cpu:
        cfg = replace(cfg, amp=saved_train.amp)
    mutable = ("epochs", "workers", "device", "max_steps", "max_minutes", "in_memory")
    diff = {k: (v, getattr(cfg, k)) for k, v in asdict(saved_train).items() if k not in mutable and getattr(cfg, k) != v}
    if diff:
        raise CheckpointError("--resume changes training settings that must stay fixed: "
                              + ", ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in diff.items()))
    return saved_model, cfg
