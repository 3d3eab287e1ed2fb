"""The numbers and terms the README and docs quote agree with what the commands print."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def _n(text: str) -> int:
    return int(text.replace(",", ""))


def test_readme_corpus_counts_are_what_import_sysex_prints(corpus_dir, tmp_path):
    from dexed_data.cli import app

    res = CliRunner().invoke(app, ["import-sysex", str(corpus_dir), "-o", str(tmp_path / "c.h5"), "--no-progress"])
    assert res.exit_code == 0, res.output
    printed = res.stdout
    readme = (REPO / "README.md").read_text()
    m = re.search(r"On the CC0 corpus \(`dexed-data import-sysex [^`]*`\): ([\d,]+)\s+files seen, ([\d,]+) DX7 voice "
                  r"messages, ([\d,]+) voices decoded and imported \(([\d,]+) of them\s+repaired\), ([\d,]+) "
                  r"duplicates, and \*\*([\d,]+) unique presets\*\* by raw values \(([\d,]+) by packed sound\s+bytes "
                  r"as found, ([\d,]+) with bit 7 masked, ([\d,]+) sound-equivalent\)", readme)
    assert m, "the README's corpus paragraph changed shape; update this test with it"
    files, messages, voices, repaired, dups, unique, as_found, masked, equivalent = (_n(g) for g in m.groups())
    line = {row.split()[0] + (row.split()[1] if row.startswith("unique") else ""): row for row in printed.splitlines()}
    assert re.match(rf"files seen\s+{files}\b", line["files"])
    assert re.match(rf"messages\s+{messages}$", line["messages"].rstrip())
    assert re.match(rf"voices\s+{voices}\s+imported {voices}, repaired {repaired}, rejected 0", line["voices"])
    assert re.match(rf"duplicates\s+{dups}$", line["duplicates"].rstrip())
    assert re.match(rf"unique presets\s+{unique}\s+by raw values; by packed bytes as found {as_found}, bit 7 masked "
                    rf"{masked}, sound-equivalent {equivalent}$", line["uniquepresets"].rstrip())


def test_render_time_is_quoted_alike_in_scaling_and_format():
    figure = re.compile(r"0\.\d\d–0\.\d\d h")
    format_md = figure.findall((REPO / "docs" / "FORMAT.md").read_text())
    scaling = figure.findall((REPO / "docs" / "SCALING.md").read_text())
    assert format_md and scaling and set(scaling) <= set(format_md)
    assert "in hours" not in (REPO / "docs" / "SCALING.md").read_text()


def test_docs_link_quality_and_cite_only_the_repository():
    readme = (REPO / "README.md").read_text()
    assert "(docs/QUALITY.md)" in readme
    quality = (REPO / "docs" / "QUALITY.md").read_text()
    assert "shared/reference" not in quality and "DX7.md" not in quality
    for term in ("dc_block(x/8)", "distinct near", "sound_key"):
        assert term in quality
    fmt = (REPO / "docs" / "FORMAT.md").read_text()
    for field in ("`dexed_index`", "`packed`", "`fixed`", "no `min` field", "stored 0–31"):
        assert field in fmt


def test_info_prints_transpose_with_units():
    from dexed_data.schema import FIXED_PARAMS, format_fixed

    text = format_fixed(FIXED_PARAMS)
    assert "TRANSPOSE=24 (0.5 normalised)" in text and "TRANSPOSE=0.5" not in text
    assert "MASTER TUNE ADJ=0.5" in text and text.endswith("(normalised 0–1)")
