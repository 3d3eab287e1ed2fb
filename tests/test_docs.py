"""The numbers and terms the README and docs quote agree with what the commands print."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def _n(text: str) -> int:
    return int(text.replace(",", ""))


def test_readme_corpus_counts_are_what_import_sysex_prints(corpus_dir, tmp_path):
    from dexed_data.cli import app

    res = CliRunner().invoke(app, ["import-sysex", str(corpus_dir), "-o", str(tmp_path / "c.h5"), "--no-progress"])
    assert res.exit_code == 0, res.output
    printed = res.stdout
    readme = (REPO / "README.md").read_text()
    m = re.search(r"On the CC0 corpus \(`dexed-data import-sysex [^`]*`\): ([\d,]+)\s+files seen, ([\d,]+) DX7 voice "
                  r"messages, ([\d,]+) voices decoded and imported \(([\d,]+) of them\s+repaired\), ([\d,]+) "
                  r"duplicates, and \*\*([\d,]+) unique presets\*\* by raw values \(([\d,]+) by packed sound\s+bytes "
                  r"as found, ([\d,]+) with bit 7 masked, ([\d,]+) sound-equivalent\)", readme)
    assert m, "the README's corpus paragraph changed shape; update this test with it"
    files, messages, voices, repaired, dups, unique, as_found, masked, equivalent = (_n(g) for g in m.groups())
    line = {row.split()[0] + (row.split()[1] if row.startswith("unique") else ""): row for row in printed.splitlines()}
    assert re.match(rf"files seen\s+{files}\b", line["files"])
    assert re.match(rf"messages\s+{messages}\b", line["messages"])
    assert re.match(rf"voices\s+{voices}\s+imported {voices}, repaired {repaired}, rejected 0", line["voices"])
    assert re.match(rf"duplicates\s+{dups}\b", line["duplicates"])
    assert re.match(rf"unique presets\s+{unique}\s+by raw values; by packed bytes as found {as_found}, bit 7 masked "
                    rf"{masked}, sound-equivalent {equivalent}$", line["uniquepresets"].rstrip())


def test_render_time_is_quoted_alike_in_scaling_and_format():
    figure = re.compile(r"0\.\d\d(?:–0\.\d\d)? h")
    format_md = figure.findall((REPO / "docs" / "FORMAT.md").read_text())
    scaling = figure.findall((REPO / "docs" / "SCALING.md").read_text())
    assert format_md and scaling and set(scaling) <= set(format_md)
    assert "in hours" not in (REPO / "docs" / "SCALING.md").read_text()


def test_docs_link_quality_and_cite_only_the_repository():
    readme = (REPO / "README.md").read_text()
    assert "(docs/QUALITY.md)" in readme
    quality = (REPO / "docs" / "QUALITY.md").read_text()
    assert "shared/reference" not in quality and "DX7.md" not in quality
    for term in ("dc_block(clip(x/8))", "distinct near", "sound_key"):
        assert term in quality
    fmt = (REPO / "docs" / "FORMAT.md").read_text()
    for field in ("`dexed_index`", "`packed`", "`fixed`", "no `min` field", "stored 0–31"):
        assert field in fmt


def test_info_prints_transpose_with_units():
    from dexed_data.schema import FIXED_PARAMS, format_fixed

    text = format_fixed(FIXED_PARAMS)
    assert "TRANSPOSE=24 (0.5 normalised)" in text and "TRANSPOSE=0.5" not in text
    assert "MASTER TUNE ADJ=0.5" in text and text.endswith("(normalised 0–1)")


def test_readme_render_and_training_defaults_are_the_code_defaults():
    from dexed_data.features import MelConfig
    from dexed_data.render import DEFAULT_NOTES, RenderConfig
    from preset_model.model import ModelConfig
    from preset_model.train import TrainConfig

    readme = (REPO / "README.md").read_text()
    m = re.search(r"six \(MIDI pitch, velocity\) pairs\s+—\s+((?:\(\d+,\d+\)\s*)+),\s+(\d+) s held \+ (\d+) s "
                  r"release at\s+([\d,]+) Hz", readme)
    assert m, "the README's render settings sentence changed shape; update this test with it"
    notes = tuple(tuple(int(x) for x in pair.split(",")) for pair in re.findall(r"\((\d+,\d+)\)", m[1]))
    cfg = RenderConfig()
    assert notes == DEFAULT_NOTES == cfg.notes
    assert (float(m[2]), float(m[3]), _n(m[4])) == (cfg.hold, cfg.release, cfg.sample_rate)
    mel = MelConfig()
    assert f"({mel.n_mels} mels, n_fft {mel.n_fft}, hop {mel.hop}, dB floor −{-mel.floor_db:g}, float16)" in readme
    t, model = TrainConfig(), ModelConfig()
    assert (model.encoding, model.head, model.notes, t.batch_size, t.lr) == ("numcat++", "flow", 6, 160, 2e-4)
    flat = " ".join(readme.split())
    assert ("Defaults are the paper's and its reference code's: NumCat++ encoding, flow regression head, every "
            "note the dataset was rendered on (the paper's 6; a dataset rendered on `--notes 60:85` alone trains a "
            "one-note model), batch 160, Adam 2e-4 with weight decay 1e-4, the learning rate warmed up over 6 epochs from 0.1× and "
            "cut by 5 when the validation parameter loss stalls for 6 epochs") in flat
    assert (t.weight_decay, t.warmup_epochs, t.warmup_start, t.plateau_factor, t.plateau_patience) == \
        (1e-4, 6, 0.1, 0.2, 6)
    assert "dropout 0.3 in the autoencoder's fully connected layers and 0.4 in the MLP head" in flat
    assert (model.dropout, model.head_dropout) == (0.3, 0.4)
    assert "num + 0.2·cat" in readme and t.categorical_weight == 0.2
    assert "β warm-up 0.1 → 0.2" in flat
    assert (t.beta_start, t.beta) == (0.1, 0.2)
    from dexed_data.nearcopy import NEAR_PARAMS

    assert f"within {NEAR_PARAMS} of the 144 learnable parameters" in flat
    from preset_model.model import model_config, parameter_count

    for size in ("tiny", "small", "paper"):    # "`tiny` 1.0 M parameters, `small` 7.8 M, `paper` 41.8 M at 257 × 345"
        count = parameter_count(model_config(size, n_mels=257, frames=345))
        assert f"`{size}` {count / 1e6:.1f} M" in flat, (size, count)


def test_quality_md_info_example_is_what_info_prints(tmp_path):
    """docs/QUALITY.md quotes `dexed-data info` on the 64 bundled presets rendered with the defaults."""
    from dexed_data.importer import import_sysex
    from dexed_data.info import describe
    from dexed_data.render import RenderConfig, render_dataset

    import_sysex([REPO / "presets"], tmp_path / "presets.h5")
    # operators only add /operator_db: the audio, and so every quoted count and bound, is the same
    render_dataset(tmp_path / "presets.h5", tmp_path / "dataset.h5", RenderConfig(operators=False), jobs=2,
                   progress=False)
    printed = {line.strip() for line in describe(tmp_path / "dataset.h5").splitlines()}
    block = re.search(r"## `dexed-data info dataset.h5`.*?```\n(.*?)```", (REPO / "docs" / "QUALITY.md").read_text(),
                      re.S)[1]
    quoted = [line.strip() for line in block.splitlines() if line.strip() and line.strip() != "…"]
    assert len(quoted) >= 10
    missing = [line for line in quoted if line not in printed]
    assert not missing, f"QUALITY.md quotes lines `info` does not print: {missing}"


def test_format_md_spectrogram_recipe_and_name_reading_reproduce_the_file(tmp_path):
    """A reader with numpy and h5py alone, following docs/FORMAT.md, gets the stored /mel from /audio
    and the package's 10-byte names (h5py drops an S10 name's trailing NULs)."""
    import json

    import h5py
    import numpy as np

    from dexed_data.catalogue import write_catalogue
    from dexed_data.features import slaney_filterbank
    from dexed_data.render import RenderConfig, render_dataset
    from dexed_data.sysex import decode_file

    fmt = (REPO / "docs" / "FORMAT.md").read_text()
    assert '.ljust(10, b"\\0").decode("latin-1")' in fmt and "periodic Hann window" in fmt and "norm=None" in fmt
    voices = decode_file(REPO / "presets" / "toolkit_bank_a.syx").voices[:3]
    cat = tmp_path / "c.h5"
    write_catalogue(cat, np.stack([v.raw for v in voices]), ["ABCDEFGH\0\0", "CD", "EF"])
    out = tmp_path / "d.h5"
    render_dataset(cat, out, RenderConfig(notes=((60, 85), (40, 100)), hold=0.3, release=0.2, store=("audio", "mel"),
                                          audio_dtype="float32", n_mels=64, hop=512), jobs=1, progress=False)
    with h5py.File(out, "r") as f:
        cfg = json.loads(f.attrs["mel_config"])
        shapes = json.loads(f.attrs["shapes"])
        audio, stored = f["audio"][()], f["mel"][()].astype(np.float32)
        names = [n.ljust(10, b"\0").decode("latin-1") for n in f["presets/name"][()]]
    n_fft, hop = cfg["n_fft"], cfg["hop"]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)            # periodic Hann
    padded = np.pad(audio.astype(np.float64), ((0, 0), (0, 0), (n_fft // 2, n_fft // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :] * window
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 * (2 / window.sum()) ** 2
    bank = slaney_filterbank(cfg["sample_rate"], n_fft, cfg["n_mels"]).astype(np.float64)
    mel = 10 * np.log10(np.maximum(np.einsum("mb,pkfb->pkmf", bank, power), 10 ** (cfg["floor_db"] / 10)))
    assert mel.shape == stored.shape == (3, shapes["notes"], shapes["mels"], shapes["frames"])
    assert shapes["frames"] == 1 + shapes["samples"] // hop
    assert np.abs(mel - stored).max() < 0.1          # float16 storage: ~0.03 dB at -60 dB
    assert sorted(names) == ["ABCDEFGH\0\0", "CD        ", "EF        "]   # h5py alone: "ABCDEFGH"
