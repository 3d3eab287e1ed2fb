"""``dexed-data report``: a self-contained HTML page whose numbers equal what ``dexed-data info`` prints."""

from __future__ import annotations

import base64
import html
import re
import struct
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from dexed_data import sysex
from dexed_data.catalogue import write_catalogue
from dexed_data.cli import app
from dexed_data.dataset import DatasetReader
from dexed_data.render import RenderConfig, render_dataset
from dexed_data.report import summarize
from dexed_data.schema import operator_offsets

CFG = RenderConfig(notes=((60, 85), (48, 110)), hold=0.3, release=0.1, operators=False, store=("mel",))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, rom1a_path):
    """Eight ROM1A voices, a copy of BRASS 1 that differs only in a silent operator, and a silent voice."""
    v = sysex.decode_file(rom1a_path).voices
    raws = [x.raw for x in v[:8]]
    o = operator_offsets(2)
    base = v[0].raw.copy()
    base[o["OUTPUT LEVEL"]] = base[o["L SCALE DEPTH"]] = base[o["R SCALE DEPTH"]] = 0   # OP2 outputs nothing
    twin = base.copy()
    twin[o["EG RATE 2"]] = (int(twin[o["EG RATE 2"]]) + 11) % 100
    raws[0] = base
    silent = np.zeros(145, np.uint8)
    raws += [twin, silent]
    names = [x.name for x in v[:8]] + ["TWIN", "SILENCE"]
    tmp = tmp_path_factory.mktemp("report")
    write_catalogue(tmp / "presets.h5", np.stack(raws), names)
    render_dataset(tmp / "presets.h5", tmp / "dataset.h5", CFG, jobs=1, progress=False)
    return tmp / "dataset.h5"


class _Links(HTMLParser):
    """Every ``src`` and ``href`` of a page, and its ``<h2>`` headings."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.headings, self._in_h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "src" in a:
            self.images.append(a["src"]) if tag == "img" else self.links.append(a["src"])
        if "href" in a:
            self.links.append(a["href"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data.strip())
            self._in_h2 = False


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_figures_exist_and_numbers_equal_info(tmp_path, dataset):
    result = CliRunner().invoke(app, ["report", str(dataset), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    index = tmp_path / "report" / "index.html"
    assert index.is_file()
    page = index.read_text()

    # self-contained: every image a PNG embedded in the page, nothing else to fetch, no file beside it
    parsed = _Links()
    parsed.feed(page)
    assert len(parsed.images) == 10   # algorithms, levels, mels, global parameters, OP1–OP6
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)   # base64 may spell anything
    assert parsed.links == [] and "http" not in text.lower()   # opens from disk with no server
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["index.html"]
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1])
        width, height = _png_size(data)
        assert 600 <= width <= 1400 and height >= 150 and len(data) > 5000, (width, height)
    assert {"Counts", "Spectrogram scaling bounds", "Algorithms", "Loudness and peak per note",
            "Example mel spectrograms", "Largest groups of identical-sounding presets",
            "Parameter distributions"} <= set(parsed.headings)

    info = CliRunner().invoke(app, ["info", str(dataset)])
    assert info.exit_code == 0, info.output
    with DatasetReader(dataset) as ds:
        q = summarize(ds)
    assert (q.presets, q.distinct_by_sound, q.duplicates, q.silent, q.silent_exact) == (10, 9, 1, 1, 1)
    assert q.silent_per_note == (1, 1) and q.failed == 0 and q.usable == 8
    numbers = lambda s: re.findall(r"-?\d+(?:\.\d+)?", s)  # noqa: E731
    for label in ["presets"] + [label for label, _ in q.rows()]:
        line = next(x for x in info.output.splitlines() if x.strip().startswith(label + " "))
        row = re.search(rf"<tr><td>{re.escape(html.escape(label))}</td><td>([^<]*)</td></tr>", page)
        assert row, label
        assert numbers(html.unescape(row.group(1))) == numbers(line.strip()[len(label):]), label
    bounds = next(x for x in info.output.splitlines() if x.strip().startswith("mel bounds"))
    shown = [re.search(rf"<tr><td>mel {k}</td><td>(-?[\d.]+) dB", page).group(1) for k in ("min", "max")]
    assert shown == numbers(bounds)

    twin_id = next(i for i, n in zip(ds.ids, ds.names) if n.strip() == "TWIN")
    assert twin_id in page                                     # the duplicate group's provenance table



def test_report_thresholds_equal_features():
    """The report repeats two constants of ``features`` (so that ``info`` need not import it)."""
    from dexed_data import features, report

    assert report.SILENT_NOTE_DB == features.SILENT_THRESHOLD_DB
    assert report.MEL_FLOOR_DB == features.LEVEL_FLOOR_DB


def test_voice_names_with_control_bytes_are_shown_printable():
    from dexed_data.report import _printable

    assert _printable("COW BELL\x00 ") == "COW BELL·" and _printable("E.ORG\x00N 7 ") == "E.ORG·N 7"
    assert _printable("E.PIANO 1 ") == "E.PIANO 1"


def test_a_dataset_with_no_preset_that_sounds_has_no_mel_bounds_and_says_so(tmp_path):
    # its bounds are NaN: info printed "nan … nan dB", the report "nan dB", and torch_dataset told the
    # caller to fix bounds they never passed
    from dexed_data import open_dataset
    from dexed_data.errors import DatasetError

    silent = np.zeros((2, 145), np.uint8)
    silent[1, 0] = 50                                    # two voices, both with every output level at 0
    write_catalogue(tmp_path / "p.h5", silent, ["SILENT 1", "SILENT 2"])
    render_dataset(tmp_path / "p.h5", tmp_path / "d.h5", CFG, jobs=1, progress=False)
    res = CliRunner().invoke(app, ["info", str(tmp_path / "d.h5")])
    assert res.exit_code == 0 and "mel bounds    none (no rendered preset that is not silent)" in res.output, res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "d.h5"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert not re.search(r"\bnan\b", page.lower()) and "none (no rendered preset that is not silent)" in page
    with open_dataset(tmp_path / "d.h5") as ds:
        with pytest.raises(DatasetError, match="no rendered preset that is not silent"):
            ds.torch_dataset()
        assert len(ds.torch_dataset(rows=[0, 1], scale=False)) == 2


def test_report_with_nothing_shown_says_why_not_that_nothing_exists(tmp_path, dataset):
    # --groups 0 said "No two presets render identically." and --examples 0 "No usable preset ..."
    result = CliRunner().invoke(app, ["report", str(dataset), "-o", str(tmp_path / "r"), "--groups", "0",
                                      "--examples", "0"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert "No two presets render identically" not in page and "groups of identical-sounding presets (not listed" in page
    assert "No usable preset" not in page and "None shown (--examples 0)" in page


def test_examples_of_an_audio_only_dataset_use_its_own_mel_settings(tmp_path, rom1a_path, monkeypatch):
    # drawn with the default 257 mels and hop 256, and coloured with bounds taken at the file's 64 / 1024
    from dexed_data import features, report

    v = sysex.decode_file(rom1a_path).voices[:2]
    write_catalogue(tmp_path / "p.h5", np.stack([x.raw for x in v]), [x.name for x in v])
    cfg = RenderConfig(notes=((60, 85),), hold=0.3, release=0.1, operators=False, store=("audio",), n_mels=64, hop=1024)
    render_dataset(tmp_path / "p.h5", tmp_path / "d.h5", cfg, jobs=1, progress=False)
    seen = []
    real = features.mel_db
    monkeypatch.setattr(features, "mel_db", lambda audio, c: seen.append(c) or real(audio, c))
    assert report.write_report(tmp_path / "d.h5", tmp_path / "r", examples=2)
    assert seen and all((c.n_mels, c.hop, c.n_fft) == (64, 1024, 1024) for c in seen)


def test_the_report_of_a_shard_says_it_covers_part_of_the_job(tmp_path, rom1a_path):
    v = sysex.decode_file(rom1a_path).voices[:4]
    write_catalogue(tmp_path / "p.h5", np.stack([x.raw for x in v]), [x.name for x in v])
    cfg = RenderConfig(notes=((60, 85),), hold=0.2, release=0.1, operators=False)
    render_dataset(tmp_path / "p.h5", tmp_path / "s0.h5", cfg, jobs=1, shard="0/2", progress=False, segment_size=2)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "s0.h5"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<b>Shard 0/2 of a render job</b>" in page and "dexed-data merge" in page


def test_out_of_range_values_of_failed_rows_are_said_in_the_histograms(monkeypatch, tmp_path):
    # audit Y8: the algorithm and parameter histograms ("every preset in the file, rendered or not")
    # dropped the failed rows' out-of-range values without a word
    import matplotlib.axes

    from dexed_data import report
    from dexed_data.schema import PARAM_BY_NAME, VOICE_PARAMS

    raw = np.zeros((3, 145), np.uint8)
    alg = PARAM_BY_NAME["ALGORITHM"].voice_offset
    raw[2, alg] = 40
    said = {}
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel", lambda self, text, *a, **k: said.setdefault("x", text))
    report._algorithms(raw, tmp_path)
    assert "1 failed preset(s) with a value over 32, not shown" in said["x"]
    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, text, *a, **k: titles.append(text))
    params = [p for p in VOICE_PARAMS if p.name == "ALGORITHM"]
    report._param_grid(raw, params, "t", tmp_path, "grid.png")
    assert titles == ["ALGORITHM, 1 over max"]


def test_info_on_a_bank_lists_the_voices_repairs(tmp_path):
    # audit Y8: info listed no problem for a bank whose voices the import repairs (out of range, bit 7)
    bank = bytearray(sysex.encode_bank(np.zeros((32, 145), np.uint8), ["A"] * 32))
    bank[6 + 10] = 127                                   # voice 1, OP6 R SCALE DEPTH 127 (max 99)
    bank[6 + 4096] = (-sum(bank[6:6 + 4096])) & 0x7F
    (tmp_path / "oor.syx").write_bytes(bytes(bank))
    res = CliRunner().invoke(app, ["info", str(tmp_path / "oor.syx")])
    assert res.exit_code == 0 and "out_of_range (repaired): " in res.output and "clamped to 99" in res.output, res.output
    # R3: a bank of FF bytes printed a line per parameter of every voice (3,136); past 100 one line counts them
    ff = bytearray(sysex.encode_bank(np.zeros((32, 145), np.uint8), ["A"] * 32))
    ff[6:6 + 4096] = b"\xff" * 4096
    ff[6 + 4096] = (-sum(b & 0x7F for b in ff[6:6 + 4096])) & 0x7F
    (tmp_path / "ff.syx").write_bytes(bytes(ff))
    res = CliRunner().invoke(app, ["info", str(tmp_path / "ff.syx")])
    lines = res.output.splitlines()
    assert res.exit_code == 0 and len(lines) < 300, len(lines)
    folded = [x for x in lines if "more of the same (out_of_range)" in x]
    assert len(folded) == 1 and sum(" out_of_range (repaired)" in x for x in lines) == 101
    assert re.search(r"problem_count: 3\d{3}", res.output), res.output[-300:]


def test_example_spectrograms_are_reduced_to_what_a_panel_shows():
    # audit A5: one example at --hop 1 --n-mels 513 took 3.5 GB in matplotlib; now averaged over blocks first
    from dexed_data.report import _shown

    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(_shown(small), small)
    big = np.random.default_rng(0).normal(-60, 10, (513, 5001)).astype(np.float16)
    shown = _shown(big)
    assert shown.shape == (171, 501)                                         # blocks of 3 bands × 10 frames
    assert abs(float(shown.mean()) - float(big.astype(np.float32).mean())) < 0.05
    assert np.allclose(_shown(np.full((513, 5001), -30.0)), -30.0)          # edges padded with their own values
