"""A solve that cannot finish (step size underflow, too many steps) is one line saying what to change,
from the solver, from Vid-ODE and from `vidyn train`, not an AssertionError from inside torchdiffeq."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tiny_configs import tiny_prediction_config

from vidyn import build_model
from vidyn.cli import main
from vidyn.nn.ode import ODESolverError, odesolve


def test_nan_dynamics_underflow_is_a_solver_error() -> None:
    with pytest.raises(ODESolverError, match=r"underflow in dt .*: loosen rtol/atol, raise max_num_steps"):
        odesolve(lambda t, y: y * float("nan"), torch.ones(3), torch.tensor([0.0, 1.0]), method="dopri5",
                 rtol=1e-3, atol=1e-4)  # fmt: skip


def test_vid_ode_too_many_steps_names_its_settings() -> None:
    model = build_model("vid_ode_tiny", in_channels=1, decoder_method="dopri5", rtol=1e-12, atol=1e-12,
                        max_num_steps=3)  # fmt: skip
    times = torch.arange(8.0) * 0.1
    with pytest.raises(ODESolverError) as err:
        model(torch.rand(1, 4, 1, 16, 16), times[:4], times[4:])
    text = str(err.value)
    assert "\n" not in text and "max_num_steps exceeded" in text
    assert "model.args.max_num_steps" in text and "model.args.decoder_method=rk4" in text


def test_train_stops_in_one_line_at_the_failing_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_prediction_config(
        "vid_ode_tiny", decoder_method="dopri5", rtol=1e-12, atol=1e-12, max_num_steps=3
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    # In-process, Lightning's INFO lines (and its logging errors on pytest's closed streams) come too.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidyn:")]
    assert len(err) == 1 and err[0].startswith("vidyn: error: training stopped at step 1: the ODE solver"), (
        err
    )
    assert "model.args.rtol" in err[0]
