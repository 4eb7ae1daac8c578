"""The browser check on a hand-made site (skipped where Chromium is not installed)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from helpers import browser

needs_chromium = pytest.mark.skipif(not browser.usable(), reason="no Chromium that starts here")
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _site(root: Path, image: bool = True) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "_images").mkdir()
    (root / "index.html").write_text("<html><body><h1>Finding skill neurons</h1></body></html>")
    if image:
        (root / "_images" / "fig.png").write_bytes(PNG)
    page = '<html><body><h1>00 · Data</h1><img src="../_images/fig.png"></body></html>'
    (root / "notebooks" / "00_data.html").write_text(page)
    return root


@needs_chromium
def test_pages_load_figures_are_found_and_screenshots_saved(tmp_path: Path) -> None:
    html = _site(tmp_path / "html")
    reports = browser.check_book(html, tmp_path / "shots")
    assert [(r.page, r.images, r.title) for r in reports] == [
        ("index.html", 0, "Finding skill neurons"),
        ("00_data.html", 1, "00 · Data"),
    ]
    assert (tmp_path / "shots" / "front_page.png").stat().st_size > 0
    assert (tmp_path / "shots" / "chapter.png").stat().st_size > 0


@needs_chromium
def test_a_missing_figure_fails_the_check(tmp_path: Path) -> None:
    html = _site(tmp_path / "html", image=False)
    with pytest.raises(browser.BrowserError, match="missing figures"):
        browser.check_book(html)


def test_no_chapters_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notebooks").mkdir()
    with pytest.raises(browser.BrowserError):
        browser.check_book(tmp_path)


def test_usable_is_false_for_a_missing_executable() -> None:
    assert not browser.usable("/nonexistent/chromium")
