"""The parameter table agrees with DX7.md and with dexed-py, and its hash is stable."""

import numpy as np

from dexed_data import schema


def test_counts_match_the_paper():
    assert len(schema.PARAMS) == 155
    assert [p.dexed_index for p in schema.PARAMS] == list(range(155))
    learn = schema.LEARNABLE_PARAMS
    assert len(learn) == 144
    assert sum(p.kind == "categorical" for p in learn) == 22
    assert sum(p.kind == "numerical" for p in learn) == 122
    assert set(schema.FIXED_PARAMS) == {
        "Cutoff", "Resonance", "Output", "MASTER TUNE ADJ", "TRANSPOSE",
        *(f"OP{k} SWITCH" for k in range(1, 7)),
    }


def test_dexed_order_is_op1_first_and_voice_order_op6_first():
    assert schema.PARAMS[23].name == "OP1 EG RATE 1"
    assert schema.PARAMS[23 + 22 * 5 + 21].name == "OP6 SWITCH"
    assert schema.VOICE_PARAMS[0].name == "OP6 EG RATE 1"
    assert schema.VOICE_PARAMS[105].name == "OP1 EG RATE 1"
    assert schema.voice_index("ALGORITHM") == 134
    assert schema.voice_index("TRANSPOSE") == 144


def test_packed_fields_are_disjoint_and_wide_enough():
    used = {}
    for p in schema.VOICE_PARAMS:
        byte, shift, bits = p.packed
        assert 0 <= byte < schema.PACKED_SOUND_BYTES and shift + bits <= 7
        assert p.max < 2 ** bits, p.name
        for b in range(shift, shift + bits):
            assert (byte, b) not in used, (p.name, used[(byte, b)])
            used[(byte, b)] = p.name


def test_categorical_labels_cover_every_value():
    for p in schema.PARAMS:
        if p.kind == "categorical":
            assert len(p.labels) == p.cardinality, p.name


def test_numcat_lengths_follow_from_the_table():
    learn = schema.LEARNABLE_PARAMS
    numcat = sum(p.cardinality if p.kind == "categorical" else 1 for p in learn)
    numcatpp = sum(p.cardinality if (p.kind == "categorical" or p.cardinality <= 32) else 1 for p in learn)
    assert (numcat, numcatpp) == (224, 610)


def test_offsets_agree_with_dexed_py():
    import dexed

    patch = dexed.Patch()
    patch.algorithm = 17
    patch.feedback = 5
    patch.op[0].frequency_coarse = 14  # op[0] is OP1
    patch.op[5].output_level = 42  # OP6
    patch.op[2].detune = 3  # OP3
    raw = np.frombuffer(patch.to_sysex()[:145], dtype=np.uint8)
    assert raw[schema.voice_index("ALGORITHM")] == 17
    assert raw[schema.voice_index("FEEDBACK")] == 5
    assert raw[schema.voice_index("OP1 F COARSE")] == 14
    assert raw[schema.voice_index("OP6 OUTPUT LEVEL")] == 42
    assert raw[schema.voice_index("OP3 OSC DETUNE")] == 3


def test_fixed_values_and_normalization():
    raw = np.zeros((2, 145), np.uint8)
    fixed = schema.apply_fixed(raw)
    assert (fixed[:, 144] == 24).all() and (raw == 0).all()
    norm = schema.to_normalized(schema.VOICE_MAX)
    assert norm.dtype == np.float32 and np.allclose(norm, 1.0)


def test_hash_is_stable_and_content_sensitive():
    assert schema.SCHEMA_HASH == schema._hash()
    assert len(schema.SCHEMA_HASH) == 16
    table = schema.schema_table()
    table[5]["max"] += 1
    import hashlib, json
    other = hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert other != schema.SCHEMA_HASH


def test_algorithms_are_dexed_pys():
    import dexed

    for value in range(32):
        alg, theirs = schema.algorithm(value), dexed.algorithms[value]
        assert alg.carriers == tuple(theirs.carriers) and alg.feedback == tuple(theirs.feedback_edge)
        assert np.array_equal(alg.mod_matrix, np.asarray(theirs.mod_matrix, bool))
    assert schema.algorithm(0) is schema.algorithm(0)          # built once


def test_reaching_follows_the_graph():
    alg = schema.algorithm(0)     # algorithm 1: OP2 → OP1 and OP6 → OP5 → OP4 → OP3, carriers OP1 and OP3
    assert alg.carriers == (0, 2)
    every = [True] * 6
    assert alg.reaching(every) == (True,) * 6
    no_op4 = [True, True, True, False, True, True]             # OP4 silent: OP5 and OP6 reach nothing
    assert alg.reaching(no_op4) == (True, True, True, False, False, False)
    no_op1 = [False, True, True, True, True, True]             # a carrier silent: its modulator is unheard
    assert alg.reaching(no_op1) == (False, False, True, True, True, True)


def test_names_round_trip_as_stored():
    names = ["E.PIANO 1", "AB\x00\x00", "TOO LONG A NAME", "Flûte"]
    stored = schema.encode_names(names)
    assert stored.dtype == np.dtype("S10")
    assert schema.decode_names(stored) == ["E.PIANO 1 ", "AB\x00\x00      ", "TOO LONG A", "Fl?te     "]
    assert all(len(n) == schema.NAME_LENGTH for n in schema.decode_names(stored))
