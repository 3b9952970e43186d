"""The results page in a real browser (Debian's headless Chromium, driven by Playwright),
and ``crd batch --report`` against a real cluster.

Screenshots are kept in tests/artifacts/ (their paths are printed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.report_support import (
    BEST_NEAR_PAIR,
    EVIL_ID,
    PAYLOAD,
    RIVER_CLUSTER,
    parse_html,
    write_known_jsonl,
)
from tests.services import ROOT, require

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MIN_CONTRAST = 4.5
"""WCAG AA for normal text."""


def chromium_path() -> str | None:
    return os.environ.get("CRD_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (``playwright install`` cannot download browsers here)."""
    path = chromium_path()
    require(path is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright (the test extra)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known batch's page as ``crd batch --report`` writes it (embedded default)."""
    tmp = tmp_path_factory.mktemp("report")
    page = tmp / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "redundancy",
            "batch",
            str(write_known_jsonl(tmp / "docs.jsonl")),
            "--report",
            str(page),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr  # the known batch has one failed item
    return page


class Watched:
    """A page whose console errors, uncaught errors, dialogs and requests are recorded."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: self.requests.append(r.url))


def open_page(browser: Any, url: str, scheme: str) -> Watched:
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1280, "height": 900})
    watched = Watched(context.new_page())
    watched.page.goto(url)
    return watched


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def luminance(rgb: str) -> float:
    """WCAG relative luminance of a computed ``rgb(r, g, b)`` colour."""
    channels = [int(c) / 255 for c in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(fg: str, bg: str) -> float:
    high, low = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (high + 0.05) / (low + 0.05)


COLOURS = """selector => {
  const el = document.querySelector(selector);
  let bg = 'rgba(0, 0, 0, 0)', node = el;
  while (node && /rgba\\(.*, 0\\)$/.test(bg)) {
    bg = getComputedStyle(node).backgroundColor;
    node = node.parentElement;
  }
  return [getComputedStyle(el).color, bg];
}"""


def test_page_renders_clusters_and_the_diff_without_console_errors(browser, report_page):
    # Given the known batch's page written by `crd batch --report` (hostile ids and texts)
    # When Chromium opens it from file://
    watched = open_page(browser, report_page.as_uri(), "light")
    page = watched.page

    # Then the clusters rendered, the largest with its three members
    rows = page.locator("#clusters tbody tr")
    assert rows.count() == 2
    members = rows.nth(0).locator("li").all_inner_texts()
    assert {m.rsplit(" (", 1)[0] for m in members} == RIVER_CLUSTER
    # the best pair's side-by-side view is shown by default, its change highlighted
    first, second = page.locator("#pair-1"), page.locator("#pair-2")
    assert first.is_visible() and not second.is_visible()
    assert first.locator("h4").all_inner_texts() == [
        f"Document A: {BEST_NEAR_PAIR[0]}",
        f"Document B: {BEST_NEAR_PAIR[1]}",
    ]
    assert first.locator("del").all_inner_texts() == ["forty"]
    assert first.locator("ins").all_inner_texts() == ["fifty"]
    # the hostile text is shown as text and nothing in it ran
    assert PAYLOAD in first.locator("pre").nth(0).inner_text()
    assert EVIL_ID in page.locator("#pairs").inner_text()
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("typeof window.crdPwned") == "undefined"
    assert page.locator("img").count() == 0
    # both charts drew their bars
    assert page.locator("svg.chart rect.bar").count() > 0
    screenshot(page, "report-light.png")

    # When another pair is picked from the list
    page.locator("ol.pair-list a").nth(1).click()

    # Then its view replaces the first
    assert second.is_visible() and not first.is_visible()
    assert second.locator("del, ins").count() > 0
    # and the page logged no error, opened no dialog, requested nothing but itself
    assert watched.errors == [] and watched.dialogs == []
    assert set(watched.requests) == {report_page.as_uri()}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_page_is_readable_in_light_and_dark_mode(browser, report_page, scheme):
    # Given the page opened with the system in light or dark mode
    watched = open_page(browser, report_page.as_uri(), scheme)
    page = watched.page

    # When the colours of its text are read back
    _, body_bg = page.evaluate(COLOURS, "body")

    # Then the page follows the mode and every kind of text keeps AA contrast
    assert (luminance(body_bg) < 0.1) == (scheme == "dark")
    for selector in ("body", "h2", "#pair-1 del", "#pair-1 ins", ".muted", "dd", "a"):
        fg, bg = page.evaluate(COLOURS, selector)
        assert contrast(fg, bg) >= MIN_CONTRAST, (selector, fg, bg)
    assert watched.errors == []
    screenshot(page, f"report-{scheme}-mode.png")


@pytest.mark.slow
def test_crd_batch_report_against_a_cluster(redis_cluster, tmp_path):
    # Given a worker on Redis and the known documents
    redis_cluster.start_worker(concurrency=1)
    page = tmp_path / "cluster-report.html"

    # When `crd batch --report` sends the batch to the cluster
    proc = redis_cluster.crd(
        "batch",
        str(write_known_jsonl(tmp_path / "docs.jsonl")),
        "--report",
        str(page),
        "--no-progress",
        "--timeout",
        "120",
    )

    # Then the page was written from the cluster's result and the texts the command read
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Celery at redis://" in proc.stdout
    root = parse_html(page.read_text(encoding="utf-8"))
    assert [d.text for d in root.by_id("pair-1").find_all("del")] == ["forty"]
    clusters = root.by_id("clusters").find_all("tbody")[0].find_all("tr")
    assert {li.text.rsplit(" (", 1)[0] for li in clusters[0].find_all("li")} == RIVER_CLUSTER
