"""Dataset quality: the counts ``dexed-data info`` prints, and a self-contained HTML report.

:func:`summarize` gives the counts a researcher checks before training (sources, presets unique
by values, distinct by sound, duplicates, silent presets and silent notes, failed renders);
``dexed-data info`` prints :meth:`QualitySummary.lines` and the report shows the same object, so
the two always agree.

:func:`write_report` writes one self-contained ``OUT/index.html``: its PNG figures (matplotlib,
Agg backend) are embedded as base64 ``data:`` URIs, it links nothing and has no scripts, so the
one file opens from disk, or anywhere it is copied, with no server. Contents: the counts;
histograms of every voice parameter (global ones, then one figure per operator); the algorithm
distribution; peak and RMS level distributions per note; the spectrogram scaling bounds; mel
spectrograms of a few random usable presets; the provenance of the largest groups of presets
that render identically; and the failed renders.

Example::

    >>> from dexed_data.report import write_report
    >>> index = write_report("dataset.h5", "report/")      # doctest: +SKIP
    >>> index.name                                         # doctest: +SKIP
    'index.html'
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .dataset import STATUS_FAILED, STATUS_OK, DatasetReader
from .fingerprint import count_distinct, duplicate_groups, exact_fingerprint
from .rows import count_unique_rows
from .schema import ALGORITHM_LABELS, VOICE_PARAMS

__all__ = ["QualitySummary", "summarize", "write_report", "SILENT_NOTE_DB"]

#: A note is near-silent when its peak is below this (dBFS); the value of
#: :data:`dexed_data.features.SILENT_THRESHOLD_DB`, repeated so that ``info`` need not import torch.
SILENT_NOTE_DB = -70.0
#: Floor of the mel spectrograms (:data:`dexed_data.features.LEVEL_FLOOR_DB`), repeated likewise.
MEL_FLOOR_DB = -120.0


@dataclass(frozen=True)
class QualitySummary:
    """Counts of one dataset file (all over its rows; "ok" = rendered without error).

    Attributes:
        presets: rows of the file.
        source_files, occurrences: distinct source files and voice occurrences in the provenance.
        unique_by_values: distinct raw value vectors (with the paper's fixed bytes applied).
        sound_groups: distinct parameter-level sound classes (``/presets/sound_group``).
        ok, failed: rendered rows, failed renders.
        distinct_by_sound: distinct exact audio fingerprints among the ok rows.
        duplicates: ok rows whose audio equals an earlier row's (``/duplicate_of >= 0``).
        distinct_near: distinct near keys among the ok rows (``None`` if not stored).
        silent: ok rows near-silent on every note.
        silent_exact: ok rows whose audio is exactly zero on every note (a subset of ``silent``).
        silent_per_note: ok rows near-silent on each note, in the file's note order.
        notes: the ``(pitch, velocity)`` notes.
        usable: rows of the default training set (ok, not silent, not a duplicate).
    """

    presets: int
    source_files: int
    occurrences: int
    unique_by_values: int
    sound_groups: int
    ok: int
    failed: int
    distinct_by_sound: int
    duplicates: int
    distinct_near: int | None
    silent: int
    silent_exact: int
    silent_per_note: tuple[int, ...]
    notes: tuple[tuple[int, int], ...]
    usable: int

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs, in the order ``info`` prints them and the report shows them."""
        pct = lambda k: f"{k} ({100.0 * k / max(self.ok, 1):.2f} % of rendered)"  # noqa: E731
        return [
            ("source files", f"{self.source_files} ({self.occurrences} voice occurrences)"),
            ("unique by values", str(self.unique_by_values)),
            ("sound groups", f"{self.sound_groups} (parameter-level, catalogue sound_key)"),
            ("rendered", f"{self.ok} ok, {self.failed} failed"),
            ("distinct by sound", pct(self.distinct_by_sound)),
            ("duplicates", f"{self.duplicates} (same audio as an earlier preset; excluded from training by default)"),
            ("distinct near", "not stored" if self.distinct_near is None
             else f"{self.distinct_near} (coarse spectral key, 3 dB steps)"),
            ("silent", f"{self.silent} (near-silent on every note; {self.silent_exact} exactly zero)"),
            ("silent per note", ", ".join(f"{p}:{v}={k}" for (p, v), k in zip(self.notes, self.silent_per_note))),
            ("usable", f"{self.usable} (ok, not silent, not a duplicate)"),
        ]

    def presets_line(self) -> str:
        """The value of ``info``'s ``presets`` line: rows, ok, failed, near-silent, usable."""
        return f"{self.presets} ({self.ok} ok, {self.failed} failed, {self.silent} near-silent; {self.usable} usable)"

    def lines(self) -> list[str]:
        """Lines for ``dexed-data info``, aligned like its other lines."""
        return [f"  {label:<17} {value}" for label, value in self.rows()]

    def to_dict(self) -> dict:
        return asdict(self)



def _printable(name: str) -> str:
    """A DX7 voice name for display: control bytes (NULs are common in real banks) shown as "·"."""
    return "".join(c if " " <= c < "\x7f" else "·" for c in name).strip()

def _silent_per_note(peak: np.ndarray) -> np.ndarray:
    """``(N, K)`` bool from the stored peaks, as :func:`dexed_data.features.silent_notes` decides it."""
    return 20.0 * np.log10(np.maximum(peak.astype(np.float64), 1e-30)) < SILENT_NOTE_DB


def summarize(ds: DatasetReader) -> QualitySummary:
    """The quality counts of an open dataset."""
    f = ds.file
    ok = ds.status == STATUS_OK
    occ_path = f["occurrences/path"].asstr()[...] if "occurrences/path" in f else np.zeros(0, object)
    near = count_distinct(f["near_fingerprint"][...], ok) if "near_fingerprint" in f else None
    per_note = _silent_per_note(ds.peak)[ok].sum(axis=0)
    shapes = ds.info.header.shapes
    zero = exact_fingerprint(np.zeros((shapes.notes, shapes.samples), np.float32))
    return QualitySummary(
        presets=len(ds), source_files=int(np.unique(occ_path).size), occurrences=int(len(occ_path)),
        unique_by_values=count_unique_rows(ds.raw), sound_groups=int(np.unique(ds.sound_group).size),
        ok=int(ok.sum()), failed=int(np.sum(ds.status == STATUS_FAILED)),
        distinct_by_sound=count_distinct(ds.fingerprint, ok), duplicates=int(np.sum(ds.duplicate_of >= 0)),
        distinct_near=near, silent=int(np.sum(ds.silent & ok)),
        silent_exact=int(np.sum(ok & (ds.fingerprint == zero).all(axis=1))),
        silent_per_note=tuple(int(k) for k in per_note), notes=tuple(ds.info.notes),
        usable=int(len(ds.usable())),
    )


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------


def _pyplot():
    import os
    import sys
    import tempfile

    if "MPLCONFIGDIR" not in os.environ and "matplotlib" not in sys.modules:
        home = os.path.expanduser("~")
        if not os.access(home, os.W_OK):   # read-only or missing HOME: no two-line warning, no folders made there
            os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="matplotlib-")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, embedded in the page: one self-contained file.

    ``out`` and ``name`` are kept for the figures' call sites; nothing is written beside the page.
    """
    import base64
    import io

    buf = io.BytesIO()
    # 100 dpi: the figures are drawn about as wide as the page (1100 px), so text stays at its point size
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


#: Every file :func:`write_report` writes in its folder (the figures are embedded in the page).
REPORT_FILES = ("index.html",)


def _param_grid(raw: np.ndarray, params, title: str, out: Path, name: str, color: str = "tab:blue") -> str:
    """One histogram of raw values per parameter (``params``: schema entries), six to a row."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = 6
    rows = -(-len(params) // cols)
    height = 1.75 * rows + 0.45
    fig, axes = plt.subplots(rows, cols, figsize=(11, height), squeeze=False)
    # fixed margins (inches): tight_layout would cost seconds per figure
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.25 / height, top=1 - 0.55 / height,
                        hspace=0.55, wspace=0.32)
    for ax, p in zip(axes.ravel(), params):
        # one bin per value up to 32 values; wider bins (2 or 4 values) for 0..48 and 0..99, so that a
        # value shared by many presets is a visible bar rather than a one-pixel line
        width = 1 if p.max < 32 else -(-(p.max + 1) // 25)
        edges = np.arange(0, p.max + 1 + width, width) - 0.5
        counts = np.bincount(raw[:, p.voice_offset] // width, minlength=len(edges) - 1)[: len(edges) - 1]
        ax.stairs(counts, edges, fill=True, color=color)   # one artist, not one bar per bin
        label = p.name if p.operator is None else p.name[4:]
        over = int((raw[:, p.voice_offset] > p.max).sum())   # failed rows keep such values: said, not dropped
        ax.set_title(label + (" (fixed)" if p.fixed is not None else "") + (f", {over} over max" if over else ""),
                     fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))   # values are integers
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
        margin = 0.03 * (edges[-1] - edges[0])             # bars at 0 or max stay clear of the frame
        ax.set_xlim(edges[0] - margin, edges[-1] + margin)
    for ax in axes.ravel()[len(params):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    return _save(fig, out, name)


def _algorithms(raw: np.ndarray, out: Path) -> str:
    plt = _pyplot()
    alg = next(p for p in VOICE_PARAMS if p.name == "ALGORITHM")
    counts = np.bincount(raw[:, alg.voice_offset], minlength=32)[:32]
    over = int((raw[:, alg.voice_offset] > alg.max).sum())   # failed rows keep such values: said, not dropped
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.bar(np.arange(32), counts, color="tab:green")
    ax.set_xticks(np.arange(32), ALGORITHM_LABELS, fontsize=8)
    ax.set_xlim(-0.7, 31.7)
    ax.set_xlabel("algorithm (1–32)" + (f"; {over} failed preset(s) with a value over 32, not shown" if over else ""))
    ax.set_ylabel("presets")
    fig.tight_layout()
    return _save(fig, out, "algorithms.png")


def _levels(ds: DatasetReader, ok: np.ndarray, out: Path) -> str:
    """Peak (top row) and RMS (bottom row) histograms, one column per note, in dBFS."""
    plt = _pyplot()
    notes = ds.info.notes
    k = len(notes)
    fig, axes = plt.subplots(2, k, figsize=(11, 4.2), sharex=True, sharey="row", squeeze=False)
    bins = np.linspace(-120, 12, 45)                     # 3 dB bins; lower levels pile up at -120
    for r, (values, label, color) in enumerate(((ds.peak, "peak", "tab:blue"), (ds.rms, "RMS", "tab:orange"))):
        db = 20.0 * np.log10(np.maximum(values[ok].astype(np.float64), 1e-6))
        for j, (p, v) in enumerate(notes):
            ax = axes[r, j]
            ax.hist(np.clip(db[:, j], bins[0], bins[-1]), bins=bins, color=color)
            ax.tick_params(labelsize=8)
            if r == 0:
                ax.set_title(f"note {p}, velocity {v}", fontsize=9)
                ax.axvline(SILENT_NOTE_DB, color="grey", ls=":")
            else:
                ax.set_xlabel("dBFS", fontsize=8)
        axes[r, 0].set_ylabel(f"{label}: presets", fontsize=9)
    fig.tight_layout(h_pad=0.5, w_pad=0.3)
    return _save(fig, out, "levels.png")


def _shown(image: np.ndarray, rows: int = 256, cols: int = 512) -> np.ndarray:
    """``image`` averaged over blocks down to at most ``rows`` × ``cols`` (a figure's panel shows
    fewer pixels): matplotlib keeps several float copies of what it is given, 3.5 GB for one example
    at ``--hop 1 --n-mels 513`` (audit A5)."""
    image = np.asarray(image, np.float32)
    a, b = -(-image.shape[0] // rows), -(-image.shape[1] // cols)
    if a == 1 and b == 1:
        return image
    padded = np.pad(image, ((0, -image.shape[0] % a), (0, -image.shape[1] % b)), mode="edge")
    return padded.reshape(padded.shape[0] // a, a, padded.shape[1] // b, b).mean(axis=(1, 3))


def _example_mels(ds: DatasetReader, rows: np.ndarray, out: Path) -> str | None:
    plt = _pyplot()
    stored = ds.info.header.storage.arrays
    if "mel" not in stored and "audio" not in stored:
        return None
    k = len(ds.info.notes)
    fig, axes = plt.subplots(len(rows), k, figsize=(11, 1.6 * len(rows) + 0.5), squeeze=False)
    lo, hi = ds.mel_bounds
    image = None
    for r, row in enumerate(rows):
        if "mel" in stored:
            mel = ds.mel(row)
        else:
            from .features import MelConfig, mel_db

            # the file's own settings, which its mel bounds were taken with
            mel = mel_db(ds.audio(row), MelConfig.stored(ds.info.header.mel_config, ds.info.sample_rate))
        for j in range(k):
            ax = axes[r, j]
            image = ax.imshow(_shown(mel[j]), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma",
                              interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                p, v = ds.info.notes[j]
                ax.set_title(f"note {p}, velocity {v}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{_printable(ds.names[row])}\n{ds.ids[row][:8]}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 1), h_pad=0.4, w_pad=0.3)
    bar = fig.colorbar(image, cax=fig.add_axes((0.945, 0.1, 0.015, 0.8)))
    bar.set_label("dB (scaling bounds)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return _save(fig, out, "mels.png")


# ------------------------------------------------------------------------------------------------
# the page
# ------------------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
font-size:13px;vertical-align:top}th{background:#f3f3f3;white-space:nowrap}
td:last-child{overflow-wrap:anywhere}td:first-child{white-space:nowrap}
img{display:block;max-width:100%;height:auto;border:1px solid #eee}code{background:#f6f6f6}"""


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{'<tr>' + h + '</tr>' if h else ''}{body}</table>"


#: What the report says for the mel bounds of a dataset without a rendered preset that sounds.
NO_MEL_BOUNDS = "none (no rendered preset that is not silent)"


def _provenance(ds: DatasetReader, groups: int) -> str:
    f = ds.file
    occ_preset = f["occurrences/preset"][...]
    occ_path = f["occurrences/path"].asstr()[...]
    occ_voice = f["occurrences/voice"][...]
    every = duplicate_groups(ds.duplicate_of)
    if not every:
        return "<p>No two presets render identically.</p>"
    big = every[:groups]
    if not big:
        return f"<p>{len(every)} groups of identical-sounding presets (not listed: --groups 0).</p>"
    rows = []
    for rep, members in big:
        cells = []
        for m in members:
            sel = np.flatnonzero(occ_preset == m)
            where = f"{occ_path[sel[0]]} #{int(occ_voice[sel[0]]) + 1}" if len(sel) else "no provenance"
            more = f" (+{len(sel) - 1} more occurrences)" if len(sel) > 1 else ""
            tag = " <b>(kept)</b>" if m == rep else ""
            cells.append(f"<code>{ds.ids[m]}</code> {html.escape(_printable(ds.names[m]))}{tag}: "
                         f"{html.escape(where)}{more}")
        rows.append([f"<code>{ds.ids[rep]}</code><br>{html.escape(_printable(ds.names[rep]))}", str(len(members)),
                     "<br>".join(cells[:12]) + (f"<br>… {len(cells) - 12} more presets" if len(cells) > 12 else "")])
    return _table(["kept preset", "presets", "members: id name: first occurrence (file #voice)"], rows)


#: Most --examples: their spectrograms are one figure, about 240 px tall each (A9: 100,000 drew one
#: image of 237,010 px, taller than browsers show, in 84 s and 2.3 GB).
MAX_EXAMPLES = 64


def write_report(dataset_path, out_dir, *, examples: int = 4, groups: int = 10, seed: int = 0,
                 force: bool = False) -> Path:
    """Write ``out_dir/index.html`` and its PNG figures for a dataset; returns the page's path.

    Args:
        dataset_path: a complete ``dataset.h5``.
        out_dir: folder to write (created; existing files of the same names are refused unless
            ``force``, see :mod:`dexed_data.outputs`). Each file is written atomically, the page last.
        examples: random usable presets shown as mel spectrograms (seeded by ``seed``), 0 to
            :data:`MAX_EXAMPLES`.
        groups: largest duplicate groups listed with their provenance, ≥ 0.
        force: replace the files of an earlier report.
    """
    from .errors import DatasetError
    from .outputs import check_folder, together, write_text

    if examples < 0 or groups < 0:
        raise DatasetError(f"examples={examples}, groups={groups}: each must be ≥ 0")
    if examples > MAX_EXAMPLES:
        raise DatasetError(f"examples={examples}: at most {MAX_EXAMPLES} (one figure of their spectrograms)")
    out = check_folder(out_dir, REPORT_FILES, force=force, inputs=[dataset_path], what="report folder")
    with DatasetReader(dataset_path) as ds:
        summary = summarize(ds)
        info = ds.info
        ok = ds.status == STATUS_OK
        raw = ds.raw
        figures: list[tuple[str, str]] = []
        glob = [p for p in VOICE_PARAMS if p.operator is None]
        figures.append(("Global parameters", _param_grid(raw, glob, "global parameters", out, "params_global.png")))
        for op in range(1, 7):
            params = [p for p in VOICE_PARAMS if p.operator == op]
            figures.append((f"Operator {op}", _param_grid(raw, params, f"OP{op} parameters", out,
                                                           f"params_op{op}.png", color="tab:purple")))
        alg = _algorithms(raw, out)
        levels = _levels(ds, ok, out) if ok.any() else None
        usable = ds.usable()
        pick = np.sort(np.random.default_rng(seed).choice(usable, min(examples, len(usable)), replace=False)) \
            if len(usable) else np.zeros(0, np.int64)
        mels = _example_mels(ds, pick, out) if len(pick) else None
        provenance = _provenance(ds, groups)
        failures = list(ds.errors.items())
        h = info.header

    counts = _table(None, [[html.escape(label), html.escape(value)] for label, value in
                           [("presets", summary.presets_line())] + summary.rows()])
    lo, hi = info.mel_min_db, info.mel_max_db
    floor = " (the spectrogram floor: some frames are silent)" if lo <= MEL_FLOOR_DB else ""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Dataset report: {html.escape(Path(str(dataset_path)).name)}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>Dataset report: <code>{html.escape(str(dataset_path))}</code></h1>",
        f"<p>{html.escape(h.engine_text)}, {h.sample_rate} Hz, hold {h.hold:g} s + release "
        f"{h.release:g} s; notes {html.escape(', '.join(f'{p}:{v}' for p, v in h.notes))}; "
        f"stored: {html.escape(', '.join(h.storage.arrays) or 'no audio or mel')}.<br>"
        f"Made by: <code>{html.escape(h.command)}</code></p>",
        (f"<p><b>Shard {html.escape(str(info.shard))} of a render job</b>: its counts, duplicates and bounds cover "
         "only its part of the presets; <code>dexed-data merge</code> joins the shards into the whole dataset.</p>"
         if info.shard else ""),
        "<h2>Counts</h2>", counts,
        "<p>Distinct by sound: bit-identical audio on every note (exact fingerprint). Duplicates keep their "
        "rows and provenance; the lowest row (smallest id) of each group is kept for training.</p>",
        "<h2>Spectrogram scaling bounds</h2>",
        _table(None, [["mel min", f"{lo:.2f} dB{floor}" if np.isfinite(lo) else NO_MEL_BOUNDS],
                      ["mel max", f"{hi:.2f} dB" if np.isfinite(hi) else NO_MEL_BOUNDS],
                      ["used for", "dB values map linearly to [-1, 1] for training (over rendered, non-silent presets)"]]),
        "<h2>Algorithms</h2>", f"<img src='{alg}' alt='algorithm distribution'>",
    ]
    parts.append("<h2>Loudness and peak per note</h2>")
    parts += ([f"<p>Rendered presets; levels in dBFS at the plug-in's scale, clipped to [-120, 12]. "
               f"Dotted line: near-silent threshold ({SILENT_NOTE_DB:g} dBFS peak).</p>",
               f"<img src='{levels}' alt='peak and RMS per note'>"] if levels else
              ["<p>No preset rendered (every render failed: see Failed renders), so there are no levels.</p>"])
    parts.append("<h2>Example mel spectrograms</h2>")
    parts.append(f"<p>{len(pick)} random usable presets (seed {seed}); time left to right "
                 f"({h.hold + h.release:g} s), mel bands low to high, colours span the scaling bounds.</p>"
                 f"<img src='{mels}' alt='example mel spectrograms'>" if mels else
                 "<p>None shown (--examples 0).</p>" if examples == 0 and len(usable) else
                 "<p>No usable preset to show: none rendered without failing and sounds (a failed or "
                 "near-silent preset is not usable).</p>" if not len(usable) else
                 "<p>None shown: the file stores neither audio nor mel spectrograms.</p>")
    parts.append("<h2>Largest groups of identical-sounding presets</h2>")
    parts.append(provenance)
    parts.append("<h2>Parameter distributions</h2><p>Raw values (0-based, as stored in a voice) of every "
                 "preset in the file, rendered or not; fixed parameters are shown at their fixed value.</p>")
    for title, fig in figures:
        parts += [f"<h3>{html.escape(title)}</h3>", f"<img src='{fig}' alt='{html.escape(title)}'>"]
    if failures:
        parts.append(f"<h2>Failed renders</h2><p>{len(failures)} preset{'s' if len(failures) != 1 else ''}"
                     + (", the first 20:" if len(failures) > 20 else ":") + "</p>")
        parts.append(_table(["id", "reason"], [[f"<code>{i}</code>", html.escape(r)] for i, r in failures[:20]]))
    parts.append("</body></html>")
    index = out / "index.html"
    with together(last=True):   # the page, or nothing (nor the folder made for it)
        write_text(index, "\n".join(parts), "report")
    return index
