"""Shared fixture of the built-site tests: one headless Chromium, Debian's, the one that prints the PDF
(runner.chromium_path; runner.serve serves files)."""

from __future__ import annotations

import pytest

from aigc_utils.runner import chromium_path


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_path(),  # says how to install it when it is missing
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # the flags keep Chromium from calling home, so a load error is the page's own
        yield chromium
        chromium.close()
