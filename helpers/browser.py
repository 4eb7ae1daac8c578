"""Open the built book in headless Chromium: every page loads, every figure is there.

Chromium (Debian's ``chromium``) runs with ``--headless --no-sandbox --disable-gpu
--disable-background-networking``, and ``--disable-dev-shm-usage`` for containers. For
each page the rendered DOM is dumped and checked for the page's title and its figures;
each figure's file must exist beside the page and be non-empty. Screenshots of the front
page and one chapter are saved.

Command line::

    python -m helpers.browser _build/html --screenshots _build/screenshots
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
)
_IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)


class BrowserError(RuntimeError):
    """A page did not load, or a figure is missing."""


def find_chromium() -> str | None:
    """Return the path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def usable(chromium: str | None = None) -> bool:
    """Whether a Chromium is installed and can start headless here (it renders a blank page)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        return False
    try:
        return "<html" in _run(chromium, "--dump-dom", "about:blank", timeout=60)
    except (BrowserError, OSError):
        return False


def _run(chromium: str, *arguments: str, timeout: int = 120) -> str:
    try:
        result = subprocess.run(
            [chromium, *FLAGS, *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BrowserError(f"chromium did not finish {arguments[-1]} in {timeout} s") from error
    if result.returncode != 0:
        raise BrowserError(f"chromium failed on {arguments[-1]}: {result.stderr[-500:]}")
    return result.stdout


def dump_dom(chromium: str, page: Path) -> str:
    """The page's DOM after Chromium has loaded it and run its scripts."""
    return _run(chromium, "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri())


def screenshot(chromium: str, page: Path, target: Path, size: str = "1280,1600") -> Path:
    """Save a PNG screenshot of a page."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _run(
        chromium,
        "--virtual-time-budget=5000",  # do not wait for resources that cannot load offline
        f"--screenshot={target.resolve()}",
        f"--window-size={size}",
        page.resolve().as_uri(),
    )
    if not target.exists() or target.stat().st_size == 0:
        raise BrowserError(f"no screenshot of {page} was written")
    return target


@dataclass
class PageReport:
    """What the browser saw on one page."""

    page: str
    title: str
    images: int
    missing: list[str] = field(default_factory=list)


def check_page(chromium: str, page: Path) -> PageReport:
    """Load one page; return its title, how many figures it shows, and any missing ones."""
    dom = dump_dom(chromium, page)
    title = re.search(r"<h1[^>]*>(.*?)</h1>", dom, re.IGNORECASE | re.DOTALL)
    if title is None:
        raise BrowserError(f"{page} rendered without a title (h1): did it load?")
    sources = [s for s in _IMG.findall(dom) if not s.startswith(("data:", "http"))]
    missing = [
        s
        for s in sources
        if not (page.parent / s).exists() or (page.parent / s).stat().st_size == 0
    ]
    text = re.sub(r"<[^>]+>", "", title.group(1)).strip()
    return PageReport(page.name, text, len(sources), missing)


def check_book(html: Path, screenshots: Path | None = None) -> list[PageReport]:
    """Check the front page and every chapter page of a built book.

    Raises:
        BrowserError: Chromium is missing, a page fails to load, a chapter page shows no
            figure, or a figure's file is missing.
    """
    chromium = find_chromium()
    if chromium is None:
        raise BrowserError("no Chromium found (Debian: apt-get install chromium)")
    chapters = sorted((html / "notebooks").glob("[0-9][0-9]_*.html"))
    if not chapters:
        raise BrowserError(f"no chapter pages under {html / 'notebooks'}")
    reports = [check_page(chromium, html / "index.html")]
    reports += [check_page(chromium, page) for page in chapters]
    broken = [r for r in reports if r.missing]
    if broken:
        raise BrowserError(f"missing figures: {[(r.page, r.missing) for r in broken]}")
    if screenshots is not None:
        screenshot(chromium, html / "index.html", screenshots / "front_page.png")
        screenshot(chromium, chapters[min(2, len(chapters) - 1)], screenshots / "chapter.png")
    return reports


def main(argv: list[str] | None = None) -> None:
    """Command line: check a built book and save screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args(argv)
    for report in check_book(args.html, args.screenshots):
        print(f"{report.page:>40}: {report.images:3d} figures  {report.title[:60]}")


if __name__ == "__main__":
    main()
