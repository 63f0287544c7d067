"""Every preset's trajectory is the recorded one, bit for bit (see golden.py for what is recorded and why)."""

from __future__ import annotations

import json

import pytest
from golden import GOLDEN, OPTIMIZERS, VARIANTS, canary, trajectory

RECORDED = json.loads(GOLDEN.read_text())


def test_every_variant_and_optimizer_is_recorded() -> None:
    assert set(RECORDED["trajectories"]) == {f"{v}/{o}" for v in VARIANTS for o in OPTIMIZERS}
    for traj in RECORDED["trajectories"].values():  # the file records real runs: links and updates where expected
        assert all(layer["links"] > 0 for layer in traj["layers"].values())


@pytest.mark.parametrize("optim", OPTIMIZERS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trajectory_is_the_recorded_one(variant: str, optim: str) -> None:
    if canary() != RECORDED["canary"]:
        pytest.skip(
            f"this machine's forward/backward arithmetic differs from the one that recorded {GOLDEN.name} "
            f"(torch {RECORDED['torch']}): bitwise trajectories cannot be compared here"
        )
    assert trajectory(variant, optim) == RECORDED["trajectories"][f"{variant}/{optim}"]
