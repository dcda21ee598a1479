"""Shared fixtures: the shipped shapes-mini bundle (the 64-px v2 world), loaded once per session."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("BLEND_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def mini():
    import blend

    return blend.load(os.environ.get("BLEND_TEST_PRESET", "shapes-mini"), device="cpu")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a test that drives the app fails, its report carries the end of the app's own log, and a copy of the
    whole log (and a screenshot of the page, for browser tests) goes to artifacts/: the app's log lives in a
    temporary folder that is gone by the time anyone reads a CI failure."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})  # doctest items have none
    server, page = funcargs.get("server"), funcargs.get("page")
    log = getattr(server, "log", None)
    from app_support import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    name = item.name.replace("/", "_")
    if log is not None and log.exists():
        server._log.flush()
        text = log.read_text(errors="replace")
        (ARTIFACTS / f"{name}-app.log").write_text(text)
        report.sections.append(("app log (last 4000 characters)", text[-4000:]))
    if page is not None:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}-failed.png"), full_page=True)
        except Exception as e:  # a page that is gone: the log is what is left
            report.sections.append(("screenshot", f"not taken: {e}"))
