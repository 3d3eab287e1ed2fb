"""``preset-model match``: audio recordings → the DX7 voice the model infers, re-rendered and scored.

Audio files (any format soundfile reads, any sample rate, length or channel count) are mixed to
mono, resampled to the run's rate, and trimmed or zero-padded to the run's note length (hold +
release), starting at the file's first sample. Levels are taken as they are: 1.0 = full scale of
the Dexed plug-in's output (use ``gain_db`` for recordings at another level, or ``gain_db="auto"``
to bring each sound's loudest file to the peak of a typical voice, :data:`AUTO_PEAK_DB`).

How files become voices, for a model with K input notes (listed by ``preset-model match``
and in :attr:`preset_model.inference.Run.input_notes`):

* K = 1: every file is one sound → one voice per file. A file named by a note
  (``GANJA_BASS_40-85.wav``: any MIDI pitch 0–127 and velocity 1–127 after the last ``_``, space
  or ``-``) is that note, pitch-shifted to the model's note for the model's input, as missing
  notes are filled below; other files are taken as played on the model's note.
* K > 1, files named by note: a file whose name ends in ``_PITCH-VELOCITY`` (``piano_40-85.wav``,
  as ``dexed-data export-wav`` writes) is that note, whatever the order on the command line; a
  note that is not one of the model's stands for the nearest of them (pitch, then velocity) and
  is pitch-shifted to it. Files whose names differ only by that suffix are one sound → one
  voice; the sound may have any subset of the K notes (one file is enough), and the missing notes
  are filled from the given note nearest in pitch. Either every file is named by note or none.
* K > 1, a multiple of K files not named by note: each K consecutive files are one sound, file j
  played on the model's note j (in the model's order) → one voice per K files.
* K > 1, one file not named by note, or ``each=True``: every file is its own sound played on
  MIDI 60 (velocity 85) (or on the note its name gives), standing for the model's note nearest it
  (shifted to it if it is not 60:85); the other notes are filled from it.

A missing note is filled with the given recording pitch-shifted by resampling (the envelope
speeds up or slows down with it, as a DX7's keyboard rate scaling roughly does). Only the given
notes are scored, each against the re-render on the note the file was played on. Voice names
come from the file names (the note suffix and a leading
``export-wav`` id removed; for K positional files, their common beginning).

Scores per input file (re-render of its note vs the input): ``similarity`` = 1 − spectral
convergence (0–1, 1 = same magnitude spectrogram), the log-spectral MAE in dB, and the pitch
offset of the re-render in cents (:func:`preset_model.metrics.pitch_offset_cents`): the paper
found inferred presets slightly detuned (its master-tune issue), so the offset is reported (NaN
when the input or the re-render is near-silent, where no pitch can be measured). ``level_db`` is
the re-render's RMS level relative to the input's: a re-render more than :data:`QUIET_DB` dB
quieter than its input is flagged (``preset-model match`` prints a warning), since the scores
then compare a sound against near-silence.

With ``refine=N`` the voice is searched for instead of taken as inferred: the model's voice, voices
sampled around it, the nearest training presets by spectrogram and a sine voice are rendered on
the given notes and scored, and the best is improved by a local search within N renders
(:mod:`preset_model.refine`). Without a run (``run=None, data=DATASET``) the dataset's training
presets are the candidates: the nearest one, or the search from them with ``refine``.

Example::

    >>> from preset_model.match import match_files
    >>> result = match_files("runs/paper", ["piano.wav"])        # doctest: +SKIP
    >>> result.voices[0].name, result.voices[0].scores[0].similarity   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import numbers
import os
import re
import stat
import sys
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from dexed_data.schema import pad_name
from dexed_data.sysex import VOICES_PER_BANK

from .errors import PresetModelError
from .inference import Run, ScoringEngine, load_run, read_render_settings
from .metrics import FLOOR_DB, audio_metrics, pitch_offset_cents, similarity
from .refine import (NearestPresets, RefineConfig, RefineJournal, Refined, noise_floors, refine as search, sound_candidates,
                     training_rows)

#: The note a lone recording is taken to be (PAPER.md's single-note input).
LONE_NOTE = (60, 85)
#: A re-render this many dB (RMS) quieter than its input is flagged as much quieter.
QUIET_DB = 20.0
#: A note named at the end of a file name, ``…_PITCH-VELOCITY`` (``dexed-data export-wav``'s names).
_NOTE_SUFFIX = re.compile(r"(_)(\d{1,3})-(\d{1,3})$")
#: An ending like a note after another separator: ``take-1-2`` (take 1, part 2) is not note 1 at velocity 2.
_NOTE_LIKE = re.compile(r"([ -])(\d{1,3})-(\d{1,3})$")
#: The preset id ``dexed-data export-wav`` puts first (16 hex digits and ``_``).
_EXPORT_ID = re.compile(r"^[0-9a-f]{16}_")


class AudioInputError(PresetModelError):
    """An audio file cannot be read or the files do not fit the model's notes."""


#: Longest audio file accepted (s), judged from its header before reading it.
MAX_AUDIO_SECONDS = 600.0
#: Highest sample rate accepted (Hz): 8 × 192 kHz.
MAX_SAMPLE_RATE = 1_536_000
#: Lowest sample rate accepted (Hz): telephone audio is 8 kHz; a 1-Hz "recording" is not sound.
MIN_SAMPLE_RATE = 4_000
#: Largest sample magnitude accepted, after the gain (80 dB over full scale; the engine's own output
#: stays within ±8): beyond ~1e19 the spectra overflow float32 and every distance is NaN.
MAX_PEAK = 1e4
#: A note's samples peaking this many dB below the rest of its file are a lead-in (hiss before the
#: sound), not the sound: the file is refused with where its sound starts.
LEAD_IN_DB = 40.0
#: The pitch offset is measured within ± this many cents; one at the edge is "beyond" it.
PITCH_RANGE_CENTS = 600.0
#: Largest ``gain_db`` magnitude accepted.
MAX_GAIN_DB = 120.0


#: ``gain_db="auto"``: each sound is scaled so that its loudest given file peaks here (dBFS of the
#: plug-in's output): the median peak of the CC0 corpus's voices on note 60:85 (−14.6 dBFS; −12.6 to
#: −17.6 on the paper's six notes). A recording normalised near 0 dBFS is 15 dB louder than a
#: typical voice, and a search at that level trades timbre for loudness.
AUTO_PEAK_DB = -14.5

#: A sound whose loudest file peaks above this (dBFS, after ``gain_db``) is louder than 99.7 % of the
#: corpus's voices on their loudest note: ``preset-model match`` suggests ``--gain-db auto``.
LOUD_PEAK_DB = -3.0


def check_gain(gain_db: float) -> None:
    """Refuse a gain that is not a finite number of dB within ±:data:`MAX_GAIN_DB` (``"auto"`` is
    :func:`match_files`'s, checked there)."""
    if not (isinstance(gain_db, numbers.Real) and np.isfinite(gain_db) and abs(gain_db) <= MAX_GAIN_DB):
        raise AudioInputError(f"--gain-db {gain_db}: must be 'auto' or a finite number of dB between "
                              f"-{MAX_GAIN_DB:g} and {MAX_GAIN_DB:g}")


def parse_gain(text: str) -> float | str:
    """``--gain-db``'s text → ``"auto"`` or a number of dB (checked by :func:`check_gain`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise AudioInputError(f"--gain-db {text}: must be 'auto' or a number of dB") from None
    try:
        check_gain(value)
    except AudioInputError:   # say what was typed (1e309 was shown as "inf")
        raise AudioInputError(f"--gain-db {text}: must be 'auto' or a finite number of dB between "
                              f"-{MAX_GAIN_DB:g} and {MAX_GAIN_DB:g}") from None
    return value


def auto_gain_db(audio: list[np.ndarray]) -> float:
    """The gain (dB) that brings the loudest peak of ``audio`` to :data:`AUTO_PEAK_DB`; 0 for
    near-silence (a peak below the silence level, −70 dBFS: noise, dither, channels that cancel),
    which it raised by up to 82 dB into a sound matched as if it were one (audit Z17)."""
    from dexed_data.features import SILENT_THRESHOLD_DB

    peak = max((float(np.abs(x).max()) for x in audio if x.size), default=0.0)
    if peak < 10.0 ** (SILENT_THRESHOLD_DB / 20.0):
        return 0.0
    return float(np.clip(AUTO_PEAK_DB - 20.0 * np.log10(peak), -MAX_GAIN_DB, MAX_GAIN_DB))


@contextlib.contextmanager
def decoder_messages(path: str | Path, say: bool = True):
    """Keep what a C decoder writes on the process's stderr while ``path`` is read (libmpg123 prints
    "Note: Illegal Audio-MPEG-Header …", "Trying to resync…" for a damaged MP3, lines that came before
    the command's own), and say it as one ``note:`` line when ``say``."""
    import sys
    import tempfile

    from dexed_data.console import interrupts_deferred

    try:   # before any file is opened here: with fd 2 closed, the next file opened would take its place
        os.fstat(2)
        if sys.stderr is None:
            raise ValueError("no sys.stderr")
        sys.stderr.flush()
        kept = tempfile.TemporaryFile()
    except (OSError, ValueError):   # no stderr (fd 2 closed, a library call), no temporary folder: keep nothing
        yield
        return
    with kept:
        saved = os.dup(2)
        os.dup2(kept.fileno(), 2)
        try:
            yield
        finally:
            with interrupts_deferred():   # a second Ctrl-C here must not leave fd 2 on the file (R11)
                os.dup2(saved, 2)
                os.close(saved)
        kept.seek(0)
        lines = [x.strip() for x in kept.read(1 << 16).decode(errors="replace").splitlines() if x.strip()]
    if lines and say:
        print(f"note: {path}: the audio decoder reported {len(lines)} problem line(s), e.g. {lines[0][:160]!r}: "
              "the file may be damaged; it is matched as far as it decodes", file=sys.stderr)


def load_audio(path: str | Path, sample_rate: int, n_samples: int, gain_db: float = 0.0,
               removed: list | None = None) -> np.ndarray:
    """Read ``path`` → ``(n_samples,)`` float32 mono at ``sample_rate`` Hz (resampled, trimmed/padded).

    Only the samples needed are read. Refused: a file longer than :data:`MAX_AUDIO_SECONDS` (by
    its header, before reading), samples that are NaN or infinite, a non-finite ``gain_db``, a WAV
    whose header's length ends before the note with audio left behind it. A DC offset (see
    :data:`DC_OFFSET_MIN`) is removed, with a note on stderr; ``removed`` (a list) gets the offset
    taken off (0.0 if none), for what reads the rest of the file (:func:`file_peak`, :func:`sound_onset`).
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    check_gain(gain_db)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AudioInputError(f"{path}: no such file") from None
    except OSError as exc:   # a folder above it that cannot be entered, a name too long (A12: a traceback)
        from dexed_data.inputs import lookup_failure

        raise AudioInputError(f"{path}: cannot be read: {lookup_failure(exc)}") from None
    if stat.S_ISDIR(mode):
        raise AudioInputError(f"{path} is a folder; give its audio files (e.g. {path}/*.wav)")
    if not stat.S_ISREG(mode):
        raise AudioInputError(f"{path}: not a regular file (a device or pipe); give an audio file")
    head = declared = None
    try:
        with decoder_messages(path), open(path, "rb") as fh:   # a file object: soundfile cannot open a name that is not UTF-8
            head = sf.info(fh)
            if head.samplerate < MIN_SAMPLE_RATE:
                raise AudioInputError(f"{path}: a sample rate of {head.samplerate:,} Hz, below any audio's "
                                      f"({MIN_SAMPLE_RATE:,} Hz at least); re-export the recording")
            if head.samplerate > MAX_SAMPLE_RATE:
                raise AudioInputError(f"{path}: a sample rate of {head.samplerate:,} Hz, above any audio's "
                                      f"({MAX_SAMPLE_RATE:,} Hz at most); re-export the recording")
            if head.frames / head.samplerate > MAX_AUDIO_SECONDS:
                raise AudioInputError(f"{path}: {head.frames:,} samples at {head.samplerate:,} Hz, more than the "
                                      f"{MAX_AUDIO_SECONDS:g} s accepted (only the first note length is used: "
                                      "cut the file)")
            margin = 64 if head.samplerate != sample_rate else 0   # the resampling filter's (A10: none is read
            need = int(np.ceil(n_samples * head.samplerate / sample_rate)) + margin   # at our rate)
            data_at: list = []
            declared = _declared_frames(fh, data_at)
            tail = _unexplained_tail(fh, *data_at) if data_at and declared < need - margin else 0   # (R17: not read
            if tail >= UNEXPLAINED_TAIL:                                                          # when unused)
                # soundfile reads what the header says: 11 ms of a 4 s recording were matched (audit A12)
                raise AudioInputError(f"{path}: its header says {declared / head.samplerate:.3f} s of audio, and "
                                      f"{tail:,} bytes follow it that are not part of any chunk: the header's length "
                                      "was not updated when the recording ended; repair it (e.g. `sox --ignore-length "
                                      "in.wav out.wav`) or export the recording again")
            if declared is not None and head.frames < min(declared, need - margin):
                # the reader gives what is there: the note was matched on its start and silence (audit Y3)
                raise AudioInputError(f"{path}: cut off: its header says {declared / head.samplerate:.2f} s of audio, "
                                      f"the file holds {head.frames / head.samplerate:.2f} s; export it again")
            fh.seek(0)
            x, sr = sf.read(fh, dtype="float32", always_2d=True, frames=need)
    except AudioInputError:
        raise
    except OSError as exc:   # opening it (permission denied…): soundfile's own errors are not OSErrors
        raise AudioInputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # soundfile raises its own error types and RuntimeError
        raise _unreadable(path, head, exc) from None
    if x.size == 0:
        # a cut-off OGG reads as no samples at all; a WAV whose header says 0 frames is empty, however long
        big = Path(path).stat().st_size > 4096 and declared != 0
        raise AudioInputError(f"{path}: the file holds no samples" + (
            f" that can be read, in {Path(path).stat().st_size:,} bytes: it is damaged or cut off; export it again"
            if big else ""))
    if not np.isfinite(x).all():
        raise AudioInputError(f"{path}: holds NaN or infinite samples; fix or re-export the recording")
    mono = x.mean(axis=1)
    offset = float(mono.mean(dtype=np.float64))
    # judged on half a second at least (the mean of a short clip is its sound's: R15, 132 of 384 renders cut
    # to 50 ms), and past one step of the format (8-bit files carry a writer's half-step bias)
    step = {"PCM_U8": 2.0 ** -7, "PCM_S8": 2.0 ** -7}.get(getattr(head, "subtype", ""), 0.0)
    if len(mono) >= DC_OFFSET_SECONDS * sr and abs(offset) >= max(DC_OFFSET_MIN, step) \
            and abs(offset) >= DC_OFFSET_FRACTION * float(np.abs(mono).max()):
        # no render holds one (the plug-in's DC blocker): left in, the search chased it with other voices (A12)
        mono = mono - np.float32(offset)
        print(f"note: {path}: removed a DC offset of {offset:+.4f} (a constant level, not sound: no DX7 voice "
              "has one)", file=sys.stderr)
    else:
        offset = 0.0
    if removed is not None:
        removed.append(offset)
    if sr != sample_rate:
        # a rate with few common factors with ours (44,101 Hz) would need a filter of 20 × the rate
        # taps; one within a millionth of the ratio is as good (under 0.002 cents)
        ratio = Fraction(int(sample_rate), int(sr))
        if max(ratio.numerator, ratio.denominator) > 50_000:
            ratio = ratio.limit_denominator(50_000)
        mono = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32)
    out = np.zeros(n_samples, np.float32)
    n = min(n_samples, len(mono))
    out[:n] = mono[:n]
    return out * np.float32(10.0 ** (gain_db / 20.0))


#: A recording whose mean over the samples read is at least this (of full scale) and at least
#: :data:`DC_OFFSET_FRACTION` of its peak holds a DC offset, which :func:`load_audio` removes. The
#: engine's renders never come near: measured on 900 notes of 150 corpus presets, |mean| ≤ 4.9e-5
#: and ≤ 2.2e-3 of the peak (its output stage is the plug-in's DC blocker).
DC_OFFSET_MIN = 1e-3
DC_OFFSET_FRACTION = 0.005
#: ... over this many seconds of it at least, and more than one step of an 8-bit file.
DC_OFFSET_SECONDS = 0.5

#: Bytes after a WAV's ``data`` chunk that are not RIFF chunks, from which a file whose header's
#: length ends before the note is refused as an unfinished header rather than read as a short sound
#: (an ID3v1 tag a tagger appended is 128 bytes).
UNEXPLAINED_TAIL = 4096

#: A RIFF chunk's id: four printable ASCII characters ("LIST", "id3 ", "fact").
_CHUNK_ID = re.compile(rb"[\x20-\x7e]{4}")


def _chunks_end(fh, here: int, end: int, limit: int) -> int | None:
    """Where the whole RIFF chunks of ``fh`` from offset ``here`` stop: the offset of the first bytes
    that do not make one (``end`` when they run to the end); None past ``limit`` chunks."""
    import struct

    for _ in range(limit):
        if end - here < 8:
            return here
        fh.seek(here)
        head = fh.read(8)
        size = struct.unpack("<I", head[4:])[0]
        if not _CHUNK_ID.fullmatch(head[:4]) or here + 8 + size > end:
            return here
        here = min(end, here + 8 + size + size % 2)
    return None


def _only_chunks(fh) -> bool:
    """Whether the rest of ``fh`` is nothing or whole RIFF chunks to its very end (metadata written
    after an empty ``data`` chunk), not audio a writer left behind a length of 0 (audio whose first
    bytes happen to be printable is not taken for a chunk: its chunks would not end with the file)."""
    here = fh.tell()
    end = fh.seek(0, 2)
    return _chunks_end(fh, here, end, 64) == end


def _is_folder(path) -> bool:
    """Whether ``path`` is a folder; False when it cannot be looked at (reading it then says why)."""
    try:
        return Path(path).is_dir()
    except OSError:   # a folder above it that cannot be entered (A12: PermissionError, a traceback)
        return False


def _unexplained_tail(fh, end_of_data: int, pad: int) -> int:
    """Bytes after a WAV's ``data`` chunk (ending at ``end_of_data``, ``pad`` its pad byte) that are not
    RIFF chunks: counted from where the chunks stop parsing, with or without the pad byte (libsndfile
    reads files whose writer left it out); a tail of zeros (padding) or an ID3 tag counts 0 (R15)."""
    end = fh.seek(0, 2)
    left = []
    for start in dict.fromkeys((end_of_data + pad, end_of_data)):
        here = _chunks_end(fh, start, end, 4096)
        if here is None:
            return 0   # thousands of whole chunks (cue points…): metadata, not audio (R16)
        if end - here < UNEXPLAINED_TAIL:
            return max(0, end - here)
        fh.seek(here)
        if fh.read(3) in (b"ID3", b"TAG"):
            return 0
        fh.seek(here)
        while True:   # zeros to the very end are padding; audio that starts with silence is not (R16)
            block = fh.read(1 << 20)
            if not block:
                return 0
            if block.strip(b"\0"):
                break
        left.append(end - here)
    return min(left)


def _declared_frames(fh, data_at: list | None = None) -> int | None:
    """The frames a WAV, RF64 or AIFF file's header says it holds (its ``data`` chunk's length; for
    compressed WAV data, ADPCM or GSM, blocks of many frames, its ``fact`` chunk's count; for RF64,
    the 64-bit length of its ``ds64`` chunk; an AIFF's ``COMM`` count); None for other formats,
    compressed data without a ``fact`` chunk and a length a writer left open (0xFFFFFFFF, or 0 with
    audio after it). The reader reports the frames a cut-off file holds, so a file cut inside the
    note is told apart from a short one only by its header. ``data_at`` (a list), for a WAV whose
    ``data`` chunk has a length: set to where that chunk ends and its pad byte (0 or 1), for
    :func:`_unexplained_tail`."""
    import struct

    fh.seek(0)
    head = fh.read(12)
    riff = head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"
    aiff = head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC")
    if not (riff or aiff):
        return None
    order, align, counted, long_size = ("<" if riff else ">"), None, None, None
    for _ in range(64):                                  # the chunks before the audio: a few
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
        if riff and cid == b"fmt ":
            body = fh.read(size)
            tag = struct.unpack("<H", body[:2])[0] if len(body) >= 2 else None
            if tag == 0xFFFE and len(body) >= 26:   # WAVE_FORMAT_EXTENSIBLE: the tag opens its sub-format
                tag = struct.unpack("<H", body[24:26])[0]
            # PCM, float, A-law and µ-law: a frame per block; compressed blocks (ADPCM, GSM) hold many
            align = struct.unpack("<H", body[12:14])[0] if len(body) >= 14 and tag in (1, 3, 6, 7) else None
            fh.seek(size % 2, 1)
            continue
        if riff and cid in (b"fact", b"ds64"):
            body = fh.read(size)
            if cid == b"fact" and len(body) >= 4:       # the frames of compressed data
                counted = struct.unpack("<I", body[:4])[0]
            if cid == b"ds64" and len(body) >= 16:      # RF64: the data chunk's 64-bit length
                long_size = struct.unpack("<Q", body[8:16])[0]
            fh.seek(size % 2, 1)
            continue
        if riff and cid == b"data":
            if size == 0xFFFFFFFF and head[:4] == b"RF64":
                size = long_size if long_size is not None else size
            if size == 0:   # empty, or a writer stopped before it wrote its lengths (audio after it): unknown
                return 0 if _only_chunks(fh) else None
            if not align:
                return counted
            if size == 0xFFFFFFFF and head[:4] == b"RIFF":
                return None
            if data_at is not None:
                data_at[:] = [fh.tell() + size, size % 2]
            return size // align
        if aiff and cid == b"COMM":
            body = fh.read(6)
            return struct.unpack(">I", body[2:6])[0] if len(body) == 6 else None
        fh.seek(size + size % 2, 1)
    return None


def _unreadable(path, head, exc: Exception) -> AudioInputError:
    """The error for audio that cannot be read: a file of a known format (``head``: its header was
    read) is damaged or cut off; anything else is not audio this reader knows."""
    said = str(exc).splitlines()[0] if str(exc) else repr(exc)
    said = re.sub(r"^Error opening <[^>]*>: ", "", said)   # soundfile names the file object, not the file (A12)
    if head is not None or "malformed" in said.lower():
        if head is None:   # a format it knows, cut off before its header could be read (a cut OGG)
            return AudioInputError(f"{path}: an audio file that cannot be read ({said}); it is damaged or cut off: "
                                   "export it again")
        return AudioInputError(f"{path}: a {head.format_info} file that cannot be read to its end ({said}); it is "
                               "damaged or cut off: export it again")
    return AudioInputError(f"{path}: cannot read audio ({said}); use WAV, FLAC, OGG or AIFF")


def channels_cancel(path: str | Path, frames: int = 1 << 20) -> bool:
    """Whether ``path`` has several channels that are not silent in its first ``frames`` but mix to
    silence there (channels of opposite polarity): what a file that reads as all zeros may be."""
    import soundfile as sf

    with contextlib.suppress(Exception), decoder_messages(path, say=False), open(path, "rb") as fh:   # (R15: gone)
        x, _ = sf.read(fh, dtype="float32", always_2d=True, frames=frames)
        return x.shape[1] > 1 and bool(np.abs(x).max(initial=0.0) > 0) and not np.abs(x.mean(axis=1)).max(initial=0.0) > 0
    return False


def file_peak(path: str | Path, offset: float = 0.0, after: float = 0.0) -> float:
    """The largest mono sample magnitude of ``path`` (less ``offset``, a DC offset; from ``after`` seconds
    on; read in blocks), as far as it can be read: a
    file damaged or cut off after the note is used as far as it goes (only the note is matched).
    Samples that are not sound (NaN, infinite, or beyond :data:`MAX_PEAK`) are left out: after the
    note, where nothing is matched, one such sample made the note a "lead-in" (audit Y3)."""
    import soundfile as sf

    peak, start = 0.0, 0
    with decoder_messages(path, say=False), open(path, "rb") as fh, contextlib.suppress(Exception):   # soundfile's own error types
        first = int(np.ceil(after * sf.info(fh).samplerate))
        fh.seek(0)
        for block in sf.blocks(fh, blocksize=1 << 16, dtype="float32", always_2d=True):   # (no seek: MP3, OGG)
            mono = np.abs(block.mean(axis=1) - np.float32(offset))[max(0, first - start):]
            start += len(block)
            peak = max(peak, float(mono[np.isfinite(mono) & (mono <= MAX_PEAK)].max(initial=0.0)))
    return peak


def sound_onset(path: str | Path, threshold: float, offset: float = 0.0, after: float = 0.0) -> float | None:
    """Seconds into ``path`` of its first mono sample (less ``offset``, a DC offset) at or after ``after``
    seconds reaching ``threshold`` in magnitude; None if none does."""
    import soundfile as sf

    with decoder_messages(path, say=False), open(path, "rb") as fh:
        sr, start = sf.info(fh).samplerate, 0
        first = int(np.ceil(after * sr))
        fh.seek(0)
        for block in sf.blocks(fh, blocksize=1 << 16, dtype="float32", always_2d=True):   # (no seek: MP3, OGG)
            loud = np.flatnonzero(np.abs(block.mean(axis=1) - np.float32(offset)) >= threshold)
            loud = loud[start + loud >= first]
            if loud.size:
                return (start + int(loud[0])) / sr
            start += len(block)
    return None


def shift_pitch(x: np.ndarray, semitones: float) -> np.ndarray:
    """Resample ``x`` so it plays ``semitones`` higher (shorter) or lower (longer); same length, zero-padded."""
    ratio = 2.0 ** (semitones / 12.0)
    t = np.arange(len(x)) * ratio
    return np.interp(t, np.arange(len(x)), x, right=0.0).astype(np.float32)


def voice_name(path: str | Path) -> str:
    """A DX7 voice name from a file name: printable ASCII, upper case, 10 characters."""
    return _dx7_name(Path(path).stem)


def _dx7_name(text: str) -> str:
    return pad_name(re.sub(r"[^ -~]", "_", text).upper())


@dataclass
class Score:
    """How well one input file's note is reproduced by the inferred voice."""

    file: str
    note: tuple[int, int]
    similarity: float
    log_spectral_mae: float
    pitch_offset_cents: float              # NaN when the input or the re-render is near-silent
    rerender_silent: bool = False          # the inferred voice is near-silent on this note
    level_db: float = 0.0                  # re-render RMS re the input's RMS, dB (−inf: silent re-render)
    shift_semitones: int = 0               # the note it was played on → the model's note it stands for
    rerender: np.ndarray | None = None     # (samples,) the re-render on ``note``
    model_note: tuple[int, int] | None = None   # the model's (or dataset's) note it stands for
    input_silent: bool = False             # the input is near-silent on this note (all zeros, or noise)

    @property
    def much_quieter(self) -> bool:
        """The re-render is more than :data:`QUIET_DB` dB quieter than the input."""
        return self.level_db < -QUIET_DB


@dataclass
class MatchedVoice:
    """One inferred voice: raw values, name, the inputs it came from, the re-render and its scores."""

    name: str
    raw: np.ndarray
    files: list[str]
    render: np.ndarray                     # (K_dataset, samples) re-render on every dataset note
    scores: list[Score] = field(default_factory=list)
    search: Refined | None = None          # the re-render search (refine > 0): candidates' and final distances
    gain_db: float = 0.0                   # gain applied to its files (dB; per sound with gain_db="auto")
    peak_db: float = float("-inf")         # its loudest file's peak after that gain, dBFS
    embedded: bool = False                 # re-rendered by the embedded engine (the plug-in path refuses it)
    noise_floor_db: float = -120.0         # its given notes' highest noise floor (refine.noise_floors), dB


@dataclass
class MatchResult:
    voices: list[MatchedVoice]
    notes: tuple[tuple[int, int], ...]     # the dataset's notes (rows of each render)
    sample_rate: int


def named_note(path: str | Path) -> tuple[int, int] | None:
    """The ``(pitch, velocity)`` a file's name ends with (``…_PITCH-VELOCITY``), if a valid MIDI note."""
    m = _NOTE_SUFFIX.search(Path(path).stem)
    if m is None or not (0 <= int(m[2]) <= 127 and 1 <= int(m[3]) <= 127):
        return None
    return int(m[2]), int(m[3])


def not_a_note(path: str | Path) -> str | None:
    """Why a file name that ends like a note (``_200-85``, ``-1-2``) is not taken as one, else None."""
    m = _NOTE_SUFFIX.search(Path(path).stem)
    if m is not None and named_note(path) is None:
        return f"ends like a note name ({m[0]}) but it is not a MIDI note (pitch 0–127, velocity 1–127)"
    m = _NOTE_LIKE.search(Path(path).stem)
    if m is not None:
        return (f"ends like a note name ({m[0]}), but a note is named after an underscore, "
                f"SOUND_PITCH-VELOCITY (piano_60-85.wav)")
    return None


def _rms_db(x: np.ndarray) -> float:
    ms = float(np.mean(np.square(x, dtype=np.float64)))
    return 10.0 * np.log10(ms) if ms > 0 else float("-inf")


def _sound_key(path: str | Path) -> str:
    """The file with its note suffix removed: files of one sound share it."""
    p = Path(path)
    return os.path.join(str(p.parent), _NOTE_SUFFIX.sub("", p.stem))   # "" for a file named only by its note


def _nearest(notes: tuple[tuple[int, int], ...], note: tuple[int, int], among=None) -> int:
    """Index of the note nearest ``note`` in pitch, then in velocity, among ``notes`` (or the indices
    ``among`` of them; a tie goes to the first)."""
    return min(range(len(notes)) if among is None else sorted(among),
               key=lambda j: (abs(notes[j][0] - note[0]), abs(notes[j][1] - note[1])))


def played_note(file: str, notes: tuple[tuple[int, int], ...], j: int, alone: bool) -> tuple[int, int]:
    """The note a file was played on: the one its name gives; else, for one file of a K-note
    model's sound, 60:85; else the model's note ``j`` it stands for."""
    named = named_note(file)
    if named is not None:
        return named
    return LONE_NOTE if alone and len(notes) > 1 else notes[j]


def group_files(files: list[str], notes: tuple[tuple[int, int], ...], each: bool = False,
                what: str = "model") -> list[list[tuple[int, str]]]:
    """Files → sounds: each sound a list of ``(model note index, file)`` (see the module docstring).

    A file played on a note that is not one of the model's (named by another note, or a lone file
    taken as 60:85 by a model without that note) stands for the model's nearest note, and is
    pitch-shifted to it for the model's input. ``what``: the notes' owner as messages name it
    (``"dataset"`` for ``match --data`` without a run)."""
    k = len(notes)
    if not files:
        raise AudioInputError("give at least one audio file")
    if k == 1:
        return [[(0, f)] for f in files]
    named = [named_note(f) for f in files]
    lone = _nearest(notes, LONE_NOTE)
    listed = ", ".join(f"{p}:{v}" for p, v in notes)
    if each:
        return [[(lone if n is None else _nearest(notes, n), f)] for n, f in zip(named, files)]
    if all(n is not None for n in named):
        sounds: dict[str, list[tuple[int, str]]] = {}
        played: dict[str, list[tuple[int, int]]] = {}      # the notes as named, per sound
        for n, f in zip(named, files):
            t = _nearest(notes, n)
            group = sounds.setdefault(_sound_key(f), [])
            clash = [(g, m) for (j, g), m in zip(group, played.get(_sound_key(f), [])) if j == t]
            if clash:
                stands = (f" (a note that is not one of the {what}'s, {listed}, stands for the nearest of them)"
                          if tuple(n) != tuple(notes[t]) or tuple(clash[0][1]) != tuple(notes[t]) else "")
                raise AudioInputError(f"{clash[0][0]} and {f} are both note {notes[t][0]}:{notes[t][1]} of the same "
                                      f"sound{stands}; give each note once")
            group.append((t, f))
            played.setdefault(_sound_key(f), []).append(n)
        return [sorted(g) for g in sounds.values()]
    if any(n is not None for n in named):
        first = [f for n, f in zip(named, files) if n is not None]
        raise AudioInputError(f"{first[0]} is named by note (…_PITCH-VELOCITY) but other files are not: name every "
                              f"file by its note (the {what}'s notes: {listed}), or none and give {k} files per sound "
                              f"in that order, or pass --each to match every file as its own sound")
    if len(files) % k == 0:
        return [[(j, f) for j, f in enumerate(files[i:i + k])] for i in range(0, len(files), k)]
    if len(files) == 1:
        return [[(lone, files[0])]]
    raise AudioInputError(f"{len(files)} files for a {k}-note {what}: give {k} files per sound, one per note in this "
                          f"order ({listed}), or name files by note (sound_60-85.wav: any subset of the notes, "
                          f"the others filled), or one file (taken as note 60:85, the other notes filled from it), "
                          f"or use --each to make every file its own sound")


def sound_name(files: list[str | Path]) -> str:
    """The voice name of a sound: its file name without note suffix (several files: their common beginning)."""
    stems = [_EXPORT_ID.sub("", _NOTE_SUFFIX.sub("", Path(f).stem)) for f in files]
    common = stems[0]
    for s in stems[1:]:
        while not s.startswith(common):
            common = common[:-1]
    common = common.rstrip(" _-.")
    return _dx7_name(common or stems[0] or Path(files[0]).stem)   # a file named by its note alone: that


def _match_key(loaded: Run | None, settings, index, cfg: RefineConfig) -> str:
    """What a kept search depends on besides its sound: the run's checkpoint, the dataset searched,
    the render and search settings (any change and nothing is reused)."""
    import hashlib
    import json

    def identity(path) -> list:
        st = os.stat(path)
        return [os.path.realpath(path), st.st_size, st.st_mtime_ns]

    model = hashlib.sha256()
    for tensor in (loaded.model.state_dict().values() if loaded is not None else ()):   # the weights (~0.1 s)
        model.update(tensor.detach().cpu().numpy().tobytes())
    parts = [model.hexdigest(), identity(index.data) if index is not None else None, repr(settings.engine_spec),
             [list(n) for n in settings.notes], settings.hold, settings.release, repr(settings.mel), cfg.key(),
             hashlib.sha256(np.asarray(index.rows if index is not None else [], np.int64).tobytes()).hexdigest()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _kept_search(kept, i: int, audio: np.ndarray, idx: list[int]) -> Refined | None:
    """The search an interrupted run of this match finished for sound ``i`` (None: not kept);
    ``idx``: what the search was given besides the audio (its notes)."""
    found = kept.entry(i, audio, np.asarray(idx, np.uint8)) if kept is not None else None
    if found is None:
        return None
    raw, e = found
    try:
        return Refined(raw, float(e["distance"]), np.zeros((0, 0), np.float32),
                       [(str(k), float(d)) for k, d in e["candidates"]], int(e["renders"]), float(e["seconds"]))
    except (KeyError, TypeError, ValueError):
        return None   # kept by another version: searched again


def match_files(run: str | Path | Run | None, files: list[str | Path], each: bool = False, gain_db: float | str = 0.0,
                data: str | Path | None = None, refine: int = 0, jobs: int = 1, seed: int = 0,
                progress: bool = False, journal: str | Path | None = None, noise_floor: bool = False) -> MatchResult:
    """Infer one voice per sound in ``files`` (grouping as in the module docstring), re-render and score it.

    Args:
        run: a run (folder, checkpoint or loaded), or None to match from ``data``'s presets alone
            (its notes are then the dataset's notes).
        gain_db: dB applied to every file, or ``"auto"``: per sound, the gain that brings its
            loudest file's peak to :data:`AUTO_PEAK_DB` (:func:`auto_gain_db`; reported in
            :attr:`MatchedVoice.gain_db`).
        data: the run's dataset if it moved; without a run, the dataset whose training presets are searched.
        refine: 0 keeps the model's voice (without a run: the nearest training preset by
            spectrogram); N > 0 runs :func:`preset_model.refine.refine` with a budget of N renders
            from the model's voice, samples around it, the nearest training presets and a sine voice.
        jobs: render processes of the search.
        seed: seed of the search.
        progress: show the search's progress bar.
        journal: with ``refine``, a file that keeps each sound's searched voice as it is done, so
            that an interrupted match resumes (:class:`preset_model.refine.RefineJournal`).
        noise_floor: with ``refine``, the search compares sounds above the input's own noise floor
            (:attr:`preset_model.refine.RefineConfig.noise_floor`).
    """
    from dexed_data.features import SILENT_THRESHOLD_DB, silent_notes

    if run is None:
        if data is None:
            raise PresetModelError("give a run, or --data DATASET to match from the dataset's presets alone")
        loaded, s = None, read_render_settings(data)
        notes, note_index, data_path = s.notes, tuple(range(len(s.notes))), Path(data)
    else:
        loaded = run if isinstance(run, Run) else load_run(run, data=data)
        s, notes, note_index, data_path = loaded.settings, loaded.input_notes, loaded.note_index, loaded.dataset
    files = [str(f) for f in files]
    folder = next((f for f in files if _is_folder(f)), None)
    if folder is not None:   # said before the grouping counts it as a file
        raise AudioInputError(f"{folder} is a folder; give its audio files (e.g. {folder}/*.wav)")
    groups = group_files(files, notes, each, "model" if loaded is not None else "dataset")
    if len(groups) > VOICES_PER_BANK:   # before minutes of matching, not when writing the bank
        raise PresetModelError(f"{len(groups)} sounds make {len(groups)} voices, more than one DX7 bank holds "
                               f"({VOICES_PER_BANK}); split the input into several runs")
    n = s.note_samples
    if gain_db != "auto":
        check_gain(gain_db)
    inputs, given, played, gains = [], [], [], []
    for group in groups:
        audio: list[np.ndarray | None] = [None] * len(notes)
        originals: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        offsets: list[float] = []   # DC offsets removed, one per file (the checks below read the files again)
        read = [load_audio(f, s.sample_rate, n, removed=offsets) for _, f in group]
        gain = auto_gain_db(read) if gain_db == "auto" else float(gain_db)
        read = [x * np.float32(10.0 ** (gain / 20.0)) for x in read]
        peak = max(float(np.abs(x).max()) for x in read)
        if peak > MAX_PEAK:   # float samples far past full scale: their spectra overflow float32
            loudest = group[int(np.argmax([np.abs(x).max() for x in read]))][1]
            raise AudioInputError(f"{loudest}: its samples reach {20 * np.log10(peak):.0f} dB over full scale"
                                  + (f" after --gain-db {gain:g}" if gain else "") + "; a recording lies within "
                                  "±1: scale it down (--gain-db, or --gain-db auto)")
        gains.append((gain, 20.0 * np.log10(peak) if peak > 0 else float("-inf")))
        for (j, f), x, dc in zip(group, read, offsets):
            # the rest of the file is what comes after the note (searched from the start, a sample of hiss in
            # the note that resampling took under the threshold, or content above the dataset's band, hid or
            # misplaced the sound after it: R16, R17, R18)
            note_s, rest = n / s.sample_rate, file_peak(f, dc, after=n / s.sample_rate)
            if silent_notes(x[None]).all():   # a lead-in longer than the note: the note would be matched on silence
                quiet = 10.0 ** ((SILENT_THRESHOLD_DB - gain) / 20.0)
                onset = sound_onset(f, quiet, dc, after=note_s)
                if onset is not None:
                    loud = sound_onset(f, max(quiet, 0.1 * rest), dc, after=note_s)   # past a hiss at −68 dBFS
                    raise AudioInputError(
                        f"{f}: silent for the whole {note_s:.2f} s that a note lasts, and its sound starts at "
                        f"{onset:.2f} s" + (f" (loud from {loud:.2f} s)" if loud is not None and loud - onset >= 0.1
                                            else "") + "; cut the silence before the note (a note starts at the "
                        "beginning of its file)")
            if float(np.abs(x).max(initial=0.0)) < rest * 10.0 ** ((gain - LEAD_IN_DB) / 20.0):
                # hiss before the sound: the note length holds noise only (audit Z17: matched to it, unsaid)
                onset = sound_onset(f, rest * 10.0 ** (-20.0 / 20.0), dc, after=note_s)
                if onset is not None:
                    raise AudioInputError(
                        f"{f}: the {n / s.sample_rate:.2f} s that a note lasts peak more than {LEAD_IN_DB:g} dB "
                        f"below the rest of the file, whose sound starts at {onset:.2f} s; cut what comes before the "
                        "note (a note starts at the beginning of its file), or, if the note is what comes first, cut "
                        "the louder sound after it")
            note = played_note(f, notes, j, alone=len(group) == 1)
            originals[j] = (x, note)
            audio[j] = x if note == notes[j] else shift_pitch(x, notes[j][0] - note[0])
            if note != notes[j] and silent_notes(audio[j][None]).all() and not silent_notes(x[None]).all():
                # moved down by resampling, the note length takes only the recording's first part
                used = len(x) * 2.0 ** ((notes[j][0] - note[0]) / 12.0) / s.sample_rate
                raise AudioInputError(
                    f"{f}: played on {note[0]}:{note[1]}, it is moved {abs(notes[j][0] - note[0])} semitones "
                    f"down to the model's note {notes[j][0]}:{notes[j][1]}, which uses its first {used:.2f} s "
                    "only, and they are silent; cut the silence before the note (a note starts at the beginning "
                    "of its file)")
        for j in range(len(notes)):
            if audio[j] is None:  # from the given note nearest in pitch, then in velocity
                src = _nearest(notes, notes[j], among=[g for g, _ in group])
                audio[j] = shift_pitch(audio[src], notes[j][0] - notes[src][0])
        inputs.append(np.stack(audio))
        given.append(group)
        played.append(originals)
    db = np.stack([loaded.spectrogram(a) for a in inputs]) if loaded is not None else None
    index = None
    if (refine > 0 or loaded is None) and data_path is not None and Path(data_path).is_file():
        train_ids = loaded.checkpoint["split"]["train"] if loaded is not None else None
        rows = training_rows(data_path, train_ids)
        if train_ids is not None and len(train_ids) and not len(rows):
            raise PresetModelError(f"{data_path}: none of the run's {len(train_ids)} training presets is in this "
                                   "dataset, so it is not the one the run was trained on; pass that one with --data")
        index = NearestPresets(data_path, rows)
    if loaded is None and index is None:
        raise PresetModelError(f"{data}: no dataset to take presets from")
    cfg = RefineConfig(budget=refine, seed=seed, noise_floor=noise_floor)
    raws, searches, floors = [], [], []
    kept_journal = (RefineJournal(journal, _match_key(loaded, s, index, cfg), "preset-model match --refine")
                    if refine > 0 and journal is not None else contextlib.nullcontext())
    with kept_journal as kept:
        reused = 0
        for i, (group, audio) in enumerate(zip(given, inputs)):
            idx = [note_index[j] for j, _ in group]                           # given notes among the dataset's
            target = np.stack([audio[j] for j, _ in group])
            # for match's hint, only where a search runs (90 s notes at 96 kHz: a long STFT for nothing)
            floors.append(float(noise_floors(target, s.sample_rate)[:, 0].max()) if refine > 0 else FLOOR_DB)
            # the search renders each file's note at the pitch its audio was moved to and the velocity it
            # was played at (a 60:127 recording was searched at the model's 60:85: an exact preset scored 14)
            heard = [(s.notes[k][0], played[i][j][1][1]) for (j, _), k in zip(group, idx)]
            asked = np.asarray(idx + [v for _, v in heard], np.uint8)         # what the journal keys the search by
            found = None
            if refine > 0:
                found = _kept_search(kept, i, audio, asked)
                if found is None and all(v == s.notes[k][1] for (_, v), k in zip(heard, idx)):
                    found = _kept_search(kept, i, audio, idx)   # kept before the key held the velocities
                reused += found is not None
                if found is None:
                    cands = sound_candidates(target, idx, s.mel, loaded, None if db is None else db[i], index, cfg)
                    found = search(target, heard, cands, s.engine_spec, s.hold, s.release, cfg,
                                   jobs, progress, desc=sound_name([f for _, f in group]).strip() or "sound")
                    if kept is not None:
                        kept.add(i, audio, asked, found.raw,
                                 {"distance": found.distance, "candidates": found.candidates,
                                  "renders": found.renders, "seconds": found.seconds})
                raw = found.raw
            elif loaded is not None:
                raw = loaded.infer_db(db[i:i + 1])[0]
            else:
                raw = sound_candidates(target, idx, s.mel, None, None, index, replace(cfg, neighbours=1))[0][1]
            raws.append(raw)
            searches.append(found)
        if reused:
            import sys

            print(f"resumed: {reused} of {len(given)} sounds were searched by an earlier, interrupted run of this "
                  f"match ({journal})", file=sys.stderr)
    engine = ScoringEngine(s.engine_spec)   # a voice the plug-in path refuses: the embedded engine
    voices = []
    for group, originals, raw, found, (gain, peak), floor in zip(given, played, raws, searches, gains, floors):
        before = engine.embedded
        render = engine.render(raw, s.notes, s.hold, s.release).audio
        voice = MatchedVoice(sound_name([f for _, f in group]), raw, [f for _, f in group], render, search=found,
                             gain_db=gain, peak_db=peak, embedded=engine.embedded > before, noise_floor_db=floor)
        for j, f in group:
            ref, note = originals[j]
            est = (render[s.notes.index(note)] if note in s.notes
                   else engine.render(raw, [note], s.hold, s.release).audio[0])
            quiet = silent_notes(np.stack([ref, est]))
            cents = (float("nan") if quiet.any()
                     else pitch_offset_cents(ref, est, s.sample_rate, max_cents=PITCH_RANGE_CENTS))
            voice.scores.append(Score(f, note, similarity(ref, est),
                                      audio_metrics(ref, est, s.sample_rate)["log_spectral_mae"],
                                      cents, bool(quiet[1]), _rms_db(est) - _rms_db(ref),
                                      notes[j][0] - note[0], est, notes[j], bool(quiet[0])))
        voices.append(voice)
    return MatchResult(voices, s.notes, s.sample_rate)


def write_syx(path: str | Path, raws: np.ndarray, names: list[str]) -> bytes:
    """Write voices as a single-voice dump (one voice) or a 32-voice bank (2–32 voices); returns the bytes."""
    from dexed_data.sysex import encode_bank, encode_single

    raws = np.asarray(raws, np.uint8).reshape(-1, 145)
    if len(raws) > 32:
        raise PresetModelError(f"{len(raws)} voices do not fit one DX7 bank (32); split the input into several runs")
    data = encode_single(raws[0], names[0]) if len(raws) == 1 else encode_bank(raws, list(names))
    from dexed_data.outputs import write_bytes

    write_bytes(path, data)   # atomic: a full disk leaves the previous file intact
    return data


def rerender_names(files: list[str | Path]) -> list[str]:
    """File names of the re-renders of ``files``, in order, all different: ``STEM.rerender.wav``,
    and ``STEM-2.rerender.wav``, ``STEM-3…`` for later files with the same stem (from other
    folders), skipping a number another input's own name already takes (``a-2.wav``)."""
    own = {f"{Path(f).stem}.rerender.wav" for f in files}     # each input's own name, kept for it
    taken: set[str] = set()
    names = []
    for f in files:
        stem, k = Path(f).stem, 1
        name = f"{stem}.rerender.wav"
        while name in taken or (k > 1 and name in own):
            k += 1
            name = f"{stem}-{k}.rerender.wav"
        taken.add(name)
        names.append(name)
    return names


def write_wavs(result: MatchResult, folder: str | Path) -> list[Path]:
    """Write each input file's re-rendered note to ``folder/STEM.rerender.wav`` (see :func:`rerender_names`);
    returns the paths, in the order of the scores. Each file is written atomically."""
    from dexed_data.wav import wav_bytes
    from dexed_data.outputs import write_bytes

    folder = Path(folder)
    scores = [(v, s) for v in result.voices for s in v.scores]
    out = []
    for (v, score), name in zip(scores, rerender_names([s.file for _, s in scores])):
        if score.rerender is not None:
            audio = score.rerender
        else:
            audio = v.render[[tuple(n) for n in result.notes].index(tuple(score.note))]
        path = folder / name
        write_bytes(path, wav_bytes(audio, result.sample_rate), "wav file")
        out.append(path)
    return out
