"""report.html, pareto.html and the comparison page, opened in a real browser: headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, which .ci/run installs) driven by Selenium, from
file:// with no network. Checks what a person would see, on searches with every kind of trial a
plot draws (full-budget, stopped early, infeasible) and with two and three objectives: no JavaScript
errors; the front plot holding as many points as the page says trials; the 2-D staircase; every
knee label at its knee, inside the plot and clear of the others; hover text formatted for people;
tick labels that do not collide; architecture diagrams whose text stays in its boxes; an importance
chart without genes of no importance.

Skipped, with the reason, where Chromium, its driver or Selenium is not installed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nasconv.results.report import IMPORTANCE_FLOOR, Report, build_report, compare_report
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
# are base64-packed) and as it drew them (SVG path.point); the staircases; every knee annotation
# with its axes and where its label box was drawn against its panel's plot area
INSPECT_FRONT = """
const gd = document.getElementById('front-plot');
const fl = gd._fullLayout;
const inFirst = t => !t.xaxis || t.xaxis === 'x';
const roles = role => gd._fullData.filter(t => t.meta && t.meta.role === role && inFirst(t));
const count = traces => traces.reduce((n, t) => n + t._length, 0);
const drawn = gd.querySelectorAll('.cartesianlayer .subplot.xy .scatterlayer .trace .points path.point').length;
const page = gd.getBoundingClientRect();
const knees = [];
(fl.annotations || []).forEach((a, i) => {
  if (a.name !== 'knee') return;
  const xa = fl[a.xref.replace('x', 'xaxis')], ya = fl[a.yref.replace('y', 'yaxis')];
  const g = gd.querySelector(`.annotation[data-index="${i}"] .annotation-text-g`);
  const r = g.getBoundingClientRect();
  knees.push({text: a.text, x: a.x, y: a.y, xref: a.xref, yref: a.yref,
              xtype: xa.type, ytype: ya.type, xrange: xa.range, yrange: ya.range,
              box: [r.left - page.left, r.top - page.top, r.right - page.left, r.bottom - page.top],
              area: [xa._offset, ya._offset, xa._offset + xa._length, ya._offset + ya._length]});
});
return {trials: count(roles('trials')), front: count(roles('front')), drawn: drawn,
        staircases: gd._fullData.filter(t => t.meta && t.meta.role === 'staircase').map(t => t.line.shape),
        knees: knees, shown: Array.from(gd.querySelectorAll('.annotation-text')).map(e => e.textContent)};
"""
# hover the first point of each kind of trace in the first panel, as a person would, and read the
# hover label plotly draws
HOVER = """
const gd = document.getElementById('front-plot');
const out = {};
gd._fullData.forEach((t, i) => {
  if (!t.meta || !(t.meta.role === 'front' || t.meta.role === 'trials') || (t.xaxis && t.xaxis !== 'x')) return;
  const key = t.meta.role === 'front' ? 'front' : t.meta.state;
  if (key in out) return;
  Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: 0}]);
  const label = gd.querySelector('.hoverlayer .hovertext');
  out[key] = label ? label.textContent : null;
  Plotly.Fx.unhover(gd);
});
return out;
"""
# tick labels of one axis that overlap another of the same axis, in every plot of the page
TICK_COLLISIONS = """
const out = [];
document.querySelectorAll('.js-plotly-plot').forEach(gd => {
  gd.querySelectorAll('.xaxislayer-above, .yaxislayer-above').forEach(layer => {
    const labels = Array.from(layer.querySelectorAll('.xtick text, .ytick text'))
      .map(e => ({t: e.textContent, b: e.getBoundingClientRect()})).filter(e => e.b.width > 0);
    for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
      const a = labels[i].b, b = labels[j].b;
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
        out.push(gd.id + ': ' + labels[i].t + ' / ' + labels[j].t);
    }
  });
});
return out;
"""
# every text of every block of every architecture diagram, measured as drawn, against its box
SVG_OVERFLOW = """
const out = [];
let texts = 0;
document.querySelectorAll('svg.arch g.block').forEach(g => {
  const box = g.querySelector('rect').getBBox();
  g.querySelectorAll('text').forEach(t => {
    texts++;
    const b = t.getBBox();
    if (b.x < box.x + 2 || b.x + b.width > box.x + box.width - 2 || b.y < box.y || b.y + b.height > box.y + box.height)
      out.push(`${g.closest('svg').dataset.trial}: "${t.textContent}" ends at ${Math.round(b.x + b.width)}, `
               + `box ${Math.round(box.x)}-${Math.round(box.x + box.width)}`);
  });
});
return {overflow: out, texts: texts};
"""
IMPORTANCE_BARS = """
const gd = document.getElementById('importance-plot');
return gd._fullData.map(t => ({x: Array.from(t.x), y: Array.from(t.y), xaxis: t.xaxis}));
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


def _space(**overrides: Any) -> Any:
    data = tiny_space_dict(
        **{"constraints": {"max_params": 600}, "training": {"epochs": 2, "batch_size": 32}, **overrides}
    )
    return parse_space(data, source="tiny.yaml")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small searches of one space with full-budget, early-stopped and infeasible trials."""
    out = []
    for sampler, seed in (("random", 0), ("tpe", 1)):
        folder = tmp_path_factory.mktemp(f"browser-{sampler}")
        search_in_process(_space(), folder, trials=8, sampler=sampler, seed=seed, stop_every=3)
        out.append(folder)
    return out[0], out[1]


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A search of accuracy, MACs and params over channel counts wide enough for log axes."""
    folder = tmp_path_factory.mktemp("browser-three")
    base = tiny_space_dict()
    stage = {**base["stages"][0], "channels": [8, 64]}
    space = _space(
        objectives=["accuracy", "macs", "params"],
        stem={"channels": [4, 32]},
        stages=[stage],
        constraints={"max_params": 20000},
    )
    search_in_process(space, folder, trials=8, sampler="random", seed=2, stop_every=3)
    return folder


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
    return {"errors": errors, "resources": resources, **driver.execute_script(INSPECT_FRONT)}


def text(driver: Any, selector: str) -> str:
    return str(driver.find_element("css selector", selector).text)


def knee_value(report_df: Any, number: int, column: str) -> float:
    return float(report_df.loc[report_df["number"] == number, column].iloc[0])


def assert_knees_placed(page: dict[str, Any], knees: dict[str, tuple[int, Any]]) -> None:
    """Every knee annotation (label -> (trial number, its search's trials)) points at its knee's values,
    inside its axes' ranges (log axes in log10, as plotly places annotations there), its label box
    inside the panel, and no two label boxes overlap."""
    found = {k["text"] for k in page["knees"]}
    assert set(knees) <= found, (knees, found)
    for k in page["knees"]:
        number, df = knees[k["text"]]
        for axis in ("x", "y"):
            position, kind, low_high = k[axis], k[f"{axis}type"], k[f"{axis}range"]
            assert min(low_high) <= position <= max(low_high), (k["text"], axis, position, low_high)
            value = 10**position if kind == "log" else position
            column = AXIS_COLUMNS[k[f"{axis}ref"]]
            assert math.isclose(value, knee_value(df, number, column), rel_tol=1e-6), (k["text"], axis, column)
        left, top, right, bottom = k["box"]
        a_left, a_top, a_right, a_bottom = k["area"]
        assert a_left - 1 <= left and right <= a_right + 1 and a_top - 1 <= top and bottom <= a_bottom + 1, k
    for i, a in enumerate(page["knees"]):
        for b in page["knees"][i + 1 :]:
            ax0, ay0, ax1, ay1 = a["box"]
            bx0, by0, bx1, by1 = b["box"]
            apart = ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
            assert apart, (a["text"], b["text"])


AXIS_COLUMNS: dict[str, dict[str, str]] = {}
"""Per page, per axis reference (``x2``), the objective it shows: filled by :func:`axis_columns`."""


def axis_columns(driver: Any) -> None:
    """Which objective each axis of the front plot shows, from its title."""
    titles = driver.execute_script(
        "const fl = document.getElementById('front-plot')._fullLayout; const out = {};"
        "Object.keys(fl).filter(k => /^[xy]axis\\d*$/.test(k)).forEach(k => out[k] = fl[k].title.text);"
        "return out;"
    )
    names = {"accuracy": "accuracy", "MACs": "macs", "params": "params"}
    AXIS_COLUMNS.clear()
    for key, title in titles.items():
        AXIS_COLUMNS[key.replace("axis", "")] = names.get(title, title)


def assert_readable(driver: Any, page: dict[str, Any]) -> None:
    """Hover labels formatted for people, tick labels apart, diagram text inside its boxes."""
    hovers = driver.execute_script(HOVER)
    front = hovers["front"]
    assert re.search(r"accuracy \d{1,3}\.\d%", front) and re.search(r"MACs \d+(\.\d+)?[kM]?\b", front), front
    assert not re.search(r"\d\.\d{4,}|\d{4,}\.0\b", front), front  # no raw floats
    if "infeasible" in hovers:
        assert re.search(r"never trained: over max_params \d+(\.\d+)?k?: \d+(\.\d+)?k?", hovers["infeasible"])
    if "stopped" in hovers:
        assert "stopped after 1 epoch(s)" in hovers["stopped"], hovers["stopped"]
    assert driver.execute_script(TICK_COLLISIONS) == []
    svg = driver.execute_script(SVG_OVERFLOW)
    assert svg["texts"] > 20 and svg["overflow"] == [], svg


def assert_importance(driver: Any, report: Report) -> None:
    """Every bar of the importance chart has some importance, and the ``N other genes`` bar counts
    only genes with some (below the floor or past the top ten), not those with none."""
    bars = driver.execute_script(IMPORTANCE_BARS)
    imp = report.importance
    assert (imp["importance"] <= 0).any(), "the fixture should have genes of no importance"
    for objective, trace in zip(dict.fromkeys(imp["objective"]), bars):
        assert all(x > 0 for x in trace["x"]), trace
        mine = imp[imp["objective"] == objective]
        named = [g for g in trace["y"] if not g.endswith("other genes")]
        others = [g for g in trace["y"] if g.endswith("other genes")]
        alive = int((mine["importance"] > 0).sum())
        if others:
            assert int(others[0].split()[0]) == alive - len(named), (objective, others, alive, named)
        else:
            assert alive == len(named) and (mine["importance"] >= IMPORTANCE_FLOOR).sum() >= len(named)


def test_report_page_in_chromium(browser: Any, folders: tuple[Path, Path]) -> None:
    report = build_report(folders[0])
    assert report.knee is not None
    states = set(report.df["state"])
    assert {"COMPLETE", "STOPPED", "INFEASIBLE"} <= states, states  # every kind of point a plot draws
    page = open_page(browser, folders[0] / "report.html")
    assert page["errors"] == []
    assert all(r.startswith("file://") for r in page["resources"]), page["resources"]  # offline
    # as many points as the page says it plots (one per trial; repeats share their original's)
    plotted = int(text(browser, "#plotted-count"))
    assert plotted == report.plotted
    assert page["trials"] + page["front"] == plotted == page["drawn"]
    assert page["front"] == int(text(browser, "#front-count")) == len(report.front)
    assert page["staircases"] == ["hv"]  # the 2-D front drawn as a staircase
    knee = int(text(browser, "#knee-number"))
    assert knee == int(report.knee["number"])
    axis_columns(browser)
    assert_knees_placed(page, {f"knee: trial {knee}": (knee, report.df)})
    assert f"knee: trial {knee}" in page["shown"]
    assert_readable(browser, page)
    # the knee's architecture, drawn: one box per stage, visible
    svg = browser.find_element("css selector", "#knee-arch svg.arch")
    assert svg.get_attribute("data-trial") == str(knee)
    assert svg.size["width"] > 300 and svg.size["height"] > 100
    stages = browser.find_elements("css selector", "#knee-arch svg.arch g.block.stage")
    kinds = [s["kind"] for s in json.loads(report.knee["arch"])["stages"]]
    assert len(stages) == len(kinds) and all(s.size["width"] > 50 for s in stages)
    drawn = browser.execute_script("return arguments[0].textContent", svg)
    assert all(f"stage {i} · {kind}" in drawn for i, kind in enumerate(kinds)) and "MACs" in drawn
    assert "True" not in drawn and "False" not in drawn
    # the evidence view is drawn; the tables hold every trial, the knee marked
    evidence = browser.execute_script("return document.querySelectorAll('#evidence-plot .scatterlayer .trace').length")
    assert evidence > 0
    assert "◀ knee" in text(browser, "table.t tr.knee")
    listed = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.t tbody tr td:first-child')).map(td => td.textContent)"
    )
    assert {str(n) for n in report.df["number"]} <= set(listed)  # on the front, or not with why
    assert_importance(browser, report)
    assert browser.find_element("css selector", "#importance-caveat").is_displayed()  # few trials: noise-level


def test_three_objective_report_in_chromium(browser: Any, three: Path) -> None:
    report = build_report(three)
    assert report.knee is not None and report.objectives == ["accuracy", "macs", "params"]
    for name in ("report.html", "pareto.html"):
        page = open_page(browser, three / name)
        assert page["errors"] == []
        assert page["staircases"] == []  # a projection of a 3-D front is no staircase
        axis_columns(browser)
        knee = int(report.knee["number"])
        assert len(page["knees"]) == 3, page["knees"]  # one per panel
        assert any(k["xtype"] == "log" or k["ytype"] == "log" for k in page["knees"])  # the case that went wrong
        assert_knees_placed(page, {f"knee: trial {knee}": (knee, report.df)})
        assert browser.execute_script(TICK_COLLISIONS) == []


def test_comparison_page_in_chromium(browser: Any, folders: tuple[Path, Path], tmp_path: Path) -> None:
    comparison = compare_report(list(folders), tmp_path / "compare")
    page = open_page(browser, comparison.out / "report.html")
    assert page["errors"] == []
    assert all(r.startswith("file://") for r in page["resources"]), page["resources"]
    plotted = int(text(browser, "#plotted-count"))
    assert plotted == comparison.plotted
    assert page["trials"] + page["front"] == plotted == page["drawn"]
    assert page["front"] == int(text(browser, "#front-count")) == sum(len(s.front) for s in comparison.searches)
    assert page["staircases"] == ["hv"] * len(comparison.searches)
    axis_columns(browser)
    knees = {}
    for s in comparison.searches:
        assert s.knee is not None
        label = f"knee {s.label}: trial {int(s.knee['number'])}"
        assert label in page["shown"]
        knees[label] = (int(s.knee["number"]), s.df)
    assert_knees_placed(page, knees)  # each at its knee, none over another
    stars = browser.execute_script(  # the colour of each search's knee star (in the first panel)
        "return document.getElementById('front-plot')._fullData"
        ".filter(t => t.meta && t.meta.role === 'front' && t.xaxis === 'x')"
        ".map(t => [t.meta.search, t.marker.color[Array.from(t.marker.symbol).indexOf('star')]])"
    )
    colours = dict(stars)
    assert set(colours) == {s.label for s in comparison.searches}
    assert len(set(colours.values())) == len(comparison.searches) and None not in colours.values()
    assert_readable(browser, page)
    diagrams = browser.find_elements("css selector", ".knee-arch svg.arch")
    assert len(diagrams) == len(comparison.searches)
    assert all(d.size["width"] > 300 for d in diagrams)


def test_every_kind_diagram_keeps_its_text_in_its_boxes(browser: Any, tmp_path: Path) -> None:
    """Every registered kind with each of its documented option sets, a 5x5 dilated kernel and SE, drawn
    as the report draws it and measured as Chromium lays the text out: long option lists wrap, boxes
    widen, no text leaves its box, flags read as words."""
    import dataclasses

    from nasconv.model.arch import build_model
    from nasconv.ops import CONV_KINDS, op_class
    from nasconv.results.architecture import architecture_svg, breakdown

    space = parse_space(tiny_space_dict())
    tiny = space.decode({name: choices[-1] for name, choices in space.genes()})
    diagrams = []
    examples = [(kind, example) for kind in CONV_KINDS for example in op_class(kind).examples]
    for number, (kind, options) in enumerate(examples):
        stage = dataclasses.replace(
            tiny.stages[0], kind=kind, options=tuple(options.items()), kernel=5, dilation=2, se=0.25
        )
        arch = dataclasses.replace(tiny, stages=(stage, dataclasses.replace(stage, stride=1)))
        arch.check()
        build_model(arch)
        diagrams.append(architecture_svg(breakdown(arch), trial=number))
    page = tmp_path / "kinds.html"
    page.write_text("<!doctype html><html><body>" + "".join(f"<div>{d}</div>" for d in diagrams) + "</body></html>")
    browser.get(page.resolve().as_uri())
    measured = browser.execute_script(SVG_OVERFLOW)
    assert measured["texts"] > 20 * len(diagrams) and measured["overflow"] == [], measured["overflow"]
    drawn = browser.execute_script("return document.body.textContent")
    assert "True" not in drawn and "False" not in drawn
