"""kill -9 and SIGTERM at chosen moments of a real `vidyn train`, then `--resume`: the final weights and
metrics are bit-identical to a run that was never interrupted, and no checkpoint is ever half-written.

The runs are tiny (16 training clips in batches of 4, so 4 steps an epoch; 10 steps; validation every 3
steps; last.ckpt every 2 steps) and deterministic on CPU: one torch thread, seeded data order that
resumes mid-epoch, random states in the checkpoint (docs/faults.md says what is needed).
The moments come from the test hook `vidyn.tasks.faults` (VIDYN_TEST_FAULT): the process stops there and
writes a marker file; the test waits for the marker and kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_configs import tiny_prediction_config

from vidyn.cli import main

TIMEOUT = 120  # seconds any one process may take (they take a few)


def _config(tmp: Path) -> Path:
    cfg = tiny_prediction_config()
    cfg["trainer"].update(
        max_steps=10, val_check_interval=3, checkpoint_every_n_steps=2, num_threads=1, deterministic=True
    )
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (in this process: the same code and settings as the subprocesses)."""
    tmp = tmp_path_factory.mktemp("reference")
    assert main(["train", "-c", str(_config(tmp)), "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def _last_step(run: Path) -> int:
    return int(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])


def _kill_at(fault: str, args: list[str], tmp: Path) -> None:
    """Start `vidyn train ARGS`, wait until it reaches `fault`, kill -9 it."""
    marker = tmp / f"reached-{fault.replace('@', '-')}"
    env = os.environ | {"VIDYN_TEST_FAULT": fault, "VIDYN_TEST_FAULT_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "vidyn", "train", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            assert proc.poll() is None, f"exited before {fault}: {proc.communicate()[0][-3000:]}"
            assert time.monotonic() < deadline, f"{fault} not reached in {TIMEOUT} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def _same_result(run: Path, reference: Path) -> None:
    ours = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    theirs = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == 10
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key  # bit for bit
    exported, expected = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in expected.items())
    assert _scores(run) == _scores(reference)


def _scores(run: Path) -> dict:
    """metrics.json's scores, without the timings (`*_s`, seconds), which no two runs share."""
    models = json.loads((run / "metrics.json").read_text())["models"]
    return {m: {k: v for k, v in res.items() if not k.endswith("_s")} for m, res in models.items()}


def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_weights(reference: Path, tmp_path: Path) -> None:
    cfg, run = _config(tmp_path), tmp_path / "run"
    # 1. During the write of the epoch-end checkpoint of step 4: half a file under a temporary name; the
    #    validation checkpoint of step 3 is still last.ckpt, whole.
    _kill_at("checkpoint@4", ["-c", str(cfg), "--out", str(run)], tmp_path)
    assert _last_step(run) == 3
    assert list((run / "checkpoints").glob(".last.ckpt.*.tmp*")), "the killed write left its temporary"
    # 2. Inside step 7 (after the backward pass, before the optimiser step): back to step 6's validation.
    _kill_at("step@6", ["--resume", str(run)], tmp_path)
    assert _last_step(run) == 6
    assert not list((run / "checkpoints").glob(".*.tmp*")), "resume cleans up half-written temporaries"
    # 3. During the validation after step 9: back to the end of epoch 2 (step 8), mid-way in the data.
    _kill_at("validation@9", ["--resume", str(run)], tmp_path)
    assert _last_step(run) == 8
    proc = subprocess.run(
        [sys.executable, "-m", "vidyn", "train", "--resume", str(run)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_result(run, reference)
    resumes = json.loads((run / "resumes.json").read_text())
    assert [r["from_step"] for r in resumes] == [3, 6, 8]


def test_sigterm_saves_exits_nonzero_says_how_to_resume(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cfg, run = _config(tmp_path), tmp_path / "run"
    monkeypatch.setenv("VIDYN_TEST_FAULT", "step@4:sigterm")  # SIGTERM to this process inside step 5
    assert main(["train", "-c", str(cfg), "--out", str(run)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"vidyn: stopped by SIGTERM at step 5; state saved in {run / 'checkpoints' / 'last.ckpt'}; "
        f"resume with: vidyn train --resume {run}"
    )
    assert _last_step(run) == 5 and (run / "model.safetensors").is_file()  # the best so far, exported
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.delenv("VIDYN_TEST_FAULT")
    assert main(["train", "--resume", str(run)]) == 0
    _same_result(run, reference)
