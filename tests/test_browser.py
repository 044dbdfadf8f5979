"""report.html and the comparison page, opened in a real browser: headless Chromium (Debian's
``chromium`` and ``chromium-driver``, which .ci/run installs) driven by Selenium, from file:// with
no network. Checks what a person would see: no JavaScript errors, the front plot holding as many
points as the page says trials, the knee labelled, and the architecture diagrams drawn.

Skipped, with the reason, where Chromium, its driver or Selenium is not installed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nasconv.results.report import build_report, compare_report
from nasconv.search.space import parse_space

from .conftest import search_in_process, tiny_space_dict

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
# registered before any page script runs: every uncaught error and rejected promise is kept
CATCH_ERRORS = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', e => window.__errors.push('unhandled rejection: ' + e.reason));
"""
# the trial points of the first panel as plotly holds them (its decoded traces: the page's arrays
# are base64-packed) and as it drew them (SVG path.point)
COUNT_POINTS = """
const gd = document.getElementById('front-plot');
const inFirst = t => !t.xaxis || t.xaxis === 'x';
const roles = role => gd._fullData.filter(t => t.meta && t.meta.role === role && inFirst(t));
const count = traces => traces.reduce((n, t) => n + t._length, 0);
const drawn = gd.querySelectorAll('.cartesianlayer .subplot.xy .scatterlayer .trace .points path.point').length;
return {trials: count(roles('trials')), front: count(roles('front')), drawn: drawn,
        knees: (gd.layout.annotations || []).map(a => a.text),
        shown: Array.from(gd.querySelectorAll('.annotation-text')).map(e => e.textContent)};
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[dev]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="nasconv-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the system driver, named: Selenium must not go looking for (or downloading) another
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_ERRORS})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small searches of one space, with infeasible trials; the first has its report."""
    out = []
    for sampler, seed in (("random", 0), ("tpe", 1)):
        folder = tmp_path_factory.mktemp(f"browser-{sampler}")
        space = parse_space(tiny_space_dict(constraints={"max_params": 600}), source="tiny.yaml")
        search_in_process(space, folder, trials=6, sampler=sampler, seed=seed)
        out.append(folder)
    return out[0], out[1]


def open_page(driver: Any, page: Path) -> dict[str, Any]:
    """Load ``page`` from file://, wait for plotly to draw the front; return what the page holds,
    and every JavaScript error (uncaught, or logged as an error on the console)."""
    driver.get_log("browser")  # drop what an earlier page left
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + 60
    while not driver.execute_script(
        "const gd = document.getElementById('front-plot');"
        "return !!(gd && gd._fullLayout && gd.querySelector('.scatterlayer .trace'))"
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"{page.name}: the front plot was not drawn within 60 s")
        time.sleep(0.2)
    errors = list(driver.execute_script("return window.__errors"))
    errors += [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    return {"errors": errors, "resources": resources, **driver.execute_script(COUNT_POINTS)}


def text(driver: Any, selector: str) -> str:
    return str(driver.find_element("css selector", selector).text)


def test_report_page_in_chromium(browser: Any, folders: tuple[Path, Path]) -> None:
    report = build_report(folders[0])
    assert report.knee is not None
    page = open_page(browser, folders[0] / "report.html")
    assert page["errors"] == []
    assert all(r.startswith("file://") for r in page["resources"]), page["resources"]  # offline
    # as many points as the page says it plots (one per trial; repeats share their original's)
    plotted = int(text(browser, "#plotted-count"))
    assert plotted == report.plotted
    assert page["trials"] + page["front"] == plotted == page["drawn"]
    assert page["front"] == int(text(browser, "#front-count")) == len(report.front)
    knee = int(text(browser, "#knee-number"))
    assert knee == int(report.knee["number"])
    assert f"knee: trial {knee}" in page["knees"] and f"knee: trial {knee}" in page["shown"]
    # the knee's architecture, drawn: one box per stage, visible
    svg = browser.find_element("css selector", "#knee-arch svg.arch")
    assert svg.get_attribute("data-trial") == str(knee)
    assert svg.size["width"] > 300 and svg.size["height"] > 100
    stages = browser.find_elements("css selector", "#knee-arch svg.arch g.block.stage")
    kinds = [s["kind"] for s in json.loads(report.knee["arch"])["stages"]]
    assert len(stages) == len(kinds) and all(s.size["width"] > 50 for s in stages)
    drawn = browser.execute_script("return arguments[0].textContent", svg)
    assert all(f"stage {i} · {kind}" in drawn for i, kind in enumerate(kinds)) and "MACs" in drawn
    # the evidence view and the formatted tables are there too
    assert browser.find_element("css selector", "#evidence-plot .scatterlayer .trace")
    assert "◀ knee" in text(browser, "table.t tr.knee")


def test_comparison_page_in_chromium(browser: Any, folders: tuple[Path, Path], tmp_path: Path) -> None:
    comparison = compare_report(list(folders), tmp_path / "compare")
    page = open_page(browser, comparison.out / "report.html")
    assert page["errors"] == []
    assert all(r.startswith("file://") for r in page["resources"]), page["resources"]
    plotted = int(text(browser, "#plotted-count"))
    assert plotted == comparison.plotted
    assert page["trials"] + page["front"] == plotted == page["drawn"]
    assert page["front"] == int(text(browser, "#front-count")) == sum(len(s.front) for s in comparison.searches)
    for s in comparison.searches:
        assert s.knee is not None
        label = f"knee {s.label}: trial {int(s.knee['number'])}"
        assert label in page["knees"] and label in page["shown"]
    diagrams = browser.find_elements("css selector", ".knee-arch svg.arch")
    assert len(diagrams) == len(comparison.searches)
    assert all(d.size["width"] > 300 for d in diagrams)
