"""First view: how long a new user waits for the first chart, and each page's render time cold and cached.

Starts `streamlit run app.py` on a free local port (the cache as it is: after `scripts/install.sh`, the first
view's representations are precomputed), then drives Debian's Chromium through Playwright:

- cold start: from starting the server process to the first chart on `/` (goal: 20 s);
- per page, with the default selection, switching pages in the open app through the sidebar navigation as a user
  does: the first visit (cold: results computed into the app's memory) and a later one (cached; goal: 1 s);
- the same page opened in a new browser tab (the frontend loads and a new session starts: slower).

A render is timed from the click (or navigation) until a chart is drawn and the app's "running" indicator is gone.
Prints a table; nothing is asserted. Usage: `.venv/bin/python benchmarks/bench_first_view.py [--pages routing,layers]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.local_server import local_server  # noqa: E402

CHROMIUM = os.environ.get("CPD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PAGES = {"disentanglement": "Disentanglement", "layers": "Layers", "routing": "Irrep routing", "probes": "Probes",
         "sample_efficiency": "Sample efficiency", "embedding": "Embedding map", "data": "Data and models"}


def settle(page, start: float, timeout_ms: int = 600_000) -> float:
    """Seconds since `start` until a chart is drawn and the script has stopped running."""
    page.wait_for_selector(".js-plotly-plot", timeout=timeout_ms)
    quiet = 0
    while quiet < 2:  # the status widget shows while a script runs
        quiet = 0 if page.locator('[data-testid="stStatusWidget"]').count() else quiet + 1
        time.sleep(0.05)
    return time.perf_counter() - start - 0.1  # minus the two quiet polls


def render(page, url: str) -> float:
    """Seconds from opening `url` in this tab until it has settled."""
    start = time.perf_counter()
    page.goto(url)
    return settle(page, start)


def switch(page, name: str) -> float:
    """Seconds from clicking the page's sidebar link until the page has settled."""
    start = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_text(PAGES[name], exact=True).click()
    page.wait_for_url(f"**/{name}**")
    return settle(page, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated url paths")
    pages = parser.parse_args().pages.split(",")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, local_server(ROOT / "test-artifacts" / "first-view-server.log") as (url, healthy):
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        tab = browser.new_page(viewport={"width": 1440, "height": 1200})
        first = render(tab, f"{url}/")
        print(f"cold start: server healthy after {healthy:.1f} s, first chart after {healthy + first:.1f} s "
              "from starting `streamlit run` (goal: 20 s)")
        print(f"{'page':20s} {'cold (s)':>9s} {'cached (s)':>11s} {'new tab (s)':>12s}")
        cold = {"disentanglement": first}  # the root opens it
        for name in pages:  # first visits, in the open app
            if name not in cold:
                cold[name] = switch(tab, name)
        for name in pages:  # later visits (the tab is on another page each time): results are in memory
            cached = switch(tab, name)
            new_tab = render(browser.new_page(viewport={"width": 1440, "height": 1200}), f"{url}/{name}")
            print(f"{name:20s} {cold[name]:9.2f} {cached:11.2f} {new_tab:12.2f}")
        browser.close()


if __name__ == "__main__":
    main()
