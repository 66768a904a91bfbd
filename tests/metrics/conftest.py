"""Real metric networks for the tests: CI's `.ci/run` installs them (`vidyn weights install all`)."""

from __future__ import annotations

import pytest
import torch

from vidyn.errors import VidynError


def _require(load):
    try:
        return load()
    except VidynError as err:
        pytest.fail(f"{err}  [the metric tests need the real weights; CI installs them in .ci/run]")


@pytest.fixture(scope="session")
def i3d_net():
    from vidyn.metrics.i3d import load_i3d

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return _require(load_i3d)


@pytest.fixture(scope="session")
def inception_net():
    from vidyn.metrics.inception import load_inception

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return _require(load_inception)
