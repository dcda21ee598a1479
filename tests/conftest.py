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
