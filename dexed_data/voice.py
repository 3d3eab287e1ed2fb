"""One DX7 voice from wherever it is (a ``.syx`` file, a catalogue or dataset row, raw values),
rendered exactly as ``dexed-data render`` renders it.

``dexed-data render`` applies the paper's fixed voice byte (TRANSPOSE = 24, no transpose) before
rendering; the engine's output stage holds the other fixed parameters (filter open, unity output,
master tune centred, all operators on). :func:`render_voice` does the same, so a preset rendered
here equals its row of a dataset rendered with the same settings, sample for sample.

It is also what ``dexed_data.render(...)`` calls (the ``dexed_data.render`` module is callable).

Example::

    >>> import dexed_data
    >>> from dexed_data.voice import load_voice
    >>> v = load_voice("presets/toolkit_bank_a.syx:1")          # N counted from 1, as on a DX7
    >>> v.name, v.raw.shape
    ('TINE EP   ', (145,))
    >>> audio = dexed_data.render(v, notes=[(60, 85), (72, 100)], hold=0.5, release=0.25)
    >>> audio.shape, audio.dtype                                # (notes, samples) at 22,050 Hz
    ((2, 16537), dtype('float32'))
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DexedDataError
from .schema import SOUND_BYTES, VOICE_MAX, VOICE_PARAMS, apply_fixed

#: The paper's six (MIDI pitch, velocity) pairs, ``dexed-data render``'s default.
DEFAULT_NOTES: tuple[tuple[int, int], ...] = ((40, 85), (50, 85), (60, 42), (60, 85), (60, 127), (70, 85))


@dataclass(frozen=True)
class Voice:
    """A DX7 voice: raw values ``(145,)`` uint8 in voice order (as found, fixed bytes not applied),
    its 10-character name and where it came from (``"FILE.syx:N"``, N from 1)."""

    raw: np.ndarray
    name: str
    source: str = ""
    repairs: tuple[str, ...] = ()   # what reading it repaired (the import's messages), if anything


def load_voice(spec: str | Path) -> Voice:
    """``"FILE.syx:N"`` (N from 1, as on the DX7) or ``"FILE.syx"`` (a file with exactly one voice).

    N counts the file's voices in order, across its SysEx messages: in a file of two banks, voice 4
    of the second (``dexed-data list``: ``FILE:4 (message 2)``) is ``FILE:36``. The voice's
    :attr:`Voice.source` then names its message and voice too.

    Any file ``dexed-data import-sysex`` reads works (banks, single-voice dumps, ``.mid``, raw
    voice data); voices come out repaired as the import repairs them.

    Raises:
        DexedDataError: no such file, no voice in it, or N out of range.
    """
    from .sysex import decode_file

    path, sep, index = str(spec).rpartition(":")
    if not sep or Path(str(spec)).exists():     # a name holding a colon is a name
        path, index = str(spec), ""
    elif not (index.isascii() and index.isdigit()):
        if path and Path(path).exists():   # ("" is the current folder: ":x" names no file, said below)
            raise DexedDataError(f"{spec}: {index!r} is not a voice number; write {path}:N, N a whole number "
                                 "from 1")
        path, index = str(spec), ""
    if path == "" and sep:   # ":1" (Path("") is the current folder, "a folder")
        raise DexedDataError(f"{spec}: no file named before the ':'; write voices as FILE.syx:N, N from 1")
    if not Path(path).is_file():
        what = ("a folder, not a file" if Path(path).is_dir() else "not a regular file (a device or pipe)"
                if Path(path).exists() else "no such file")
        raise DexedDataError(f"{path}: {what} (write voices as FILE.syx:N, N from 1)")
    decoded = decode_file(path, full_voice=int(index) - 1 if index else 0)   # that voice's repairs in full
    voices = decoded.voices
    if not voices:
        raise DexedDataError(f"{path}: no DX7 voice found in the file")
    if not index:
        if len(voices) != 1:
            raise DexedDataError(f"{path} holds {len(voices)} voices; say which, e.g. {path}:1 (counted from 1)")
        n = 1
    else:
        n = int(index)
        if not 1 <= n <= len(voices):
            held = "one voice (1)" if len(voices) == 1 else f"voices 1–{len(voices)}"
            raise DexedDataError(f"{spec}: voice {n} does not exist; {path} holds {held}")
    v = voices[n - 1]
    repairs = tuple(p.message for p in (*decoded.problems, *v.problems) if p.voice is None or p in v.problems)
    source = f"{path}:{n}"
    if len({u.message_index for u in voices}) > 1:   # N counts across them; `dexed-data list` names it like this
        source += f" (message {v.message_index + 1}, voice {v.voice_index + 1})"
    return Voice(np.array(v.raw, np.uint8), v.name, source, repairs)


def raw_values(voice) -> np.ndarray:
    """A voice's raw values ``(145,)`` uint8, checked: whole numbers within each parameter's range.

    ``voice``: raw values (any integer or whole-float array), ``"FILE.syx:N"``, or an object with
    ``.raw`` (a :class:`Voice`, a dataset preset, a decoded voice). Raises :class:`DexedDataError`
    naming what is wrong, never a silent cast (1.5 → 1, 261 → 5, −1 → 255).
    """
    if isinstance(voice, (str, Path)):
        return load_voice(voice).raw
    raw = np.asarray(getattr(voice, "raw", voice))
    if raw.shape != (SOUND_BYTES,):
        raise DexedDataError(f"a voice is raw values of shape ({SOUND_BYTES},), a 'FILE.syx:N' string, or an "
                             f"object with .raw (a Voice, a dataset preset); got shape {raw.shape}")
    odd = np.ones(raw.shape, bool)
    if raw.dtype.kind in "biuf":
        as_float = raw.astype(np.float64)
        odd = ~np.isfinite(as_float) | (as_float != np.round(as_float))
    if odd.any():
        raise DexedDataError(f"a voice's raw values are whole numbers (the DX7's bytes), got {raw.dtype} values "
                             f"such as {raw[odd][:1].tolist()}")
    if raw.dtype.kind in "if" and raw.min() < 0:
        i = int(np.argmin(raw))
        raise DexedDataError(f"a voice's raw values are 0 or more, got {raw[i]} at byte {i}")
    over = np.flatnonzero(raw.astype(np.float64) > VOICE_MAX)   # before any integer cast: 2**64 − 1 wrapped
    if over.size:   # checked before the cast to bytes, which would wrap 261 to 5
        names = [p.name for p in VOICE_PARAMS]
        raise DexedDataError("raw voice values out of range: " + ", ".join(
            f"{names[i]}={raw[i]} (max {VOICE_MAX[i]}, byte {i})" for i in over[:4])
            + (f" and {over.size - 4} more" if over.size > 4 else ""))
    return raw.astype(np.uint8)


def render_voice(voice, notes: Sequence[tuple[int, int]] = DEFAULT_NOTES, hold: float = 3.0,
                 release: float = 1.0, *, sample_rate: int = 22050, engine: str = "dexed",
                 plugin: str | None = None) -> np.ndarray:
    """Render one voice on ``notes`` as ``dexed-data render`` does: ``(notes, samples)`` float32.

    Args:
        voice: a :class:`Voice`, ``"FILE.syx:N"``, raw values ``(145,)`` (e.g. a catalogue's
            ``read_catalogue(path).raw[row]``), or any object with ``.raw`` (a preset of
            :func:`dexed_data.open_dataset`, a :class:`~dexed_data.sysex.DecodedVoice`).
        notes: ``(midi_pitch, velocity)`` pairs; default the paper's six.
        hold, release: seconds the note is held, then rendered after its note-off.
        sample_rate: Hz.
        engine, plugin: ``"dexed"`` (dexed-py, default) or ``"dawdreamer"`` with a plug-in path.

    Returns:
        Audio at the Dexed plug-in's scale (1.0 = full scale), as the plug-in outputs it (its
        per-voice clip included, :func:`~dexed_data.engines.voice_clip`);
        ``int((hold + release) · sample_rate)`` samples per note.
    """
    from .engines import EngineSpec, make_engine
    from .render import RenderConfig

    # the checks `dexed-data render` makes (notes, lengths, sample rate, engine and plug-in), but
    # none about spectrograms, which this makes none of: the smallest STFT lets any length through
    checked = RenderConfig(engine=engine, plugin=plugin, sample_rate=sample_rate, notes=tuple(notes), hold=hold,
                           release=release, n_fft=8, hop=8, n_mels=1)
    notes, hold, release = checked.notes, checked.hold, checked.release
    raw = apply_fixed(raw_values(voice))
    engines = _ENGINES.__dict__.setdefault("by_setting", {})
    eng = engines.get((engine, sample_rate, plugin))
    if eng is None:
        eng = engines[(engine, sample_rate, plugin)] = make_engine(EngineSpec(engine, int(sample_rate), plugin))
    return eng.render(raw, list(notes), hold, release).audio


# Engines are kept per setting and per thread: each render starts from a fresh voice state, and
# building a plug-in host is slow; an engine is one synth, which two threads at once would corrupt
# (dexed-py releases the GIL: two threads sharing one gave wrong audio, up to 0.35 off).
_ENGINES = threading.local()
