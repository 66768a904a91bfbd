"""`vidyn train --resume RUN` as the README shows it: the run's own config, `--set` on top (checked against
the checkpoint before anything is written, then recorded), and a run stopped by NaN/inf that resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tiny_configs import tiny_prediction_config

from vidyn.cli import main
from vidyn.errors import VidynError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step run (validation every 2 steps, hidden_channels 8 by --set, as a user's overrides)."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_prediction_config()
    cfg["trainer"].update(max_steps=6, checkpoint_every_n_steps=2)
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    args = [
        "train",
        "-c",
        str(tmp / "tiny.yaml"),
        "--out",
        str(tmp / "run"),
        "--set",
        "model.args.hidden_channels=6",
    ]
    assert main(args) == 0
    return tmp / "run"


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def _step(run: Path) -> int:
    return int(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


def test_a_change_that_does_not_fit_is_one_line_and_writes_nothing(run: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in [run / "config.yaml", run / "checkpoints" / "last.ckpt"]}
    assert main(["train", "--resume", str(run), "--set", "model.args.hidden_channels=4"]) == 2
    # In-process, Lightning's INFO lines (and its logging errors on pytest's closed streams) come too.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidyn:")]
    assert len(err) == 1 and err[0].startswith("vidyn: error: cannot resume"), err
    assert "model.args.hidden_channels: 6 -> 4" in err[0] and "do not fit last.ckpt" in err[0]
    assert {
        p.name: p.read_bytes() for p in [run / "config.yaml", run / "checkpoints" / "last.ckpt"]
    } == before
    assert not (run / "resumes.json").exists()


def test_resume_uses_the_runs_config_and_records_the_overrides(run: Path, capsys) -> None:
    # The README's command: -c names the shipped demo config, which resuming does not read.
    assert main(["train", "-c", "predict/demo", "--resume", str(run), "--set", "trainer.max_steps=8"]) == 0
    out = capsys.readouterr().out
    assert "-c predict/demo is not read on --resume" in out and f"resuming {run} from step 6" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 8 and saved["model"]["args"]["hidden_channels"] == 6
    assert _step(run) == 8
    (entry,) = json.loads((run / "resumes.json").read_text())
    assert entry["from_step"] == 6 and entry["overrides"] == ["trainer.max_steps=8"]


def test_nan_stops_with_step_and_term_keeps_the_last_good_checkpoint_and_resumes(run: Path, capsys) -> None:
    # A learning rate of 1e30 (applied to the restored optimiser) sends the weights to inf in one step.
    blowup = [
        "--set",
        "optim.lr=1e30",
        "--set",
        "trainer.gradient_clip_val=null",
        "--set",
        "trainer.max_steps=10",
    ]
    assert main(["train", "--resume", str(run), *blowup]) == 2
    # In-process, Lightning's INFO lines (and its logging errors on pytest's closed streams) come too.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vidyn:")]
    assert len(err) == 1 and err[0].startswith("vidyn: error: training stopped at step 8: non-finite"), err
    assert "train/loss is" in err[0] and f"kept {run / 'checkpoints' / 'last.ckpt'} (step 6)" in err[0]
    assert _step(run) == 6 and (run / "model.safetensors").is_file()
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    assert main(["train", "--resume", str(run), "--set", "optim.lr=0.003"]) == 0
    assert _step(run) == 10
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.003


def test_a_checkpoint_with_predrnns_three_gate_convolutions_is_refused_in_one_line(tmp_path: Path) -> None:
    """A checkpoint from before the ST-LSTM's gate convolutions were fused (conv_x / conv_h / conv_m) says
    so, instead of blaming an override; nothing else is read."""
    from vidyn.api.resume import ResumePlan, check_fits  # noqa: PLC0415
    from vidyn.registry import MODELS  # noqa: PLC0415

    model = MODELS.build("predrnn_tiny")
    old = {k: v for k, v in model.state_dict().items() if ".conv_xh." not in k and ".conv_xm." not in k}
    for i, cell in enumerate(model.cells):
        for name, w in zip(("conv_x", "conv_h", "conv_m"), cell.paper_weights(), strict=True):
            old[f"cells.{i}.{name}.weight"] = w.detach().clone()
    torch.save({"state_dict": old, "global_step": 4}, tmp_path / "last.ckpt")
    plan = ResumePlan(run_dir=tmp_path, checkpoint=tmp_path / "last.ckpt", cfg={}, saved=None, overrides=[])
    with pytest.raises(VidynError, match="three convolutions .*cells.0.conv_x.weight.*start a new run"):
        check_fits(plan, model)
    model.load_state_dict(old)  # the weights themselves load into the fused layout
