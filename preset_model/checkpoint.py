"""Checkpoints: one ``torch.save`` dict that carries weights, optimizer, configs, schema hash, bounds and split.

Layout (all plain Python / tensors, loadable with ``torch.load(weights_only=True)``)::

    format="preset-model-checkpoint", format_version=1, schema_hash, package_version, torch_version
    model_config: dict        ModelConfig fields          model: state_dict
    train_config: dict        TrainConfig fields          optimizer, scaler: state_dicts
    epoch: int (last finished, 0-based), step: int, best_valid: float, best_epoch: int
    mel_bounds: [min_db, max_db]    notes: [[pitch, velocity], ...] the model's input notes
    split: Split as a dict          dataset: {path, schema_hash, n_mels, frames}

Example::

    >>> from preset_model.checkpoint import load_model
    >>> model, ckpt = load_model("runs/paper/best.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import torch

from dexed_data.schema import SCHEMA_HASH

from . import __version__
from .errors import CheckpointError

CHECKPOINT_FORMAT = "preset-model-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` plus format/version/schema fields to ``path`` atomically.

    Written by :func:`dexed_data.outputs.atomic_path`: a temporary file beside ``path``, fsync'd,
    renamed. A full disk (or any error) leaves the previous checkpoint intact and no temporary
    file; it raises :class:`CheckpointError`.
    """
    from dexed_data.errors import OutputError
    from dexed_data.outputs import atomic_path

    path = Path(path)
    full = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "schema_hash": SCHEMA_HASH,
            "package_version": __version__, "torch_version": str(torch.__version__), **state}
    try:
        with atomic_path(path, "checkpoint") as tmp:
            try:
                torch.save(full, tmp)
            except RuntimeError as exc:   # torch reports a failed write (full disk) as RuntimeError
                import errno
                import shutil

                if shutil.disk_usage(path.parent).free < (1 << 20) or "unexpected pos" in str(exc):
                    raise OSError(errno.ENOSPC, "no space left on the device") from None
                raise OSError(str(exc).splitlines()[0] if str(exc) else "write failed") from None
    except OutputError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint. Raises :class:`CheckpointError` if missing, foreign, or of another schema."""
    path = Path(path)
    if not path.is_file():
        if path.is_symlink():   # a link to nothing, or a loop of links (A9: "no such checkpoint")
            try:
                os.stat(path)
                what = f"a link to {os.readlink(path)}, which is not a file"
            except OSError as exc:
                what = ("a loop of links" if exc.errno == errno.ELOOP else
                        f"a link that leads to no file ({os.readlink(path)})")
            raise CheckpointError(f"{path}: {what}; give the checkpoint itself, or mend the link")
        hint = "; it has no checkpoint yet: run fit without --resume" if path.name == "last.pt" else ""
        raise CheckpointError(f"{path}: no such checkpoint{hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        if isinstance(exc, OSError) and exc.errno is not None:
            # the system's reason (permission denied, an I/O error): the file itself may be sound (A9)
            raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions and "
                                  "the disk, then run the same command again") from None
        # not torch's text: it runs over paragraphs and advises weights_only=False (code execution)
        raise CheckpointError(f"{path}: not a checkpoint written by `preset-model fit` (damaged, cut short, or "
                              f"another kind of file; torch: {type(exc).__name__}); give a run folder, or its "
                              "best.pt / last.pt") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')} is not supported "
                              f"(this code reads version {CHECKPOINT_VERSION}); use the preset_model version that wrote it")
    if ckpt.get("schema_hash") != SCHEMA_HASH:
        raise CheckpointError(f"{path}: trained with parameter schema {ckpt.get('schema_hash')}, but this code uses "
                              f"schema {SCHEMA_HASH}; its outputs would decode to the wrong parameters")
    why = _damaged(ckpt)
    if why:
        raise CheckpointError(_unreadable(path, ckpt, why))
    changed = _changed_record(path)
    if changed:
        raise CheckpointError(f"{path}: its record {changed} fails its CRC-32 check: its bytes changed on disk after it "
                              "was written; the checkpoint is damaged: use a copy made before the damage, or train again")
    return ckpt


def _changed_record(path: Path) -> str | None:
    """The first record of a checkpoint whose bytes no longer match the CRC-32 ``torch.save`` wrote for it, or None.

    ``torch.load`` reads the zip's records without checking their checksums, so bytes changed in a
    tensor (a disk's fault, a bad copy) load as different weights without error (R13). Records written
    without a checksum (CRC 0: ``torch.serialization.set_crc32_options(False)``) are not checked.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0 or info.is_dir():
                    continue
                try:
                    with z.open(info) as f:        # checks the CRC-32 when the record has been read to its end
                        while f.read(1 << 22):
                            pass
                except zipfile.BadZipFile:
                    return info.filename.split("/", 1)[-1]
    except (zipfile.BadZipFile, NotImplementedError, ValueError):
        return None   # torch read it: a layout zipfile does not take is not a damage it can name
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions and the disk, "
                              "then run the same command again") from None
    return None


def _unreadable(path: Path, ckpt: dict, why: str) -> str:
    """The one line for a checkpoint whose header is right and whose contents are not."""
    wrote = ckpt.get("package_version")
    if wrote == __version__:
        return f"{path}: {why}; the checkpoint is damaged: train again (or use a copy made before the damage)"
    return (f"{path}: {why}; it was written by preset_model {wrote or '(version unknown)'} and this is {__version__}: "
            "use that version, or train again")


def _first_line(exc: BaseException) -> str:
    """The line of an exception's text that says what is wrong (torch heads a load error with a line of its own)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _damaged(ckpt: dict) -> str | None:
    """What a checkpoint lacks that every reader needs (audit A8), or None."""
    import math

    for key in ("model", "model_config", "train_config", "split"):
        if not isinstance(ckpt.get(key), dict):
            return f"its {key!r} is {'missing' if key not in ckpt else 'not a dict'}"
    split = ckpt["split"]
    for key in ("train", "valid", "test"):
        if not isinstance(split.get(key), (list, tuple)) or not all(isinstance(i, str) for i in split[key]):
            return f"its split has no list of {key} preset ids"
    for key in ("fold", "n_folds"):
        if not isinstance(split.get(key), int):
            return f"its split has no {key}"
    if not isinstance(split.get("test_fraction"), (int, float)):
        return "its split has no test_fraction"
    b = ckpt.get("mel_bounds")
    if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in b)
            and b[0] < b[1]):
        return f"its mel_bounds {b!r} are not two dB levels, low then high"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items()):
        return "its model weights are not tensors"
    return None


def check_dataset_schema(ckpt: dict, dataset_schema_hash: str, dataset_path: str | Path) -> None:
    """Refuse a dataset whose schema hash differs from the checkpoint's, saying which is which."""
    if dataset_schema_hash != ckpt["schema_hash"]:
        raise CheckpointError(f"{dataset_path}: dataset has parameter schema {dataset_schema_hash}, but the checkpoint "
                              f"was trained with schema {ckpt['schema_hash']}; use a dataset rendered with the same "
                              f"schema (or train a new model on this one)")


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """A trained :class:`~preset_model.model.PresetModel` (eval mode) and its checkpoint dict."""
    from .model import PresetModel

    ckpt = load_checkpoint(path, map_location)
    cfg = model_config(ckpt, path)
    try:
        model = PresetModel(cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:   # settings that do not fit the weights
        raise CheckpointError(_unreadable(Path(path), ckpt, f"its model does not fit its settings ({_first_line(exc)})")) from None
    return model.to(map_location).eval(), ckpt


def model_config(ckpt: dict, path: str | Path):
    """The checkpoint's :class:`~preset_model.model.ModelConfig`; :class:`CheckpointError` if its settings are not one."""
    from .model import ModelConfig

    return _config(ModelConfig, ckpt, "model_config", path)


def train_config(ckpt: dict, path: str | Path):
    """The checkpoint's :class:`~preset_model.train.TrainConfig`; :class:`CheckpointError` if its settings are not one."""
    from .train import TrainConfig

    return _config(TrainConfig, ckpt, "train_config", path)


def _config(cls, ckpt: dict, key: str, path: str | Path):
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt[key].items()})
    except (TypeError, ValueError) as exc:     # a field this version lacks, or a value it refuses
        raise CheckpointError(_unreadable(Path(path), ckpt, f"its {key} is not one this version reads ({_first_line(exc)})")) from None
