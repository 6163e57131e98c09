"""Open the report's index.html in real headless Chromium: every image loads, every table is there.

A copy of the page gets a small script that, on the load event, writes what the browser
sees (each <img>'s naturalWidth, each table's id and row count) into the DOM as JSON;
`chromium --headless --dump-dom` prints that DOM. Skips only where Chromium is not installed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import FIGURES, make_run

from seqbench.bench.report.build import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images).map(function (i) {
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth};
  });
  var tables = Array.from(document.querySelectorAll("table")).map(function (t) {
    return {id: t.id, rows: t.querySelectorAll("tbody tr").length, text: t.innerText};
  });
  var out = document.createElement("pre");
  out.id = "seqbench-probe";
  out.textContent = JSON.stringify({images: images, tables: tables});
  document.body.appendChild(out);
});
</script>"""


def probe(page: Path, tmp_path: Path) -> dict:
    """What Chromium reports for `page` once loaded (the PROBE script's JSON)."""
    probed = page.with_name(page.stem + "-probe.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
           probed.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="seqbench-probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"no probe output from Chromium (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("browser") / "synthetic-cpu")
    return build_report([run], strict=True) / "index.html"


def test_every_image_loads_and_tables_are_present(page: Path, tmp_path: Path) -> None:
    seen = probe(page, tmp_path)
    images = seen["images"]
    assert len(images) == len(FIGURES)
    broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert all(i["width"] >= 300 for i in images)
    tables = {t["id"]: t for t in seen["tables"]}
    for name in ("t-runs", "t-speed_memory", "t-scaling_exponents", "t-latency", "t-static", "t-failures",
                 "t-environment", "t-leaderboard-copy_64", "t-leaderboard-adding"):
        assert name in tables and tables[name]["rows"] > 0, name
    assert "loss is NaN at step 37" in tables["t-failures"]["text"]
    assert "not streamable" in tables["t-failures"]["text"]


def test_probe_detects_a_broken_image(page: Path, tmp_path: Path) -> None:
    """The check can fail: corrupt one embedded PNG and Chromium reports it unloaded."""
    text = page.read_text()
    first = text.index('src="data:image/png;base64,') + len('src="data:image/png;base64,')
    broken = page.with_name("broken.html")
    broken.write_text(text[:first] + "AAAA" + text[first + 4:])
    images = probe(broken, tmp_path)["images"]
    assert [i["width"] > 0 for i in images].count(False) == 1
