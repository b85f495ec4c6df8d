"""report.html in a real browser: headless Chromium from the distribution's packages.

The report's layout (a grid of as many figure columns as the screen fits) and its full-size
view (CSS `:target`, no script) are CSS behaviour, so they are checked where CSS runs: the page
is opened at two window widths, and opened at a figure's fragment. A small probe script is
appended to a copy of the page (the report itself carries none); it writes what the browser
laid out into the document title, which `--dump-dom` returns. Without Chromium the tests skip,
except under CI (`.ci/run` installs it), where they fail.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from medbft.cli import main
from tests.cdp import chromium

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.slow

PROBE = """<script>
addEventListener('load', () => setTimeout(() => {
const figs = [...document.querySelectorAll('.figs figure')];
const lefts = new Set(figs.map(f => Math.round(f.getBoundingClientRect().left)));
const open = document.querySelector('figure:target img');
const r = open ? open.getBoundingClientRect() : null;
document.title = JSON.stringify({
  figures: figs.length, columns: lefts.size, viewport: innerWidth,
  open: open ? {position: getComputedStyle(open).position, width: Math.round(r.width)} : null,
  inGrid: figs.length ? Math.round(figs[0].querySelector('img').getBoundingClientRect().width)
                      : 0});
}, 0));
</script>"""



@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["run", str(ROOT / "scenarios" / "primary-crash.yaml"), "--out", str(out),
                 "--quiet", "--set", "duration=3s"]) == 0
    page = out / "report.html"
    probed = out / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    return probed


def _layout(page: Path, width: int, fragment: str = "") -> dict[str, Any]:
    proc = subprocess.run(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--hide-scrollbars", f"--window-size={width},1000", "--virtual-time-budget=3000",
         "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r"<title>(.*?)</title>", proc.stdout, re.S)
    assert found, f"no title in Chromium's DOM (exit {proc.returncode}): {proc.stderr[-500:]}"
    return dict(json.loads(found.group(1).replace("&quot;", '"')))


def test_the_figures_fill_a_wide_screen_and_stack_on_a_narrow_one(report: Path) -> None:
    wide, narrow = _layout(report, 1800), _layout(report, 600)
    assert wide["figures"] >= 4
    assert wide["columns"] >= 2, wide
    assert narrow["columns"] == 1, narrow


def test_a_figure_opens_full_size_over_the_page(report: Path) -> None:
    closed = _layout(report, 1800)
    assert closed["open"] is None
    opened = _layout(report, 1800, "#fig-throughput")
    assert opened["open"] is not None, opened
    assert opened["open"]["position"] == "fixed"
    assert opened["open"]["width"] > closed["inGrid"], (opened, closed)
