"""Real metric networks for the tests: CI's `.ci/run` installs them (`vidyn weights install all`)."""

from __future__ import annotations

import pytest
import torch

from vidyn.errors import VidynError


@pytest.fixture
def one_thread():
    """One torch thread for the metric-network tests: on 2 shared cores two threads were 3-8x slower
    (oneDNN/OpenMP barriers wait on descheduled threads); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _require(load):
    try:
        return load()
    except VidynError as err:
        pytest.fail(f"{err}  [the metric tests need the real weights; CI installs them in .ci/run]")


@pytest.fixture(scope="session")
def i3d_net():
    from vidyn.metrics.i3d import load_i3d

    return _require(load_i3d)


@pytest.fixture(scope="session")
def inception_net():
    from vidyn.metrics.inception import load_inception

    return _require(load_inception)
