"""Sound matching by re-render search: candidates → render and score → local search within a budget.

A model's one forward pass (or the nearest training preset) is only a guess; the synth can check
it. :func:`refine` takes candidate voices, renders each on the notes the user gave, scores it
against the recording with :func:`spectral_distance`, and then improves the best one by a local
search over the 144 learnable parameters until ``budget`` renders have been spent.

**Candidates** (:func:`refine` takes them as ``(label, raw)`` pairs; this module builds them):

* the model's inference (``z₀ = μ``) and ``model_samples`` voices decoded from ``z₀ ~ q(z₀|x)``
  (:func:`model_candidates`; any head, the samples are drawn in the encoder's latent space);
* the ``neighbours`` nearest training presets by spectrogram on the given notes
  (:class:`NearestPresets`, L2 on the dataset's scaled, average-pooled mel spectrograms);
* a plain sine voice (:func:`sine_voice`), so that some candidate is audible whatever the input;
* after they are scored, the ``transpose`` best of them again, moved onto the input's pitch
  (:func:`transpose_voice`: every ratio-mode operator's frequency scaled by the same factor) when
  their partials sit 20 cents or more off the input's (log-frequency cross-correlation of the
  long-term spectra, :func:`~preset_model.metrics.pitch_offset_cents`): a recording played a few
  semitones from the note it is matched on, or slightly out of tune, has no nearby preset, and the
  search's one-parameter steps rarely move all the frequencies of a voice together.

**Distance** (:func:`spectral_distance`, lower is better, 0 for identical audio), on the given
notes only (pitch-shifted fill-ins of missing notes are not the user's sound):

``D = mean over notes of [ LSD + MFCC40 ]``

where ``LSD`` is the mean |difference| of the STFT magnitude in dB re full scale (n_fft 1024, Hann,
hop 256, floor −120 dB), and ``MFCC40`` the mean |difference| of the first 40 MFCCs (orthonormal
DCT-II of a 128-band log-mel power spectrogram of the same STFT): the log-spectral and MFCC-40
MAE of :mod:`preset_model.metrics`, the measures the matching is judged by. (A second
log-spectral term at n_fft 4096, for close partials, scored worse on the benchmark's sounds:
docs/RESULTS.md.) A voice that is near-silent on every given note while the input is not
(:func:`dexed_data.features.silent_notes`) scores ``inf``: it is never chosen.

**Crossover** (:func:`_crossover`): before the search, each of the ``donors`` candidates after the
best lends its operators, one at a time, and its global parameters to the best voice (7 children
per donor, fewer where they agree); the best child is kept when it is better.

**Search**: a (1+λ) evolution strategy on integer steps, λ = 8
children per generation whatever ``jobs`` is (so the result does not depend on it). A child
changes 1–4 parameters of the best voice so far: a numerical one by ±max(1, round(|N(0, σ)|·max))
steps, clipped to its range (with probability ``jump``, 0 by default, it jumps to another value
of its range drawn uniformly instead: measured, not better); a categorical one to another of its
values, uniformly. Parameters
that cannot change the sound of the current voice (those of operators that are off or feed only
operators that are off, but their output level; the LFO's shape when both its depths are 0) are
picked ten times less often than the others (:func:`_weights`). σ (a fraction
of the range) grows by 1.5 after a generation that improved and shrinks by 0.8 otherwise, within
[0.01, 0.5]. A child replaces the best when it is at least as good (moves across plateaus of
parameters that do not change the sound).

**Screening** (``screen``, 64): each generation draws 64 children and renders only the λ that an
additive model of the search's own past predicts best (:func:`_predict`). A *move* is a parameter
and a direction (a parameter and its new value, if categorical); each rendered child credits its
moves with its distance minus its parent's; a child's prediction is the mean over its moves of
their mean credit, 0 for a move not tried yet. Moves that made the voice worse are drawn again
but rendered less, untried ones sooner. It costs no render (~0.1 ms per child drawn). The
search without screening beat nevergrad's ``DiscreteLenglerOnePlusOne`` over the same integer
vector (docs/RESULTS.md, "Matching with re-render search"), so no optimiser package is needed.

Guarantees: the result is never worse than the best candidate (it starts from it and only
accepts better or equal voices); it is deterministic for a seed (fixed batch structure, one
``numpy`` generator); its values lie in each parameter's range, TRANSPOSE stays 24.

Example::

    >>> from preset_model.refine import RefineConfig, refine, sine_voice
    >>> from dexed_data.engines import EngineSpec
    >>> import numpy as np
    >>> t = np.arange(11025) / 22050
    >>> target = (0.1 * np.sin(2 * np.pi * 261.6 * t))[None].astype(np.float32)   # one note, 0.5 s
    >>> r = refine(target, [(60, 85)], [("sine", sine_voice())], EngineSpec(), 0.4, 0.1, RefineConfig(budget=20))
    >>> r.renders, r.distance <= r.candidates[0][1]
    (20, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dexed_data.engines import EngineSpec, validate_raw
from dexed_data.errors import EngineError
from dexed_data.schema import LEARNABLE_PARAMS, PARAM_BY_NAME, algorithm, apply_fixed

from .baselines import INDEX_BYTES
from .errors import PresetModelError

#: MFCCs compared by the distance (the MFCC-40 MAE of :mod:`preset_model.metrics`).
MFCC_COEFFS = 40

_OFFSETS = np.array([p.voice_offset for p in LEARNABLE_PARAMS])
_MAXES = np.array([p.max for p in LEARNABLE_PARAMS])
_CATEGORICAL = np.array([p.kind == "categorical" for p in LEARNABLE_PARAMS])
_OPERATOR = np.array([p.operator or 0 for p in LEARNABLE_PARAMS])
_IS_LEVEL = np.array([p.name.endswith("OUTPUT LEVEL") for p in LEARNABLE_PARAMS])
_LFO_SHAPE = np.array([p.name in ("LFO SPEED", "LFO DELAY", "LFO KEY SYNC", "LFO WAVE") for p in LEARNABLE_PARAMS])


# ----------------------------------------------------------------------------------------- distance

def _db_spectrograms(audio: np.ndarray, sample_rate: int) -> tuple:
    """The dB magnitude spectrogram ``(notes, 513, frames)`` and 128-band log-mel power ``(notes, 128, frames)``."""
    from . import metrics

    mag = metrics.magnitude(np.atleast_2d(audio))
    return metrics.to_db(mag, False), metrics.to_db(metrics.mel_basis(int(sample_rate)) @ mag.square(), True)


def spectral_features(audio: np.ndarray, sample_rate: int, floors: np.ndarray | None = None) -> tuple:
    """What :func:`spectral_distance` compares, computed as :func:`preset_model.metrics.audio_metrics`
    does: the dB magnitude spectrogram ``(notes, 513, frames)`` and the MFCCs ``(notes, 40, frames)``.
    ``floors`` ``(notes, 2)`` (:func:`noise_floors`): each note's spectrogram and log-mel raised to them
    first, so that what lies under an input's noise floor is not compared."""
    import torch

    from . import metrics

    db, log_mel = _db_spectrograms(audio, sample_rate)
    if floors is not None:
        f = torch.as_tensor(np.asarray(floors, np.float32))
        db, log_mel = torch.maximum(db, f[:, :1, None]), torch.maximum(log_mel, f[:, 1:, None])
    return db, metrics.dct_matrix(metrics.MFCC_MELS, MFCC_COEFFS) @ log_mel


#: An input whose :func:`noise_floors` reach this level (dB) on some note has a noise floor the search
#: would try to match: ``match`` suggests ``--noise-floor``. Measured on 150 test presets' renders
#: (docs/RESULTS.md): their 8-bit copies 97 % above, with white noise 70 dB under the peak 10 %, the
#: clean renders 4.7 % (dense spectra whose quietest bins are high).
NOISE_HINT_DB = -105.0


def noise_floors(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Each note's noise floor ``(notes, 2)``: the 10th percentile of its dB magnitude spectrogram (column
    0) and of its 128-band log-mel (column 1) over the frames that are not digital silence; the metrics'
    floor (−120 dB) for a note that is silent. A clean render's quietest bins lie at that floor, or
    near it; a recording's noise (hiss, a converter's, 8-bit quantisation) raises them."""
    from . import metrics

    out = np.full((np.atleast_2d(audio).shape[0], 2), metrics.FLOOR_DB, np.float32)
    for c, x in enumerate(_db_spectrograms(audio, sample_rate)):
        for n, note in enumerate(x):
            sounding = note.max(0).values > metrics.FLOOR_DB + 5.0
            if sounding.any():   # numpy: torch.quantile refuses more than 2^24 values (90 s notes at 96 kHz)
                out[n, c] = max(metrics.FLOOR_DB, float(np.percentile(note[:, sounding].numpy(), 10.0)))
    return out


def feature_distance(ref: tuple, est: tuple) -> float:
    """:func:`spectral_distance` between two :func:`spectral_features` results."""
    return sum(float((a - b).abs().mean()) for a, b in zip(ref, est))


def spectral_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """The search's distance between two ``(notes, samples)`` renders (module docstring); 0 when identical."""
    return feature_distance(spectral_features(reference, sample_rate), spectral_features(estimate, sample_rate))


# --------------------------------------------------------------------------------------- candidates

def sine_voice() -> np.ndarray:
    """A plain audible voice ``(145,)`` uint8: algorithm 32, OP1 a sine carrier at full level, the rest off."""
    from dexed_data.schema import operator_offsets

    raw = np.zeros(145, np.uint8)
    raw[PARAM_BY_NAME["ALGORITHM"].voice_offset] = 31
    for op in range(1, 7):
        o = operator_offsets(op)
        for k in ("EG RATE 1", "EG RATE 2", "EG RATE 3", "EG RATE 4"):
            raw[o[k]] = 99 if k != "EG RATE 4" else 60
        raw[o["EG LEVEL 1"]] = raw[o["EG LEVEL 2"]] = raw[o["EG LEVEL 3"]] = 99
        raw[o["F COARSE"]] = 1
        raw[o["OSC DETUNE"]] = 7
        raw[o["OUTPUT LEVEL"]] = 99 if op == 1 else 0
    for k in ("PITCH EG LEVEL 1", "PITCH EG LEVEL 2", "PITCH EG LEVEL 3", "PITCH EG LEVEL 4"):
        raw[PARAM_BY_NAME[k].voice_offset] = 50
    for k in ("PITCH EG RATE 1", "PITCH EG RATE 2", "PITCH EG RATE 3", "PITCH EG RATE 4"):
        raw[PARAM_BY_NAME[k].voice_offset] = 99
    raw[PARAM_BY_NAME["LFO SPEED"].voice_offset] = 35
    return apply_fixed(raw)


def model_candidates(run, db: np.ndarray, samples: int = 4, seed: int = 0) -> list[np.ndarray]:
    """The model's voice for ``db (K, mels, frames)`` (z₀ = μ), then ``samples`` voices with z₀ ~ q(z₀|x); each ``(145,)`` uint8."""
    import torch

    from .inference import scale_mel

    model = run.model
    model.eval()
    x = torch.from_numpy(scale_mel(np.asarray(db, np.float32)[None], run.mel_bounds))
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        mu, logvar = model.encoder(x)
        mu, logvar = mu.float(), logvar.float()
        eps = torch.randn((samples, mu.shape[1]), generator=g)
        z0 = torch.cat([mu, mu + eps * (0.5 * logvar).exp()])
        zk, _ = model.latent_flow(z0)
        v = model.activation(model.regress(zk))
    return [apply_fixed(r) for r in model.encoding.decode(v.numpy())]


#: Frequency ratio of every (F COARSE, F FINE) pair of a ratio-mode operator, ``(32, 100)`` (COARSE 0 = 0.5).
_LOG2_RATIO = np.log2(np.maximum(np.arange(32), 0.5)[:, None] * (1 + np.arange(100) / 100)[None, :])


def transpose_voice(raw: np.ndarray, cents: float, tolerance: float = 30.0) -> np.ndarray | None:
    """``raw`` with every ratio-mode operator's frequency moved by ``cents``: the (F COARSE, F FINE)
    pair nearest the shifted ratio (the same COARSE when another gives the same ratio), so that all
    its partials move together and the timbre is kept. Fixed-frequency operators stay. None when
    some operator cannot get within ``tolerance`` cents of its shifted ratio (ratios run from 0.5
    to 61.7) or nothing changes."""
    out = raw.copy()
    for op in range(1, 7):
        if raw[PARAM_BY_NAME[f"OP{op} MODE"].voice_offset]:
            continue
        co, fo = PARAM_BY_NAME[f"OP{op} F COARSE"].voice_offset, PARAM_BY_NAME[f"OP{op} F FINE"].voice_offset
        c, f = int(raw[co]), int(raw[fo])
        err = np.abs(_LOG2_RATIO - (_LOG2_RATIO[c, f] + cents / 1200.0))
        err[c] -= 1e-9                                   # ties: keep COARSE
        c2, f2 = np.unravel_index(int(np.argmin(err)), err.shape)
        if err[c2, f2] * 1200.0 > tolerance:
            return None
        out[co], out[fo] = c2, f2
    return None if np.array_equal(out, raw) else apply_fixed(out)


def _read_mel_rows(path: str | Path, rows: np.ndarray, block: int = 256):
    """Yield ``(rows_chunk, mel (len, K, mels, frames) float32)`` for sorted ``rows``, reading contiguous slices."""
    import h5py

    from .data import row_blocks

    rows = np.asarray(rows, np.int64)
    with h5py.File(path, "r") as h5:
        for i, j, x in row_blocks(h5["mel"], rows, block):
            yield rows[i:j], x.astype(np.float32)


class NearestPresets:
    """The training presets nearest to a sound by spectrogram, on any subset of the dataset's notes.

    Per preset and note, the dataset's dB mel spectrogram scaled to [-1, 1] with the dataset's
    bounds and average-pooled so the index stays under ``budget`` bytes; the distance of a query
    is the L2 distance summed over the notes it gives.

    Args:
        data: ``dataset.h5``.
        rows: its rows that may be returned (the training split), ascending.
        budget: bytes of the in-memory index (the same as ``evaluate --baseline knn``'s, so the
            nearest preset is that baseline's on all notes).

    Example::

        >>> index = NearestPresets("dataset.h5", train_rows)                           # doctest: +SKIP
        >>> raws, d = index.query(db_given_notes, note_index=[3], k=8)                  # doctest: +SKIP
    """

    def __init__(self, data: str | Path, rows: np.ndarray, budget: int = INDEX_BYTES) -> None:
        import h5py
        import torch

        from .data import read_info
        from .inference import scale_mel

        info = read_info(data)
        self.data, self.bounds = Path(data), info.mel_bounds
        self.rows = np.asarray(sorted(int(r) for r in rows), np.int64)
        if len(self.rows) == 0:
            raise PresetModelError(f"{data}: no training presets to search; the dataset is too small")
        k = len(info.notes)
        self.pool = 1
        while (len(self.rows) * k * (info.n_mels // self.pool) * (info.frames // self.pool) * 4 > budget
               and min(info.n_mels, info.frames) // (2 * self.pool) >= 1):
            self.pool *= 2
        feats = []
        for _, mel in _read_mel_rows(data, self.rows):
            feats.append(self._pool(torch.from_numpy(scale_mel(mel, self.bounds))))
        self.features = torch.cat(feats)                                     # (N, K, F)
        self.sq = self.features.square().sum(-1)                             # (N, K)
        with h5py.File(data, "r") as h5:
            self.raw = h5["presets/raw"][:][self.rows]

    def _pool(self, x):
        import torch.nn.functional as F

        n, k = x.shape[:2]
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return x.reshape(n, k, -1).contiguous()

    def query(self, db: np.ndarray, note_index, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` presets to one sound: ``db (len(note_index), mels, frames)`` dB on those dataset notes.

        Returns:
            raw presets ``(k, 145)`` uint8 and their squared distances ``(k,)``, nearest first
            (ties: lowest row).
        """
        import torch

        from .inference import scale_mel

        idx = list(note_index)
        q = self._pool(torch.from_numpy(scale_mel(np.asarray(db, np.float32)[None], self.bounds)))[0]   # (n, F)
        d = (self.sq[:, idx].sum(1) - 2.0 * torch.einsum("nkf,kf->n", self.features[:, idx], q)
             + q.square().sum())
        k = min(k, len(d))
        order = np.lexsort((np.arange(len(d)), d.numpy()))[:k]
        return self.raw[order], d.numpy()[order]


def training_rows(data: str | Path, train_ids=None) -> np.ndarray:
    """Usable rows of ``data`` in the training split: of ``train_ids`` (a run's), else of :func:`~preset_model.data.split_ids` (fold 0)."""
    from .data import read_usable, split_ids

    ids, usable, keys = read_usable(data, keep_duplicates=train_ids is not None, keys=train_ids is None)   # a run's: as it trained
    if train_ids is None:
        train_ids = split_ids([ids[r] for r in usable], 0, groups=[keys[r] for r in usable]).train
    row_of = {ids[r]: r for r in usable}
    return np.asarray(sorted(row_of[i] for i in train_ids if i in row_of), np.int64)


def sound_candidates(target: np.ndarray, given, mel_cfg, run=None, model_db: np.ndarray | None = None,
                     index: NearestPresets | None = None, cfg: "RefineConfig | None" = None
                     ) -> list[tuple[str, np.ndarray]]:
    """The candidates for one sound, labelled ``model``, ``model-sample-N``, ``nearest-N`` (1 = nearest), ``sine``.

    Args:
        target: ``(len(given), samples)`` the input on the given notes.
        given: indices of those notes among the dataset's notes.
        mel_cfg: the dataset's :class:`~dexed_data.features.MelConfig` (for the nearest-preset query).
        run, model_db: a loaded run and its input ``(K, mels, frames)`` dB (missing notes filled), or None.
        index: nearest training presets, or None.
    """
    from dexed_data.features import mel_db

    cfg = cfg or RefineConfig()
    out: list[tuple[str, np.ndarray]] = []
    if run is not None and model_db is not None:
        raws = model_candidates(run, model_db, cfg.model_samples, cfg.seed)
        out += [("model", raws[0])] + [(f"model-sample-{i}", r) for i, r in enumerate(raws[1:], 1)]
    if index is not None and cfg.neighbours > 0:
        raws, _ = index.query(mel_db(np.asarray(target, np.float32), mel_cfg), list(given), cfg.neighbours)
        out += [(f"nearest-{i}", r) for i, r in enumerate(raws, 1)]
    out.append(("sine", sine_voice()))
    return out


# ------------------------------------------------------------------------------------------- search

@dataclass(frozen=True)
class RefineConfig:
    """Settings of the search.

    Attributes:
        budget: renders in all, candidates included (the search gets what they leave).
        neighbours: nearest training presets taken as candidates.
        model_samples: voices sampled around the model's (z₀ ~ q(z₀|x)), besides its mean voice.
        offspring: children per generation (λ); fixed, so the result does not depend on ``jobs``.
        donors: candidates after the best (by distance) whose operators are tried in the best
            voice before the search (:func:`_crossover`); 0 = none.
        screen: children drawn per generation, of which the ``offspring`` predicted best are
            rendered (:func:`_predict`); ``offspring`` or less: every child drawn is rendered.
        jump: chance that a numerical parameter a child changes jumps to a value drawn uniformly
            from its range instead of taking a Gaussian step (:func:`_mutate`).
        transpose: candidates, best first, whose partials are compared with the input's
            (:func:`~preset_model.metrics.pitch_offset_cents`); one that sits ``TRANSPOSE_CENTS`` or
            more off is tried again moved onto the input's pitch (:func:`transpose_voice`); 0 = none.
        seed: seed of the search (and of the model's samples).
        noise_floor: compare the input and every render above the input's own noise floor, per note
            (:func:`noise_floors`): for a recording with hiss or of few bits, whose noise the search
            would otherwise try to reproduce (8-bit copies of 12 test presets, docs/RESULTS.md:
            log-spectral MAE against the clean sound −15.7 % → −30.6 % of the nearest preset's).
            Off by default: most clean renders' floors are the metrics' own (−120 dB), but not all,
            and the benchmarks of docs/RESULTS.md measure the search without it.
    """

    budget: int = 300
    neighbours: int = 16
    model_samples: int = 4
    offspring: int = 8
    donors: int = 8
    jump: float = 0.0
    screen: int = 64
    transpose: int = 4
    seed: int = 0
    noise_floor: bool = False

    def key(self) -> str:
        """What a journal keys a kept search by: the settings, as written before ``noise_floor`` existed
        when it is off (an interrupted match or evaluation of an earlier version still resumes, R11)."""
        return repr(self).replace(", noise_floor=False", "")


@dataclass
class Refined:
    """The outcome of :func:`refine` for one sound.

    Attributes:
        raw: the final voice ``(145,)`` uint8.
        distance: its :func:`spectral_distance` to the input (given notes).
        render: ``(notes, samples)`` its render on the given notes.
        candidates: ``(label, distance)`` of every candidate, in the order given, then the
            transposed ones (labelled ``"LABEL moved by ±C cents"``).
        renders: renders spent (≤ budget, or the number of candidates if that is more).
        seconds: wall-clock time.
        trace: best distance after each render.
    """

    raw: np.ndarray
    distance: float
    render: np.ndarray
    candidates: list[tuple[str, float]]
    renders: int
    seconds: float
    trace: list[float] = field(default_factory=list)

    def candidate(self, prefix: str) -> float | None:
        """Best distance among the candidates ``prefix`` names (None if there is none): the label itself
        (``"nearest-1"``, not ``"nearest-12"``; ``"model"``, not ``"model-sample-3"``: audit A4), or every
        label it begins, up to a ``-`` or a space (``"model-sample-"``, ``"sine moved"``); the
        transposed ones count only when ``prefix`` names them (``"nearest-1 moved"``)."""
        def named(k: str) -> bool:
            if MOVED in k and " moved" not in prefix:
                return False
            return k == prefix or (k.startswith(prefix) and (prefix[-1:] in ("-", " ") or k[len(prefix)] == " "))

        d = [v for k, v in self.candidates if named(k)]
        return min(d) if d else None


_WORKER: dict = {}


def _render_scores(raws: list[np.ndarray], spec: EngineSpec, notes, hold: float, release: float,
                   target_key, target: np.ndarray | None, floors: np.ndarray | None = None
                   ) -> list[tuple[float, np.ndarray | None]]:
    """Worker: render each raw on ``notes``; its distance to the target (inf if silent where the target is not)."""
    from dexed_data.features import silent_notes

    from .inference import ScoringEngine

    if _WORKER.get("spec") != spec:
        import torch

        torch.set_num_threads(1)
        _WORKER.update(spec=spec, engine=ScoringEngine(spec))
    if _WORKER.get("key") != target_key:
        _WORKER.update(key=target_key, feats=spectral_features(target, spec.sample_rate, floors),
                       loud=not bool(silent_notes(target).all()))
    out = []
    for raw in raws:
        audio = _WORKER["engine"].render(raw, notes, hold, release).audio
        if _WORKER["loud"] and silent_notes(audio).all():
            out.append((float("inf"), audio))
        else:
            out.append((feature_distance(_WORKER["feats"], spectral_features(audio, spec.sample_rate, floors)), audio))
    return out


class _Renderer:
    """Scores batches of voices, in this process (``jobs`` ≤ 1) or in ``jobs`` loky workers."""

    def __init__(self, target: np.ndarray, spec: EngineSpec, notes, hold: float, release: float, jobs: int,
                 floors: np.ndarray | None = None) -> None:
        self.args = (spec, [tuple(n) for n in notes], hold, release)
        self.target = np.ascontiguousarray(target, np.float32)
        self.floors = floors
        # what the workers' cached features depend on (a new renderer may reuse an old one's id)
        self.key = (id(self), hash(self.target.tobytes()), None if floors is None else hash(np.asarray(floors).tobytes()))
        self.jobs = max(1, int(jobs))
        self.count = 0
        if self.jobs > 1:
            from dexed_data.render import helper_pool

            # workers end with this process (a killed match would leave them for the idle timeout)
            self.ex = helper_pool(self.jobs)

    def __call__(self, raws: list[np.ndarray]) -> list[tuple[float, np.ndarray]]:
        self.count += len(raws)
        if self.jobs == 1 or len(raws) == 1:
            return _render_scores(raws, *self.args, self.key, self.target, self.floors)
        parts = np.array_split(np.arange(len(raws)), min(self.jobs, len(raws)))
        futures = [self.ex.submit(_render_scores, [raws[i] for i in p], *self.args, self.key, self.target, self.floors)
                   for p in parts]
        try:
            return [r for f in futures for r in f.result()]
        except Exception as exc:
            if type(exc).__name__ != "TerminatedWorkerError":
                raise
            from dexed_data.render import worker_died

            # (the out-of-memory killer): the searches already finished are in the journal
            raise PresetModelError(worker_died(exc) + "; the searches finished before it are kept: run the same "
                                   "command again to go on (or with fewer --jobs if the system is short of memory)") from None


def _weights(raw: np.ndarray) -> np.ndarray:
    """Chance of each learnable parameter to be mutated ``(144,)``: low for parameters that cannot change the sound.

    An operator is heard when its output level is above 0 and it is a carrier or modulates a heard
    operator (the algorithm's graph). The parameters of an unheard operator (but its output level,
    which can bring it in) and the LFO's shape when both LFO depths are 0 get a tenth of the weight.
    """
    alg = algorithm(int(raw[PARAM_BY_NAME["ALGORITHM"].voice_offset]))
    level = [int(raw[PARAM_BY_NAME[f"OP{k + 1} OUTPUT LEVEL"].voice_offset]) for k in range(6)]
    heard = [k for k, h in enumerate(alg.reaching([v > 0 for v in level])) if h]   # 0 = OP1
    w = np.ones(len(LEARNABLE_PARAMS))
    w[(_OPERATOR > 0) & ~_IS_LEVEL & ~np.isin(_OPERATOR - 1, heard)] = 0.1
    if raw[PARAM_BY_NAME["LFO PM DEPTH"].voice_offset] == 0 and raw[PARAM_BY_NAME["LFO AM DEPTH"].voice_offset] == 0:
        w[_LFO_SHAPE] = 0.1
    return w / w.sum()


def _mutate(x: np.ndarray, rng: np.random.Generator, sigma: float, weights: np.ndarray | None = None,
            jump: float = 0.0) -> np.ndarray:
    """A child of learnable values ``x (144,)``: 1–4 parameters moved on their integer steps.

    A categorical parameter, and a numerical one with probability ``jump``, takes another value of
    its range drawn uniformly; other numerical ones move by a Gaussian step of ``sigma`` × range.
    """
    y = x.copy()
    m = min(int(rng.geometric(0.5)), 4)          # 1 with p 1/2, 2 with p 1/4, ...; at most 4
    for i in rng.choice(len(x), size=m, replace=False, p=weights):
        if _CATEGORICAL[i] or (jump > 0 and rng.random() < jump):
            y[i] = (x[i] + rng.integers(1, _MAXES[i] + 1)) % (_MAXES[i] + 1)
        else:
            step = max(1, int(round(abs(rng.normal()) * sigma * _MAXES[i])))
            y[i] = np.clip(x[i] + (step if rng.random() < 0.5 else -step), 0, _MAXES[i])
            if y[i] == x[i]:  # at a bound: step inwards instead
                y[i] = np.clip(x[i] - (step if x[i] == _MAXES[i] else -step), 0, _MAXES[i])
    return y


def _voice(base: np.ndarray, x: np.ndarray) -> np.ndarray:
    raw = base.copy()
    raw[_OFFSETS] = x
    return apply_fixed(raw)


def refine(target: np.ndarray, notes, candidates: list[tuple[str, np.ndarray]], spec: EngineSpec,
           hold: float, release: float, cfg: RefineConfig = RefineConfig(), jobs: int = 1,
           progress: bool = False, desc: str = "refine") -> Refined:
    """Render and score ``candidates`` against ``target``, then search from the best one (module docstring).

    Args:
        target: ``(len(notes), samples)`` float32, the input on each given note, plug-in scale;
            samples = ``int((hold + release) · spec.sample_rate)``.
        notes: the given ``(pitch, velocity)`` notes, one per row of ``target``.
        candidates: ``(label, raw (145,) uint8)``; at least one.
        spec, hold, release: how to render (the dataset's engine and note length).
        cfg: budget, seed.
        jobs: render processes.
        progress: show a tqdm bar with the best distance so far.

    Raises:
        PresetModelError: no candidates.
    """
    if not candidates:
        raise PresetModelError("refine needs at least one candidate voice")
    t0 = time.perf_counter()
    target = np.atleast_2d(np.asarray(target, np.float32))
    render = _Renderer(target, spec, notes, hold, release, jobs,
                       noise_floors(target, spec.sample_rate) if cfg.noise_floor else None)
    from dexed_data.console import progress as progress_bar

    bar = progress_bar(progress, total=max(cfg.budget, len(candidates)), desc=desc, unit="render", leave=False)
    trace: list[float] = []
    best: list = [float("inf"), None, None]     # distance, raw, audio

    def score(raws: list[np.ndarray], audio_out: list | None = None) -> list[float]:
        out = render(raws)
        for raw, (d, audio) in zip(raws, out):
            if d < best[0] or best[1] is None:
                best[:] = [d, raw, audio]
            trace.append(best[0])
        bar.set_postfix(best=f"{best[0]:.2f}", refresh=False)
        bar.update(len(raws))
        if audio_out is not None:
            audio_out.extend(a for _, a in out)
        return [d for d, _ in out]

    with bar:   # closed on an interrupt too: the error line stays a log's last
        labels = [k for k, _ in candidates]
        raws = [apply_fixed(np.asarray(r, np.uint8).reshape(145)) for _, r in candidates]
        audios: list = []
        cand_d = score(raws, audios)
        if cfg.transpose > 0 and cfg.budget - render.count > 0:
            moved = _transposed(target, labels, raws, cand_d, audios, spec.sample_rate, cfg.transpose)
            moved = moved[:cfg.budget - render.count]
            if moved:
                cand_d += score([r for _, r in moved])
                labels += [k for k, _ in moved]
                raws += [r for _, r in moved]
        order = sorted(range(len(raws)), key=lambda i: (cand_d[i], i))
        donors = [raws[i] for i in order[1:1 + cfg.donors] if np.isfinite(cand_d[i])]
        if donors and cfg.budget - render.count > 0:
            _crossover(donors, score, cfg.budget - render.count, best)
        left = cfg.budget - render.count
        if left > 0:
            start = best[1]      # the best voice so far (score keeps the earliest of ties)
            _es(start, score, left, cfg, best)
    return Refined(best[1].copy(), float(best[0]), best[2], list(zip(labels, cand_d)),
                   render.count, time.perf_counter() - t0, trace)


#: A candidate whose partials sit this many cents or more off the input's is tried transposed.
TRANSPOSE_CENTS = 20.0

#: What a transposed candidate's label adds to its candidate's: ``"nearest-3 moved by +403 cents"``.
MOVED = " moved by "


def _transposed(target: np.ndarray, labels: list[str], raws: list[np.ndarray], dist: list[float],
                audios: list[np.ndarray], sample_rate: int, n: int) -> list[tuple[str, np.ndarray]]:
    """The ``n`` best audible candidates moved onto the input's pitch where they sit off it:
    ``(label + " moved by ±C cents", raw)``, none for a candidate within :data:`TRANSPOSE_CENTS`
    or one :func:`transpose_voice` cannot move. The shift is the log-frequency cross-correlation of
    the long-term spectra on all given notes (±600 cents), so it needs no fundamental."""
    from .metrics import pitch_offset_cents

    out = []
    for i in sorted((i for i in range(len(raws)) if np.isfinite(dist[i])), key=lambda i: (dist[i], i))[:n]:
        cents = pitch_offset_cents(target, audios[i], sample_rate)
        if np.isfinite(cents) and abs(cents) >= TRANSPOSE_CENTS:
            moved = transpose_voice(raws[i], -cents)
            if moved is not None:
                out.append((f"{labels[i]}{MOVED}{-cents:+.0f} cents", moved))
    return out


#: The blocks :func:`_crossover` exchanges: each operator's parameters, then the voice's own.
_BLOCKS: tuple[np.ndarray, ...] = tuple([_OPERATOR == k for k in range(1, 7)] + [_OPERATOR == 0])


def _crossover(donors: list[np.ndarray], score, budget: int, best: list) -> None:
    """Try each donor's operators in the best voice: per donor (nearest first), one batch of
    children that each take one block of :data:`_BLOCKS` (an operator, or the voice's global
    parameters) from the donor where it differs; the best child replaces the best voice when it is
    better. Neighbouring presets often hold the target's operator where the nearest one
    does not; a whole operator is a move the one-parameter steps of the search rarely make."""
    for donor in donors:
        x = best[1][_OFFSETS]
        kids = [np.where(block, donor[_OFFSETS], x) for block in _BLOCKS]
        kids = [k for k in kids if not np.array_equal(k, x)][:budget]
        if not kids:
            continue
        score([_voice(best[1], k) for k in kids])   # score() keeps the best (ties: the earlier voice)
        budget -= len(kids)
        if budget <= 0:
            return


def _moves(x: np.ndarray, child: np.ndarray) -> list[tuple[int, int]]:
    """The moves that make ``child`` from ``x``: (parameter, direction ±1), or (parameter, value) if categorical."""
    return [(int(j), int(child[j]) if _CATEGORICAL[j] else int(np.sign(child[j] - x[j])))
            for j in np.flatnonzero(child != x)]


def _predict(history: dict, moves: list) -> float:
    """Predicted change of distance of a child: the mean over its moves of their mean past change (0 if untried)."""
    return sum(history[m][0] / history[m][1] if m in history else 0.0 for m in moves) / max(1, len(moves))


def _es(start: np.ndarray, score, budget: int, cfg: RefineConfig, best: list) -> None:
    """The (1+λ) evolution strategy on integer steps (module docstring); updates ``best`` through ``score``."""
    rng = np.random.default_rng(cfg.seed)
    x, fx = start[_OFFSETS].astype(np.int64), best[0]
    sigma = 0.1
    w = _weights(start)
    history: dict = {}                    # move → [sum of distance changes, count]
    while budget > 0:
        n = min(cfg.offspring, budget)
        screening = cfg.screen > n
        drawn = [_mutate(x, rng, sigma, w, cfg.jump) for _ in range(cfg.screen if screening else n)]
        picked = range(n)
        if screening:
            moves = [_moves(x, k) for k in drawn]
            pred = np.array([_predict(history, m) for m in moves]) + rng.random(len(drawn)) * 1e-6
            picked = np.argsort(pred, kind="stable")[:n]
        kids = [drawn[j] for j in picked]
        ds = score([_voice(start, k) for k in kids])
        if screening:
            for j, d in zip(picked, ds):
                if np.isfinite(d):
                    for m in moves[j]:
                        h = history.setdefault(m, [0.0, 0])
                        h[0], h[1] = h[0] + (d - fx), h[1] + 1
        budget -= n
        i = int(np.argmin(ds))
        improved = ds[i] < fx
        if ds[i] <= fx:
            x, fx = kids[i], ds[i]
            w = _weights(_voice(start, x))
        sigma = min(0.5, sigma * 1.5) if improved else max(0.01, sigma * 0.8)


class RefineJournal:
    """The presets ``evaluate --refine`` (or ``match --refine``) has finished, one JSON line each,
    fsynced as it goes, so that an interrupted evaluation (Ctrl-C, a kill, a full disk) resumes
    where it stopped: run the same command again. A line holds the evaluation's ``key`` (dataset
    file, render settings, budget, seed, search settings: any change and nothing is reused), the
    row, digests of the true and the predicted preset (``match``: the sound's audio and its notes),
    the refined preset and what the caller keeps with it (``extra``). A cut-off last line (killed
    mid-write) is ignored. Held with an exclusive ``flock`` while open: a second command on the
    same output stops at once.
    """

    def __init__(self, path: str | Path, key: str, what: str = "preset-model evaluate --refine") -> None:
        self.path, self.key, self.what = Path(path), key, what
        #: (row, true, pred digests) → (the refined preset, what the caller kept with it: add's extra)
        self.done: dict[tuple[int, str, str], tuple[np.ndarray, dict]] = {}
        self.kept = 0   # lines of this key in the file (read, then written)
        self._file = None

    def __enter__(self) -> "RefineJournal":
        import fcntl
        import json

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)   # as the report's own folder is made
            self._file = open(self.path, "a+b", buffering=0)   # unbuffered: a failed write leaves nothing to flush
        except OSError as exc:
            raise PresetModelError(f"cannot keep the refined presets in {self.path} ({exc.strerror or exc}); "
                                   "choose another -o") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise PresetModelError(f"{self.path} is being written by another `{self.what}` on the "
                                   "same output; wait for it to finish, or give this one another -o") from None
        self._file.seek(0)
        data = self._file.read()
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                if entry["key"] == self.key:
                    extra = entry.get("extra")
                    self.done[(int(entry["row"]), str(entry["true"]), str(entry["pred"]))] = \
                        (validate_raw(entry["raw"]), extra if isinstance(extra, dict) else {})
            except (EngineError, ValueError, KeyError, TypeError, OverflowError):
                continue                        # the line a kill cut off, another version's, or a damaged one
        self.kept = len(self.done)
        if data and not data.endswith(b"\n"):
            self._file.write(b"\n")           # the next line starts on its own
        return self

    def __exit__(self, *exc) -> None:
        import contextlib
        import os

        with contextlib.suppress(OSError):
            if os.fstat(self._file.fileno()).st_size == 0:   # nothing kept: no file left (nor the folder),
                self.path.unlink()                            # removed while it is still locked
        try:
            self._file.close()
        except OSError:   # the error that stopped the writing is already on its way (add() names the file)
            pass

    @staticmethod
    def digest(raw: np.ndarray) -> str:
        """Of a preset (``uint8`` values) or of audio (floats, as float32 with its shape)."""
        import hashlib

        a = np.asarray(raw)
        data = (np.ascontiguousarray(a, "<f4").tobytes() + repr(a.shape).encode() if a.dtype.kind == "f"
                else np.ascontiguousarray(a, np.uint8).tobytes())
        return hashlib.sha256(data).hexdigest()[:16]

    def entry(self, row: int, true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, dict] | None:
        """The kept ``(refined preset, extra)`` of this row, true and predicted preset, or None."""
        return self.done.get((int(row), self.digest(true), self.digest(pred)))

    def add(self, row: int, true: np.ndarray, pred: np.ndarray, raw: np.ndarray, extra: dict | None = None) -> None:
        import json
        import os

        line = json.dumps({"key": self.key, "row": int(row), "true": self.digest(true), "pred": self.digest(pred),
                           "raw": np.asarray(raw, np.uint8).tolist(), **({"extra": extra} if extra else {})}) + "\n"
        try:
            left = memoryview(line.encode())
            while left:                       # an unbuffered write may take part of the line (a disk filling)
                left = left[self._file.write(left):]
            os.fsync(self._file.fileno())
        except OSError as exc:
            from dexed_data.outputs import failure_reason

            raise PresetModelError(f"cannot keep the refined presets in {self.path} ({failure_reason(exc)}); "
                                   f"{self.kept} of them are kept there: free space and run the same command again to "
                                   "go on from them") from None
        self.kept += 1


def refine_presets(settings, data: str | Path, rows: np.ndarray, train_rows: np.ndarray, pred: np.ndarray,
                   budget: int, jobs: int = 1, seed: int = 0, progress: bool = False,
                   journal: str | Path | None = None, timing: dict | None = None) -> np.ndarray:
    """``preset-model evaluate --refine N``: each predicted preset ``pred (len(rows), 145)`` refined against its row's sound.

    The true preset of each dataset row is rendered on all the dataset's notes (``settings``:
    :class:`~preset_model.inference.RenderSettings`); the candidates are the prediction, the
    nearest presets among ``train_rows`` and a sine voice; returns the refined presets ``(len(rows), 145)`` uint8.
    With ``journal`` (a file), each finished preset is kept there as it is done (:class:`RefineJournal`),
    and the presets an earlier, interrupted call with the same settings finished are taken from it.
    ``timing`` (a dict) gets ``"seconds"``: the searches' wall-clock seconds, those of an earlier,
    interrupted call included (kept in the journal with each preset), and ``"resumed"``: the presets
    taken from the journal.
    """
    import contextlib
    import hashlib
    import json
    import os
    import sys
    import time

    import h5py

    from dexed_data.engines import make_engine

    with h5py.File(data, "r") as h5:
        raw_all = h5["presets/raw"][:]
    cfg = RefineConfig(budget=budget, seed=seed)
    notes = list(settings.notes)
    st = os.stat(data)
    key = hashlib.sha256(json.dumps([os.path.realpath(data), st.st_size, st.st_mtime_ns, repr(settings.engine_spec),
                                     notes, settings.hold, settings.release, repr(settings.mel), cfg.key(),
                                     hashlib.sha256(np.asarray(train_rows, np.int64).tobytes()).hexdigest()],
                                    default=str).encode()).hexdigest()[:16]
    rows, pred = np.asarray(rows), np.asarray(pred, np.uint8)
    out = []
    with (RefineJournal(journal, key) if journal is not None else contextlib.nullcontext()) as kept:
        found = [kept.entry(r, raw_all[r], p) if kept is not None else None for r, p in zip(rows, pred)]
        resumed = sum(f is not None for f in found)
        if resumed:
            print(f"resuming: {resumed} of {len(rows)} presets were refined by an earlier, "
                  f"interrupted run of this evaluation ({journal})", file=sys.stderr)
        index = engine = None
        seconds = 0.0
        for i, (r, p, done) in enumerate(zip(rows, pred, found)):
            if done is not None:
                out.append(done[0])
                seconds += float(done[1].get("seconds", 0.0))   # a journal of an older version kept none
                continue
            t0 = time.perf_counter()
            if engine is None:
                index, engine = NearestPresets(data, train_rows), make_engine(settings.engine_spec)
            target = engine.render(raw_all[r], notes, settings.hold, settings.release).audio
            cands = [("prediction", p)] + sound_candidates(target, range(len(notes)), settings.mel, None, None, index,
                                                           cfg)
            out.append(refine(target, notes, cands, settings.engine_spec, settings.hold, settings.release, cfg, jobs,
                              progress, desc=f"preset {i + 1}/{len(rows)} (row {r})").raw)
            took = time.perf_counter() - t0
            seconds += took
            if kept is not None:
                kept.add(r, raw_all[r], p, out[-1], {"seconds": round(took, 3)})
        if timing is not None:
            timing.update(seconds=seconds, resumed=resumed)
    return np.stack(out) if out else np.zeros((0, 145), np.uint8)
