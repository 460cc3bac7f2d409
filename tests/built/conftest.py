"""Shared fixture of the built-site tests: one headless Chromium, Debian's (page_checks.serve serves files)."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    assert CHROMIUM, "Chromium is missing: make setup installs Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # the flags keep Chromium from calling home, so a load error is the page's own
        yield chromium
        chromium.close()
