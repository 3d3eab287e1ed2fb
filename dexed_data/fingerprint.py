"""Audio fingerprints of rendered presets, and dedup by sound.

Voices that differ in parameter values can still render the same audio (a silent operator's
settings, an LFO with no depth...; DX7.md §6: 30,245 voices of the CC0 corpus give 28,378
distinct signals). Parameter-level keys (:func:`dexed_data.sound_key.sound_key`) catch the cases
that can be proven from the values; the rendered audio catches all of them.

Two fingerprints per preset, computed by the render workers from the float32 audio of all K notes
(before any float16 storage):

* **exact** (:func:`exact_fingerprint`): 128 bits of the SHA-1 of the samples. Equal fingerprints ⇔
  bit-identical audio on every note (−0.0 counts as +0.0), up to a 2⁻⁶⁴ collision chance.
* **near** (:func:`near_fingerprint`): 128 bits of the SHA-1 of a coarse spectral envelope: per note,
  16 time blocks (the first power-of-two samples of each: 4,096 of 5,512 for 4 s) × 8 octave bands (below 100 Hz, 100–200, …, 6.4–11 kHz at 22,050 Hz), energy in
  dB re full scale, floored at ``NEAR_FLOOR_DB`` (−80) and rounded down to ``NEAR_STEP_DB`` (3 dB)
  steps. Tolerance: two presets with the same near key have every one of these levels within
  3 dB of each other. The converse does not hold: a level next to a step boundary can put two
  nearly identical sounds on different keys, so near keys under-merge; they are a coarse "looks
  the same on a spectrogram" grouping, shown in ``info`` and the report, never used to drop data.

Dedup (:func:`duplicate_of`) uses the exact fingerprint: among the presets rendered OK, each group
of equal fingerprints keeps its lowest row (rows are in catalogue order, i.e. by preset id, so the
choice is the same for one run, a resumed run and a merge of shards) and every other member
points to it. The duplicates' provenance stays on their own rows; :func:`merged_occurrences`
gathers a representative's occurrences with its duplicates'.

Example::

    >>> import numpy as np
    >>> a = np.zeros((2, 100), np.float32); b = a.copy(); b[0, 5] = 1e-7
    >>> fp = np.stack([exact_fingerprint(x) for x in (a, a, b)])
    >>> duplicate_of(fp, np.ones(3, bool)).tolist()
    [-1, 0, -1]
"""

from __future__ import annotations

import hashlib

import numpy as np

from .rows import group_rows

__all__ = [
    "FINGERPRINT_BYTES", "NEAR_STEP_DB", "NEAR_FLOOR_DB", "NEAR_BLOCKS", "NEAR_BAND_EDGES_HZ",
    "exact_fingerprint", "near_fingerprint", "near_levels_db", "duplicate_of", "group_of",
    "count_distinct", "merged_occurrences", "duplicate_groups",
]

#: Bytes of each fingerprint (stored as ``(N, 16) uint8``).
FINGERPRINT_BYTES = 16
#: Step (dB) the near key's levels are rounded down to; the key's tolerance.
NEAR_STEP_DB = 3.0
#: Levels below this (dBFS) count as the floor, so near-silent notes all share one key.
NEAR_FLOOR_DB = -80.0
#: Time blocks per note in the near key.
NEAR_BLOCKS = 16
#: Band edges (Hz) of the near key; the last band runs to Nyquist.
NEAR_BAND_EDGES_HZ = (0.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)


def _digest(tag: bytes, array: np.ndarray) -> np.ndarray:
    # SHA-1 (not a security boundary here: dedup of our own renders) hashes ~3× faster than
    # BLAKE2b on this machine; its first 16 bytes are the fingerprint.
    h = hashlib.sha1(tag)
    h.update(np.asarray(array.shape, "<i8").tobytes())
    h.update(np.ascontiguousarray(array).tobytes())
    return np.frombuffer(h.digest()[:FINGERPRINT_BYTES], np.uint8).copy()


def exact_fingerprint(audio: np.ndarray) -> np.ndarray:
    """SHA-1 (first 128 bits) of ``audio`` ``(notes, samples)`` as float32 → ``(16,) uint8``.

    Equal for bit-identical audio (−0.0 and +0.0 are the same sample); the shape is hashed too.
    """
    x = np.asarray(audio, dtype="<f4") + np.float32(0.0)   # -0.0 + 0.0 == +0.0
    return _digest(b"dexed-exact-v1", x)


def near_levels_db(audio: np.ndarray, sample_rate: int = 22050) -> np.ndarray:
    """Coarse spectral envelope ``(notes, NEAR_BLOCKS, 8)`` float64: band energy in dB re full scale.

    Each note is cut into :data:`NEAR_BLOCKS` equal blocks (the tail shorter than a block is
    dropped); a block's band level is ``10 log10`` of the power of the FFT bins in the band over the
    block's first ``2^k`` samples (the largest power of two that fits: 4,096 of 5,512 samples for a
    4 s note, which is 4× cheaper to transform), scaled to the signal's mean power so that a
    full-scale sine gives −3 dB in its band; floored at :data:`NEAR_FLOOR_DB`.
    """
    x = np.asarray(audio, dtype=np.float64)
    notes, t = x.shape
    block = t // NEAR_BLOCKS
    if block < 2:
        raise ValueError(f"near_levels_db: {t} samples per note is too short for {NEAR_BLOCKS} blocks")
    window = 1 << (block.bit_length() - 1)
    frames = x[:, : block * NEAR_BLOCKS].reshape(notes, NEAR_BLOCKS, block)[..., :window]
    spectrum = np.fft.rfft(frames, axis=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2) * (2.0 / window**2)   # a sine's mean power: full scale → 0.5
    freqs = np.fft.rfftfreq(window, 1.0 / sample_rate)
    band = np.searchsorted(np.asarray(NEAR_BAND_EDGES_HZ), freqs, side="right") - 1
    energy = np.zeros((notes, NEAR_BLOCKS, len(NEAR_BAND_EDGES_HZ)))
    for b in range(len(NEAR_BAND_EDGES_HZ)):
        sel = band == b
        if sel.any():
            energy[..., b] = power[..., sel].sum(axis=-1)
    floor = 10.0 ** (NEAR_FLOOR_DB / 10.0)
    return 10.0 * np.log10(np.maximum(energy, floor))


def near_fingerprint(audio: np.ndarray, sample_rate: int = 22050) -> np.ndarray:
    """128 bits of the SHA-1 of :func:`near_levels_db` rounded down to :data:`NEAR_STEP_DB` steps → ``(16,) uint8``."""
    steps = np.floor((near_levels_db(audio, sample_rate) - NEAR_FLOOR_DB) / NEAR_STEP_DB).astype("<i2")
    return _digest(b"dexed-near-v1", steps)


def group_of(fingerprints: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Row of each row's group representative (the lowest row with the same fingerprint), ``(N,) int32``.

    ``fingerprints``: ``(N, B) uint8``. Rows where ``valid`` is False (failed renders) get −1
    and are in no group.
    """
    return group_rows(fingerprints, valid)


def duplicate_of(fingerprints: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(N,) int32``: −1 for a row that is no duplicate, else the lowest row with the same fingerprint.

    Representatives (the lowest row of each group) and invalid rows get −1.
    """
    rep = group_of(fingerprints, valid)
    rep[rep == np.arange(len(rep))] = -1
    return rep


def count_distinct(fingerprints: np.ndarray, valid: np.ndarray | None = None) -> int:
    """Number of distinct fingerprints among the ``valid`` rows."""
    rep = group_of(fingerprints, valid)
    return int(np.sum(rep == np.arange(len(rep))))


def merged_occurrences(occurrences: dict[str, np.ndarray], dup_of: np.ndarray, row: int) -> dict[str, np.ndarray]:
    """The occurrences of preset ``row`` and of every preset that duplicates it (or that it duplicates).

    ``occurrences``: the ``/occurrences`` arrays (``preset`` = row); ``dup_of``: ``/duplicate_of``.
    Ordered by preset row, then as stored.
    """
    dup_of = np.asarray(dup_of)
    rep = int(dup_of[row]) if dup_of[row] >= 0 else int(row)
    members = np.flatnonzero((dup_of == rep) | (np.arange(len(dup_of)) == rep))
    preset = np.asarray(occurrences["preset"])
    sel = np.flatnonzero(np.isin(preset, members))
    sel = sel[np.argsort(preset[sel], kind="stable")]
    return {k: np.asarray(v)[sel] for k, v in occurrences.items()}


def duplicate_groups(dup_of: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Groups with duplicates, largest first (ties: lower representative first): ``[(rep, members)]``.

    ``members`` are the rows of the group, representative included, ascending.
    """
    dup_of = np.asarray(dup_of)
    dups = np.flatnonzero(dup_of >= 0)
    if dups.size == 0:
        return []
    reps, counts = np.unique(dup_of[dups], return_counts=True)
    order = np.lexsort((reps, -counts))
    return [(int(reps[i]), np.concatenate([[reps[i]], dups[dup_of[dups] == reps[i]]]).astype(np.int64))
            for i in order]
