"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    # Models this small run faster on one thread: with two, intra-op thread handoffs cost more than the maths.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
