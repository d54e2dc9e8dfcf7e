"""Headless Chromium for the HTML report tests: console messages, the DOM after scripts ran, a screenshot."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking")
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")


def chromium() -> str:
    """Path of Debian's chromium; skipped locally when missing, a failure under CI."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run scripts/ci/chromium.sh")
        pytest.skip("chromium is not installed (scripts/ci/chromium.sh installs it)")
    return path


@dataclass
class Visit:
    console: list[str]  # console messages and uncaught errors
    dom: str  # serialised DOM after the page's scripts ran
    screenshot: bytes  # PNG


def visit(page: Path, *, width: int = 900, height: int = 1600) -> Visit:
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="corevital-chromium-") as profile:
        base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
        dumped = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        shot = Path(profile) / "shot.png"
        taken = subprocess.run(
            [*base, f"--window-size={width},{height}", "--hide-scrollbars", f"--screenshot={shot}", url],
            capture_output=True, text=True, timeout=120,
        )
        assert dumped.returncode == 0 and taken.returncode == 0, dumped.stderr[-2000:] + taken.stderr[-2000:]
        console = [m.group(1) for text in (dumped.stderr, taken.stderr) for m in map(_CONSOLE.search, text.splitlines()) if m]
        return Visit(console=console, dom=dumped.stdout, screenshot=shot.read_bytes())


def pixels(png: bytes) -> np.ndarray:
    """The screenshot as an [height, width, 3] uint8 array."""
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))
