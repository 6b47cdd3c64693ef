"""Screenshot a report page in headless Chromium and check the verdict is on the first screen.

Usage: ``python tools/screenshot.py REPORT.html OUT.png`` (``make screenshot`` runs the
quick report first). Exits 1 when no Chromium is installed (Debian: ``apt-get install
chromium``) or when the verdict block is not visible in the first 1280×900 screen.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from matplotlib import image

WIDTH, HEIGHT = 1280, 900
# The verdict block's background (#f3f7fb in the template): a screen showing the block
# has a large area of exactly this colour.
VERDICT_RGB = (0xF3, 0xF7, 0xFB)
# Chromium's flags for a machine without a display or network (no sandbox as root).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str | None:
    """The Chromium executable, or ``None`` when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def screenshot(page: Path, out: Path, browser: str) -> None:
    """Renders `page` at ``WIDTH × HEIGHT`` into the PNG `out`."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={out}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def verdict_share(png: Path) -> float:
    """Share of the screenshot's pixels painted in the verdict block's background colour."""
    pixels = np.round(image.imread(png)[..., :3] * 255).astype(int)
    return float(np.all(pixels == VERDICT_RGB, axis=-1).mean())


def main(argv: list[str]) -> int:
    """Screenshots ``argv[0]`` into ``argv[1]``; 0 when the verdict fills the first screen."""
    page, out = Path(argv[0]), Path(argv[1])
    browser = chromium()
    if browser is None:
        print("no Chromium found: apt-get install chromium", file=sys.stderr)
        return 1
    screenshot(page, out, browser)
    share = verdict_share(out)
    print(f"{out}: verdict block covers {share:.0%} of the first {WIDTH}×{HEIGHT} screen")
    return 0 if share > 0.05 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
