"""The explorer page: self-contained, and working in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from synclr_monai.atlas.explore import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def page(atlas_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("explore")
    labels = atlas_data["dataset"] / "synapse_types.csv"
    rc = main(["--embeddings", str(atlas_data["embeddings"]), "--labels", str(labels), "--k", "3", "--out", str(out)])
    assert rc == 0
    return out / "explore.html"


def test_page_is_self_contained(page, atlas_data):
    html = page.read_text()
    # nothing is fetched: no external script, stylesheet, image or import (the SVG namespace URI is no fetch)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "<script src" not in html
    data = json.loads(re.search(r"var ATLAS = (\{.*?\});\n", html, re.S).group(1))
    assert len(data["ids"]) == len(data["x"]) == len(data["thumbnails"]) == atlas_data["n"]
    assert {"type", "bbox", "cluster", "outlier score", "propagated label"} <= set(data["colourings"])
    assert all(t.startswith("data:image/png;base64,") for t in data["thumbnails"])


def test_page_in_headless_chromium(page, atlas_data):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no Chromium/Chrome binary on PATH (looked for {', '.join(BROWSERS)}; apt-get install chromium)")
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1200,800",
        "--dump-dom", page.as_uri() + "#selftest",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', run.stdout, re.S)
    assert found and found.group(1), f"no self-test result in the DOM; stderr:\n{run.stderr[-3000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["errors"] == []
    assert not re.search(r"Uncaught|CONSOLE.*Error", run.stderr), run.stderr[-3000:]
    assert result["points"] == result["synapses"] == atlas_data["n"]
    assert result["hover_thumbnail"] and result["hover_id"]
    assert result["neighbours_shown"] == result["neighbours_expected"] == 3
    assert result["highlighted"] == 3
    # the first synapse is the original: its duplicate is its nearest neighbour on the page too
    b, v = atlas_data["duplicate"]
    assert result["first_neighbour"] == f"{b}_{v}"


def test_labels_naming_unknown_synapses_fail_cleanly(atlas_data, tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("bbox_name,Var1,type\nbbox3,nobody,x\n")
    rc = main(["--embeddings", str(atlas_data["embeddings"]), "--labels", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "bbox3/nobody" in capsys.readouterr().err
    assert not (tmp_path / "o" / "explore.html").exists()
