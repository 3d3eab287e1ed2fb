"""``dexed-data report``: a self-contained HTML page whose numbers equal what ``dexed-data info`` prints."""

from __future__ import annotations

import html
import re

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


def test_report_figures_exist_and_numbers_equal_info(tmp_path, dataset):
    result = CliRunner().invoke(app, ["report", str(dataset), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    index = tmp_path / "report" / "index.html"
    assert index.is_file()
    page = index.read_text()

    images = re.findall(r"<img src='([^']+)'", page)
    assert {"algorithms.png", "levels.png", "mels.png", "params_global.png", "params_operators.png"} <= set(images)
    for name in images:
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
    assert "http" not in page.lower()                         # nothing to fetch: opens from disk

    info = CliRunner().invoke(app, ["info", str(dataset)])
    assert info.exit_code == 0, info.output
    with DatasetReader(dataset) as ds:
        q = summarize(ds)
    assert (q.presets, q.distinct_by_sound, q.duplicates, q.silent, q.silent_exact) == (10, 9, 1, 1, 1)
    for label, _ in q.rows():
        line = next(x for x in info.output.splitlines() if x.strip().startswith(label))
        row = re.search(rf"<tr><td>{re.escape(html.escape(label))}</td><td>([^<]*)</td></tr>", page)
        assert row, label
        numbers = lambda s: re.findall(r"\d+(?:\.\d+)?", s)  # noqa: E731
        assert numbers(html.unescape(row.group(1))) == numbers(line[len(label) + 2:]), label

    twin_id = next(i for i, n in zip(ds.ids, ds.names) if n.strip() == "TWIN")
    assert twin_id in page                                     # the duplicate group's provenance table

