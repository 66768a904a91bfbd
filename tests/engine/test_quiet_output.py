"""`vidyn train` shows the user what is about their run, not Lightning's advertisements or its own
deprecations."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import yaml
from tiny_configs import tiny_prediction_config

from vidyn.config import TrainerConfig
from vidyn.tasks.engine import build_trainer

LITLOGGER_TIP = "litlogger"
LEAFSPEC_WARNING = "isinstance(treespec, LeafSpec)"


def test_train_prints_no_lightning_tip_or_pytree_deprecation(tmp_path: Path) -> None:
    cfg = tiny_prediction_config()
    cfg["trainer"].update(max_steps=2, precision="16-mixed")  # on a CPU: our fp32 fallback warning
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # A fresh process with Python's default warning filters and Lightning's console logging, as a user
    # sees it (pytest's own capture would rearrange both).
    proc = subprocess.run(
        [sys.executable, "-m", "vidyn", "train", "-c", str(path), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "trained in" in proc.stdout
    assert LITLOGGER_TIP not in output
    assert LEAFSPEC_WARNING not in output
    # Every other warning stays visible: ours about running fp16 training in fp32 on a CPU.
    assert "trainer.precision=16-mixed needs a CUDA GPU" in proc.stderr


def test_the_pytree_filter_is_scoped_to_lightning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_trainer(TrainerConfig(progress_bar=False), tmp_path)
        # The same text raised from anywhere but Lightning's _pytree module is still shown.
        warnings.warn(f"`{LEAFSPEC_WARNING}` is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught if LEAFSPEC_WARNING in str(w.message)]
