"""Model: every encoding × head × notes trains a step; shapes at the real size; flow head inverts; overfitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dexed_data.schema import VOICE_MAX, apply_fixed
from preset_model.encoding import ENCODINGS, get_encoding
from preset_model.errors import PresetModelError
from preset_model.model import PresetModel, model_config
from preset_model.train import compute_loss

torch.set_num_threads(1)


def batch(cfg, b=4, seed=0):
    """Random mel in [-1, 1], random valid presets encoded, a mask with some operators silent."""
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(b, cfg.notes, cfg.n_mels, cfg.frames, generator=g) * 2 - 1
    rng = np.random.default_rng(seed)
    raw = apply_fixed(rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(b, 145)))
    enc = get_encoding(cfg.encoding)
    target = torch.from_numpy(enc.encode(raw))
    mask = torch.from_numpy(enc.operator_mask(rng.random((b, 6)) > 0.3))
    return mel, target, mask


@pytest.mark.parametrize("notes", [1, 6])
@pytest.mark.parametrize("head", ["flow", "mlp"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_combination_trains_a_step(encoding, head, notes):
    torch.manual_seed(0)
    cfg = model_config("tiny", encoding=encoding, head=head, notes=notes, n_mels=32, frames=32)
    model = PresetModel(cfg)
    mel, target, mask = batch(cfg)
    out = model(mel)
    assert out.mel.shape == mel.shape and out.preset.shape == target.shape == (4, cfg.latent_dim)
    loss, terms = compute_loss(out, mel, target, mask, model, beta=0.1)
    assert torch.isfinite(loss) and all(torch.isfinite(t) for t in terms.values())
    assert (terms["cat"] > 0) == (encoding != "num")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    loss2, _ = compute_loss(model(mel), mel, target, mask, model, beta=0.1)
    assert torch.isfinite(loss2)


def test_numerical_loss_l1_is_the_masked_absolute_error():
    """``numerical_loss="l1"``: ``num`` is the mean absolute error over the masked numerical outputs
    (MSE's is the mean squared error); the other terms do not change."""
    torch.manual_seed(0)
    cfg = model_config("tiny", encoding="numcat", n_mels=32, frames=32)
    model = PresetModel(cfg).eval()
    mel, target, mask = batch(cfg)
    with torch.no_grad():
        out = model(mel)
    _, mse = compute_loss(out, mel, target, mask, model, beta=0.1)
    _, l1 = compute_loss(out, mel, target, mask, model, beta=0.1, numerical_loss="l1")
    idx = model.activation.float_index
    diff, w = out.logits[:, idx] - target[:, idx], mask[:, idx]
    assert l1["num"].item() == pytest.approx(((diff.abs() * w).sum() / w.sum()).item(), rel=1e-5)
    assert mse["num"].item() == pytest.approx(((diff ** 2 * w).sum() / w.sum()).item(), rel=1e-5)
    assert l1["num"] != mse["num"] and all(l1[k] == mse[k] for k in ("rec", "kl", "logdet", "cat"))
    from preset_model.train import TrainConfig
    with pytest.raises(PresetModelError, match="--num-loss 'huber'"):
        TrainConfig(numerical_loss="huber")


def test_real_spectrogram_size_shapes():
    """257 mels × 347 frames, 6 notes: the crop back to the input size works (narrow channels for speed)."""
    cfg = model_config("tiny", channels=(2, 2, 2, 2, 2, 2), mix_channels=4, n_mels=257, frames=347)
    model = PresetModel(cfg).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 6, 257, 347))
    assert out.mel.shape == (2, 6, 257, 347) and out.preset.shape == (2, 610)


@pytest.mark.parametrize("n_mels, frames", [(64, 87), (33, 65), (64, 64)])
def test_decoder_crops_after_every_layer(n_mels, frames):
    """The decoder never computes more than twice the rows and frames it keeps at any layer, and
    its output is the input's size; the channels-last layout used in training gives the same values."""
    cfg = model_config("tiny", n_mels=n_mels, frames=frames, notes=2)
    model = PresetModel(cfg).eval()
    sizes = model.decoder.sizes
    assert sizes[-1] == (n_mels, frames)
    for (h0, w0), (h1, w1) in zip([(model.decoder.h0, model.decoder.w0)] + sizes[:-1], sizes):
        assert h1 <= 2 * h0 and w1 <= 2 * w0 and 2 * h0 - h1 <= 1 and 2 * w0 - w1 <= 1
    x = torch.randn(3, 2, n_mels, frames)
    with torch.no_grad():
        a = model(x).mel
        b = model.to(memory_format=torch.contiguous_format)(x).mel
    assert a.shape == (3, 2, n_mels, frames)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_paper_config():
    cfg = model_config("paper")
    assert (cfg.latent_dim, cfg.notes, cfg.flow_layers, cfg.flow_hidden, cfg.mlp_layers, cfg.mlp_hidden,
            cfg.temperature) == (610, 6, 6, 300, 3, 1024, 0.2)
    assert model_config("paper", encoding="num").latent_dim == 144
    with pytest.raises(PresetModelError, match="too small"):
        model_config("paper", n_mels=32, frames=32)
    with pytest.raises(PresetModelError, match="unknown head"):
        model_config("tiny", head="gru")


def test_activation_and_decode():
    cfg = model_config("tiny", n_mels=32, frames=32)
    model = PresetModel(cfg)
    u = torch.randn(3, cfg.latent_dim) * 3
    v = model.activation(u)
    enc = model.encoding
    assert (v[:, enc.float_index] >= 0).all() and (v[:, enc.float_index] <= 1).all()
    for g in enc.onehot_groups:
        torch.testing.assert_close(v[:, g.slice].sum(1), torch.ones(3))
    raw = model.infer(torch.zeros(2, 6, 32, 32))
    assert raw.shape == (2, 145) and raw.dtype == np.uint8 and (raw <= VOICE_MAX).all()


def test_flow_head_inverts_and_mlp_refuses():
    torch.manual_seed(0)
    model = PresetModel(model_config("tiny", n_mels=32, frames=32, encoding="numcat"))
    z = torch.randn(5, 224)
    torch.testing.assert_close(model.preset_to_latent(model.regress(z)), z, atol=1e-4, rtol=1e-4)
    mlp = PresetModel(model_config("tiny", n_mels=32, frames=32, head="mlp"))
    with pytest.raises(PresetModelError, match="invertible"):
        mlp.preset_to_latent(torch.zeros(1, 610))


@pytest.mark.parametrize("head", ["flow", "mlp"])
def test_tiny_model_overfits_one_batch(head):
    """Reconstruction + parameter loss fall by at least 10× on one fixed batch."""
    torch.manual_seed(0)
    # no dropout: this checks that the model can fit, not how it generalises
    cfg = model_config("tiny", encoding="numcat", head=head, notes=1, n_mels=16, frames=16, dropout=0.0,
                       head_dropout=0.0, channels=(4, 8), mix_channels=8)
    model = PresetModel(cfg)
    mel, target, mask = batch(cfg, b=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def data_terms(terms):
        return (terms["rec"] + terms["num"] + 0.2 * terms["cat"]).item()

    first = None
    for _ in range(300):
        loss, terms = compute_loss(model(mel), mel, target, mask, model, beta=0.01)
        first = first if first is not None else data_terms(terms)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, terms = compute_loss(model(mel), mel, target, mask, model, beta=0.01)
    assert data_terms(terms) < first / 10, (first, data_terms(terms))


def test_sizes_are_ordered_at_every_input_size():
    """tiny < small < paper in parameters at the paper's and the CPU path's input sizes."""
    from preset_model.model import parameter_count

    for mels, frames in ((257, 345), (64, 87)):
        counts = [parameter_count(model_config(s, n_mels=mels, frames=frames)) for s in ("tiny", "small", "paper")]
        assert counts[0] < counts[1] < counts[2], (mels, frames, counts)
    assert parameter_count(model_config("tiny", n_mels=257, frames=345)) < 2_000_000   # a few MB checkpoint


def test_logvar_guard_keeps_the_loss_finite():
    """A posterior log σ² of 200 (σ = e^100) overflows float32 through the flows; the clamp keeps the loss finite."""
    from preset_model import model as model_module

    torch.manual_seed(0)
    cfg = model_config("tiny", encoding="num", notes=1, n_mels=16, frames=16)
    model = PresetModel(cfg)
    with torch.no_grad():
        model.encoder.out.bias[cfg.latent_dim:] = 200.0
    mel, target, mask = batch(cfg, b=4)
    _, terms = compute_loss(model(mel), mel, target, mask, model, beta=0.2)
    assert torch.isfinite(terms["loss"])
    guard = model_module.LOGVAR_MAX
    try:
        model_module.LOGVAR_MAX = float("inf")      # without the guard
        _, terms = compute_loss(model(mel), mel, target, mask, model, beta=0.2)
        assert not torch.isfinite(terms["loss"])
    finally:
        model_module.LOGVAR_MAX = guard
