"""The dashboard in a real browser: `streamlit run app.py` on a free local port, driven by Debian's Chromium
through Playwright. Every page must draw a chart without an exception box; a sidebar change must redraw the chart,
reach the URL and survive a page switch; clicking a point on the embedding map must select that structure. Deep
links (a page's own URL, also as a fresh server's first request) open their page without "Page not found", and the
navigation never lists the shared code as a page. A page left while it extracts a new model on the Dask cluster
cancels the chunks not yet computed.

Needs /usr/bin/chromium (`apt-get install -y chromium`); the test FAILS without it. Screenshots go to
test-artifacts/screenshots/; with CPD_UPDATE_SCREENSHOTS=1 the README's ones in docs/screenshots/ are refreshed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dashboard.local_server import local_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CPD_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SMALL = "n=200"
PAGES = [  # (url path with query, screenshot name, charts expected at least)
    (f"?{SMALL}", "disentanglement", 1),
    (f"layers?{SMALL}&models=ani2x-aev,ani2x-nets", "layers", 1),
    (f"routing?{SMALL}&models=ani2x-aev,mace-spice", "routing", 1),
    (f"probes?{SMALL}&probes_list=ridge,gbt", "probes", 1),
    (f"sample_efficiency?{SMALL}", "sample_efficiency", 1),
    (f"embedding?{SMALL}&emb_point=3", "embedding", 1),  # a chosen structure: the 3D viewer shows
    (f"data?{SMALL}", "data", 2),
    (f"similarity?{SMALL}&models=ani2x-aev,ani2x-nets,mace-spice", "similarity", 1),
]
WAIT_MS = 420_000
DEEP_LINKS = [  # (url path with query, title of the page it opens)
    (f"disentanglement?{SMALL}", "Disentanglement"),
    (f"layers?{SMALL}", "Layers"),
    (f"data?{SMALL}", "Data and models"),
    (f"?{SMALL}", "Disentanglement"),
]
# Runs before the app's own scripts: records every text the sidebar navigation shows, from the first paint on,
# and whether "Page not found" (Streamlit's dialog for an unknown page) was ever on the page.
WATCH_JS = """
window.__cpd = {nav: [], notFound: false};
new MutationObserver(() => {
  const nav = document.querySelector('[data-testid="stSidebarNav"]');
  if (nav && window.__cpd.nav[window.__cpd.nav.length - 1] !== nav.textContent) window.__cpd.nav.push(nav.textContent);
  if (document.body && document.body.textContent.includes("Page not found")) window.__cpd.notFound = true;
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


@contextlib.contextmanager
def streamlit_server(log_name: str):
    """`streamlit run app.py` on a free local port; yields its URL once it answers its health check."""
    try:
        with local_server(SHOTS.parent / log_name) as (url, _):
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server():
    with streamlit_server("streamlit-server.log") as url:
        yield url


@pytest.fixture
def fresh_server():
    """A server whose first request is this test's: Streamlit treats the first run of a process differently (it
    lists pages/ as a legacy pages folder until app.py calls st.navigation), so deep links are checked there."""
    with streamlit_server("streamlit-fresh-server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get update && apt-get install -y "
                    "chromium` (the browser test needs Debian's Chromium; it never downloads one).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    pg = context.new_page()
    yield pg
    context.close()


def wait_idle(pg, timeout: float = WAIT_MS / 1000) -> None:
    """Until the app is not running (Streamlit shows its status widget while a script runs)."""
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        running = pg.locator('[data-testid="stStatusWidget"]').count() > 0
        quiet = 0 if running else quiet + 1
        if quiet >= 3:
            return
        time.sleep(0.5)
    raise AssertionError("the app kept running")


def open_and_check(pg, url: str, charts: int) -> None:
    pg.goto(url)
    check_charts(pg, charts)


def check_charts(pg, charts: int) -> None:
    """The page drew at least `charts` charts, shows no exception box, and the app is idle."""
    pg.wait_for_selector(".js-plotly-plot", timeout=WAIT_MS)
    wait_idle(pg)
    pg.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {charts}", timeout=60_000)
    exceptions = pg.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    assert pg.locator('[data-testid="stSidebar"]').get_by_text("CPD Explorer").count() == 1


def shot(pg, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path))
    return path


@pytest.mark.parametrize("path, name, charts", PAGES, ids=[p[1] for p in PAGES])
def test_page_renders_a_chart(server, page, path, name, charts):
    open_and_check(page, f"{server}/{path}", charts)
    if name == "embedding":  # the 3D viewer iframe is there too
        assert page.locator("iframe").count() >= 1
    saved = shot(page, name)
    if os.environ.get("CPD_UPDATE_SCREENSHOTS") == "1" and name in ("disentanglement", "embedding", "routing",
                                                                         "similarity"):
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(saved, DOCS_SHOTS / saved.name)


def test_selection_redraws_reaches_url_and_persists(server, page):
    open_and_check(page, f"{server}/?{SMALL}", 1)
    assert page.locator(".js-plotly-plot .gtitle").first.text_content().startswith("gap")
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Target").click()
    page.get_by_role("option", name="dipole", exact=True).click()
    page.wait_for_selector(".js-plotly-plot .gtitle:has-text('dipole')", timeout=WAIT_MS)
    wait_idle(page)
    assert "target=dipole" in page.url and "n=200" in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "disentanglement_dipole")
    # switch page through the sidebar navigation: the choice and the URL carry over
    page.get_by_test_id("stSidebarNav").get_by_text("Layers").click()
    page.wait_for_selector(".js-plotly-plot .gtitle:has-text('dipole')", timeout=WAIT_MS)
    wait_idle(page)
    # the query string is rewritten by the page's script run, which can finish after the chart is drawn
    page.wait_for_function("location.search.includes('target=dipole')", timeout=WAIT_MS)
    assert "/layers" in page.url and "target=dipole" in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
    # the shared link reopens the same view in a fresh session
    other = page.context.new_page()
    open_and_check(other, page.url, 1)
    assert "dipole" in other.locator(".js-plotly-plot .gtitle").first.text_content()
    other.close()


def test_clicking_a_point_selects_its_structure(server, page):
    open_and_check(page, f"{server}/embedding?{SMALL}", 1)
    assert page.get_by_test_id("stMarkdown").filter(has_text="qm9-").count() == 0  # nothing chosen yet
    assert page.locator("iframe").count() == 0
    # the maps are WebGL (no DOM element per point): find point 37 of the raw map on screen through Plotly's axes
    x, y, n = page.evaluate("""() => {
        const gd = document.querySelector('.js-plotly-plot');
        const trace = gd._fullData[0], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.getBoundingClientRect();
        return [box.left + xa._offset + xa.d2p(trace.x[37]), box.top + ya._offset + ya.d2p(trace.y[37]),
                trace.x.length];
    }""")
    assert n == 200
    page.mouse.click(x, y)
    page.wait_for_url("**emb_point=*", timeout=120_000)
    wait_idle(page)
    assert int(page.url.split("emb_point=")[1].split("&")[0]) == 37  # the point clicked
    assert page.get_by_test_id("stMarkdown").filter(has_text="qm9-").count() >= 1  # its record
    assert page.locator("iframe").count() == 1  # the 3D viewer of the chosen structure
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "embedding_selected")


@pytest.mark.parametrize("path, title", DEEP_LINKS, ids=["disentanglement", "layers", "data", "root"])
def test_deep_link_opens_its_page(fresh_server, page, path, title):
    """A link to a page opens that page with the link's choices, also as a fresh server's first request ("/" opens
    Disentanglement). Never Streamlit's "Page not found" dialog."""
    page.add_init_script(WATCH_JS)
    open_and_check(page, f"{fresh_server}/{path}", 1)
    assert page.get_by_text("Page not found").count() == 0
    assert not page.evaluate("window.__cpd.notFound")
    assert page.get_by_test_id("stHeading").first.inner_text().startswith(title)
    assert urllib.parse.urlsplit(page.url).path.startswith("/" + path.split("?")[0])
    assert page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="Structures (random subset)").input_value() == "200"
    page.wait_for_function(f"location.search.includes('{SMALL}')", timeout=60_000)


def test_sidebar_never_lists_common(fresh_server, page):
    """The shared dashboard code is not in pages/, so Streamlit never lists it as a page called "common", not
    even in the first moments of a fresh server's first run (before app.py's st.navigation replaces the list)."""
    page.add_init_script(WATCH_JS)
    page.goto(f"{fresh_server}/layers?{SMALL}")
    nav = page.get_by_test_id("stSidebarNav")
    nav.wait_for(timeout=WAIT_MS)
    first = nav.inner_text()
    check_charts(page, 1)
    seen = [first, nav.inner_text(), *page.evaluate("window.__cpd.nav")]
    assert "Layers" in seen[1] and "Disentanglement" in seen[1]
    assert not [text for text in seen if "common" in text.lower()], seen


def _pending_tasks(dask_scheduler) -> int:
    """Tasks the scheduler still means to run (runs on the scheduler through client.run_on_scheduler)."""
    return sum(ts.state in ("released", "waiting", "queued", "processing", "no-worker")
               for ts in dask_scheduler.tasks.values())


def test_leaving_a_computing_page_cancels_its_futures(page, tmp_path, monkeypatch):
    """A page extracting a new model on the Dask cluster is left through the sidebar while it computes: Streamlit
    stops its script at the next progress update, the chunks not yet computed are cancelled on the cluster (it
    falls idle long before the extraction could have finished), and the chunks already computed stay cached."""
    from dask.distributed import Client, LocalCluster

    from cpd_core.paths import cache_dir

    (tmp_path / "datasets").symlink_to(cache_dir() / "datasets")  # reuse the parsed QM9; no representation cached
    monkeypatch.setenv("CPD_CACHE_DIR", str(tmp_path))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        monkeypatch.setenv("CPD_DASK_SCHEDULER", cluster.scheduler_address)
        with streamlit_server("streamlit-cancel-server.log") as url:
            # SevenNet-l3i5 takes about 20 ms per molecule: 5,000 molecules are minutes of work for one worker
            page.goto(f"{url}/layers?n=5000&models=sevennet-l3i5")
            page.wait_for_function(r"/[1-9][0-9,]* \/ [0-9,]+ structures/.test(document.body.innerText)",
                                   timeout=WAIT_MS)
            assert client.run_on_scheduler(_pending_tasks) > 0
            chunks = lambda: len(list(tmp_path.glob("embeddings/**/part_*.npz")))  # noqa: E731
            assert chunks() >= 1
            left_at = time.time()
            page.get_by_test_id("stSidebarNav").get_by_text("Data and models").click()
            # cancelled, the cluster is idle within seconds (2 s here); left to itself it would compute for minutes
            while client.run_on_scheduler(_pending_tasks) and time.time() - left_at < 20:
                time.sleep(0.5)
            assert client.run_on_scheduler(_pending_tasks) == 0, "the cluster kept computing the left page's chunks"
            time.sleep(3)  # a chunk that was running when the page was left may still be saved: then nothing more
            saved = chunks()
            time.sleep(5)
            assert chunks() == saved < 5000 // 64, "chunks were still computed after the page was left"
            wait_idle(page)
            assert page.get_by_test_id("stHeading").first.inner_text().startswith("Data and models")
            assert page.locator('[data-testid="stException"]').count() == 0
