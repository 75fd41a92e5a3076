"""Open a reconstruction page (``index.html`` of ``train-cli reconstruct`` or ``make demo``) in a
real headless browser, check what it loaded, and save a screenshot.

Too heavy for CI (it needs Chromium: ``apt-get install -y chromium``), so it is a script. It runs
Debian's ``chromium`` twice, offline (no network features, a throw-away profile):

1. ``--dump-dom``: the page as the browser parsed it; checked: no ``<script>`` element and no
   ``on*=`` event attribute exists (file names on the page are escaped, issue 15), every ``<img>``
   and link points at a file that exists next to the page (nothing fetched from the network);
2. ``--screenshot``: a PNG of the first ``--height`` pixels at ``--width``.

    python scripts/page_screenshot.py demo/index.html docs/reconstruct_page.png [--width 1100] [--height 1400]

Exit status 1 with the reason when a check fails. As root, Chromium needs ``--no-sandbox``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k.startswith("on"):
                self.events.append((tag, k))
            if (tag, k) in (("img", "src"), ("a", "href"), ("link", "href"), ("script", "src")) and v:
                self.refs.append(v)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("page_screenshot: no chromium found (Debian: apt-get install -y chromium)")


def check_dom(dom: str, page: Path) -> list[str]:
    """Problems with the parsed page (an empty list when it is fine)."""
    p = _Dom()
    p.feed(dom)
    problems = []
    if "script" in p.tags:
        problems.append("a <script> element is on the page")
    problems += [f"event attribute {k} on <{t}>" for t, k in p.events]
    if "img" not in p.tags:
        problems.append("no <img> on the page")
    for ref in p.refs:
        url = urlparse(ref)
        if url.scheme not in ("", "file"):
            problems.append(f"reference outside the folder: {ref}")
            continue
        target = page.parent / unquote(url.path)
        if not target.is_file():
            problems.append(f"missing file: {ref}")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=1400)
    a = ap.parse_args()
    page = a.page.resolve()
    if not page.is_file():
        raise SystemExit(f"page_screenshot: {a.page} does not exist")
    url = page.as_uri()
    exe = chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        common = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={a.width},{a.height}"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        if dom.returncode != 0 or "<html" not in dom.stdout:
            raise SystemExit(f"page_screenshot: chromium could not load {url}: {dom.stderr.strip()[-500:]}")
        problems = check_dom(dom.stdout, page)
        a.png.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run([*common, f"--screenshot={a.png.resolve()}", url], capture_output=True, text=True,
                              timeout=120)
    if shot.returncode != 0 or not a.png.is_file():
        raise SystemExit(f"page_screenshot: no screenshot: {shot.stderr.strip()[-500:]}")
    print(f"{a.page}: parsed by chromium, {dom.stdout.count('<img')} images; screenshot {a.png}")
    if problems:
        print("problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
