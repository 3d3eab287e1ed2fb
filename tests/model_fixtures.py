"""A small synthetic ``dataset.h5`` in the documented layout (docs/ARCHITECTURE.md), for model tests.

Random but valid raw presets, random mel dB values correlated with the presets (so a model can
learn something), a few failed and silent rows to be excluded, and random audibility.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from dexed_data.schema import SCHEMA_HASH, VOICE_MAX, apply_fixed

DEFAULT_NOTES = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))


def write_synthetic_dataset(path: Path, n: int = 24, n_mels: int = 32, frames: int = 32,
                            notes=DEFAULT_NOTES, seed: int = 0, failed=(1,), silent=(2,),
                            schema_hash: str = SCHEMA_HASH, mel_bounds=(-120.0, 0.0)) -> Path:
    """Write ``n`` presets × ``len(notes)`` notes of ``n_mels × frames`` mel spectrograms to ``path``."""
    rng = np.random.default_rng(seed)
    k = len(notes)
    raw = apply_fixed(rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(n, 145)))
    # a mel image that depends on a few parameters: smooth, learnable, within the dB bounds
    mel = np.empty((n, k, n_mels, frames), dtype=np.float16)
    t = np.linspace(0, 1, frames)[None, :]
    f = np.linspace(0, 1, n_mels)[:, None]
    for i in range(n):
        for j in range(k):
            a, b, c = raw[i, 134] / 31, raw[i, 16] / 99, raw[i, 137] / 99
            img = -100 + 80 * np.exp(-((f - a) ** 2) / 0.02) * np.exp(-t * (1 + 3 * b)) + 10 * c * (j / k)
            mel[i, j] = np.clip(img + rng.normal(0, 1, img.shape), *mel_bounds)
    ids = np.array([f"{rng.integers(2**63):016x}".encode() for _ in range(n)], dtype="S16")
    status = np.ones(n, dtype=np.uint8)
    status[list(failed)] = 2
    silent_arr = np.zeros(n, dtype=bool)
    silent_arr[list(silent)] = True
    audible = rng.random((n, k, 6)) > 0.2
    with h5py.File(path, "w") as h5:
        h5.attrs.update(format="dexed-dataset", format_version=1, schema_hash=schema_hash, complete=True,
                        engine="synthetic", engine_version="0", sample_rate=22050,
                        notes=np.array(notes, dtype=np.int32), hold=3.0, release=1.0,
                        fixed_params=json.dumps({}), mel_config=json.dumps({"n_mels": n_mels}),
                        command="tests", mel_min_db=mel_bounds[0], mel_max_db=mel_bounds[1],
                        operators=True, stored="mel", compression="none", audio_dtype="float16",
                        shapes=json.dumps({"notes": k, "samples": 88200, "mels": n_mels, "frames": frames}),
                        selection_hash="0" * 16, selection_size=n)
        h5["presets/raw"] = raw.astype(np.uint8)
        h5["presets/id"] = ids
        h5["presets/name"] = np.array([f"SYNTH {i:04d}".encode() for i in range(n)], dtype="S10")
        h5["presets/sound_group"] = np.arange(n, dtype=np.int32)
        h5["presets/catalogue_row"] = np.arange(n, dtype=np.int32)
        h5["occurrences/preset"] = np.arange(n, dtype=np.int32)
        h5.create_dataset("occurrences/path", data=np.array(["synthetic.syx"] * n, object), dtype=h5py.string_dtype())
        h5["occurrences/message"] = np.zeros(n, np.int32)
        h5["occurrences/voice"] = np.arange(n, dtype=np.int32) % 32
        h5["occurrences/name"] = h5["presets/name"][...]
        h5.create_dataset("mel", data=mel, chunks=(1, k, n_mels, frames))
        h5["audible"] = audible
        h5["operator_db"] = np.where(audible, -20.0, -90.0).astype(np.float32)
        h5["peak"] = np.full((n, k), 0.5, dtype=np.float32)
        h5["rms"] = np.full((n, k), 0.1, dtype=np.float32)
        h5["status"] = status
        h5["error"] = np.array(["" if s == 1 else "synthetic failure" for s in status], dtype=h5py.string_dtype())
        h5["silent"] = silent_arr
    return path
