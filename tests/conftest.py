"""Shared fixtures: the shipped shapes-mini bundle, loaded once, and its fidelity figures."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("BLEND_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def mini():
    import blend

    return blend.load(os.environ.get("BLEND_TEST_PRESET", "shapes-mini"), device="cpu")


@pytest.fixture(scope="session")
def figures(mini):
    """Fidelity on 100 held-out scenes (the benchmark runs 200+); tests assert the issue's floors on them."""
    from blend.evaluate import fidelity

    return fidelity(mini, n=100, seed=99)
