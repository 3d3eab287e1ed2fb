"""Encodings: lengths from the paper, exact round-trips over every valid raw value, group metadata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dexed_data.schema import LEARNABLE_PARAMS, TRANSPOSE_OFFSET, VOICE_MAX, apply_fixed
from preset_model.encoding import ENCODINGS, get_encoding
from preset_model.errors import PresetModelError

LEARNABLE_OFFSETS = np.array([p.voice_offset for p in LEARNABLE_PARAMS])


def random_raw(rng: np.random.Generator, n: int) -> np.ndarray:
    """n valid raw presets, uniform over each parameter's range, fixed bytes set."""
    return apply_fixed(rng.integers(0, VOICE_MAX.astype(np.int64) + 1, size=(n, VOICE_MAX.size)))


@pytest.mark.parametrize("name,length,floats", [("num", 144, 144), ("numcat", 224, 122), ("numcat++", 610, 90)])
def test_lengths(name, length, floats):
    enc = get_encoding(name)
    assert enc.length == length and len(enc.float_groups) == floats
    assert len(enc.groups) == 144
    # groups tile the vector exactly, in order
    assert [g.start for g in enc.groups] == list(np.cumsum([0] + [g.size for g in enc.groups])[:-1])


@pytest.mark.parametrize("name", ENCODINGS)
def test_every_value_of_every_parameter_round_trips(name):
    enc = get_encoding(name)
    base = apply_fixed(np.zeros(145, dtype=np.uint8))
    for p in LEARNABLE_PARAMS:
        raws = np.repeat(base[None], p.max + 1, axis=0)
        raws[:, p.voice_offset] = np.arange(p.max + 1)
        v = enc.encode(raws)
        np.testing.assert_array_equal(enc.decode(v), raws, err_msg=p.name)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 99), min_size=145, max_size=145), st.sampled_from(ENCODINGS))
def test_random_presets_round_trip(values, name):
    raw = apply_fixed(np.minimum(np.array(values), VOICE_MAX).astype(np.uint8))
    enc = get_encoding(name)
    np.testing.assert_array_equal(enc.decode(enc.encode(raw)), raw)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(ENCODINGS))
def test_decode_tolerates_prediction_noise(seed, name):
    """A prediction within half a step of a float and with the right argmax decodes exactly."""
    rng = np.random.default_rng(seed)
    raw = random_raw(rng, 8)
    enc = get_encoding(name)
    v = enc.encode(raw)
    noisy = v.copy()
    for g in enc.float_groups:
        noisy[:, g.start] += rng.uniform(-0.49, 0.49, size=8) / g.max
    for g in enc.onehot_groups:
        noisy[:, g.slice] = noisy[:, g.slice] * 0.6 + rng.uniform(0, 0.3, size=(8, g.size))
    np.testing.assert_array_equal(enc.decode(noisy), raw)


def test_batch_shapes_and_clamping():
    enc = get_encoding("numcat")
    raw = random_raw(np.random.default_rng(0), 6).reshape(2, 3, 145)
    assert enc.encode(raw).shape == (2, 3, 224)
    assert enc.decode(enc.encode(raw)).shape == (2, 3, 145)
    out = enc.decode(np.full(224, 7.0))       # far out of range floats clamp to max
    assert (out[enc.float_groups[0].voice_offset] == enc.float_groups[0].max)
    assert out[TRANSPOSE_OFFSET] == 24


def test_out_of_range_raw_is_refused():
    raw = apply_fixed(np.zeros(145, dtype=np.uint8))
    raw[134] = 32  # ALGORITHM max 31
    with pytest.raises(PresetModelError, match="out of range"):
        get_encoding("num").encode(raw)
    with pytest.raises(PresetModelError, match="145"):
        get_encoding("num").encode(np.zeros(10, dtype=np.uint8))
    with pytest.raises(PresetModelError, match="unknown encoding"):
        get_encoding("onehot")
    # −1 put its one-hot 1.0 in the previous parameter's group, NaN became −9e16, 1.5 encoded as 1.5/99
    for bad, value in ((-1, "-1.0"), (np.nan, "nan"), (1.5, "1.5")):
        odd = apply_fixed(np.zeros(145, dtype=np.uint8)).astype(np.float64)
        odd[14] = bad
        for name in ENCODINGS:
            with pytest.raises(PresetModelError, match=rf"index \(14,\) is {value}: raw values are whole numbers"):
                get_encoding(name).encode(odd)
    for junk in (None, np.uint8(3), ["a"] * 145):
        with pytest.raises(PresetModelError):
            get_encoding("numcat++").encode(junk)


@pytest.mark.parametrize("name", ENCODINGS)
def test_operator_metadata_and_mask(name):
    enc = get_encoding(name)
    for g in enc.groups:
        assert (enc.element_operator[g.slice] == g.operator).all()
        assert g.operator == (int(g.name[2]) if g.name.startswith("OP") else 0)
    audible = np.array([[True, False, True, True, True, False]])  # OP2 and OP6 silent
    mask = enc.operator_mask(audible)
    assert mask.shape == (1, enc.length)
    for g in enc.groups:
        assert (mask[0, g.slice] == (0.0 if g.operator in (2, 6) else 1.0)).all(), g.name
