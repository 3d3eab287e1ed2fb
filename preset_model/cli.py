"""The ``preset-model`` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import PresetModelError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train and use the DAFx 2021 VAE-flow preset model on dexed_data datasets.")


@app.callback()
def _group() -> None:
    """Keep `preset-model COMMAND` form even while only one command is registered."""


@app.command()
def fit(
    data: Path = typer.Option(..., "--data", help="dataset.h5 written by `dexed-data render`."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, metrics.csv, split.json."),
    encoding: Optional[str] = typer.Option(None, help="Preset encoding: numcat++ (default) | numcat | num."),
    head: Optional[str] = typer.Option(None, help="Regression head: flow (default) | mlp."),
    notes: Optional[int] = typer.Option(None, help="Input notes per preset: 6 (default) or 1 (MIDI 60, vel 85)."),
    size: Optional[str] = typer.Option(None, help="Model size: paper (default) | small | tiny."),
    epochs: int = typer.Option(400, help="Total epochs (a resumed run continues up to this number)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size, split across processes (default 160)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (default 2e-4)."),
    fold: Optional[int] = typer.Option(None, help="Validation fold 0-4 (default 0); 20% of presets are the test set."),
    seed: Optional[int] = typer.Option(None, help="Seed of init, shuffling and latent noise (default 0)."),
    workers: int = typer.Option(2, help="DataLoader worker processes per training process."),
    device: str = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda | cuda:N."),
    amp: bool = typer.Option(True, help="Mixed precision on CUDA (ignored on CPU)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop each epoch after this many batches (smoke runs)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the VAE-flow preset model; defaults are the paper's. Run under `torchrun` for several GPUs/nodes."""
    from dataclasses import replace

    from .model import model_config
    from .train import TrainConfig, fit as fit_model

    model_args = {k: v for k, v in dict(encoding=encoding, head=head, notes=notes).items() if v is not None}
    train_args = {k: v for k, v in dict(batch_size=batch_size, lr=lr, fold=fold, seed=seed).items() if v is not None}
    base, model_cfg = TrainConfig(), None
    if resume:  # options not given keep the checkpoint's values; given ones must agree with it (checked in fit)
        from .checkpoint import load_checkpoint
        from .model import SIZES, ModelConfig

        ckpt = load_checkpoint(out / "last.pt")
        base = TrainConfig(**ckpt["train_config"])
        saved = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items()})
        if model_args or size:
            model_cfg = replace(saved, **(SIZES[size] if size in SIZES else {}), **model_args)
    else:
        model_cfg = model_config(size or "paper", **model_args)
    cfg = replace(base, epochs=epochs, workers=workers, device=device, amp=amp, max_steps=max_steps, **train_args)
    result = fit_model(data, out, model_cfg, cfg, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"done: best validation loss {result.best_valid:.4f}; checkpoints in {result.out}")


def main() -> None:
    """Console entry point: run the app, turning expected errors into one clear line and exit 2."""
    try:
        app()
    except PresetModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
