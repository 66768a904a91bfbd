"""What vidyn's long commands print into a file or a pipe: plain progress lines (no escape codes), why a
run stopped and where its results are, none of the profiler's native chatter, and vidyn's own warnings
on one line, still real warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from test_compare import tiny_compare_config
from tiny_configs import tiny_prediction_config

from vidyn import api
from vidyn.cli import main
from vidyn.config import TrainerConfig
from vidyn.console import cap_loader_workers, show_vidyn_warnings_on_one_line
from vidyn.errors import VidynWarning
from vidyn.tasks.engine import build_trainer

FP16_WARNING = "trainer.precision=16-mixed needs a CUDA GPU; training in 32-true on this machine"
PROFILER_NOISE = ("USDT:", "SyncActivityProfilerHandler", "CPUAllocator", "Memory block of unknown size")


def _vidyn(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`vidyn ARGS` in a fresh process with stdout and stderr into pipes, as in `vidyn ... > log 2>&1`."""
    return subprocess.run(
        [sys.executable, "-m", "vidyn", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "TERM": "xterm-256color"},  # a terminal type, but not a terminal
    )


def _clean(text: str) -> None:
    """No escape codes, carriage returns or progress-bar redraws."""
    assert "\x1b" not in text and "\r" not in text, text
    assert not re.search(r"\d+%\|", text), text  # tqdm's "33%|███" bar


def test_train_into_a_pipe_prints_plain_progress_why_it_stopped_and_where(tmp_path: Path) -> None:
    cfg = tiny_prediction_config()
    cfg["trainer"].update(max_steps=4, progress_bar=True, precision="16-mixed")  # bar asked for, fp16 on CPU
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    proc = _vidyn(tmp_path, "train", "-c", "tiny.yaml", "--out", "run")
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, out + err
    _clean(out + err)
    lines = out.splitlines()
    assert any(line.startswith("train step 1/4  train/loss ") for line in lines), out
    assert any(line.startswith("validated at step 2/4 ") and "val/loss" in line for line in lines), out
    assert any(line.startswith("finished at step 4/4 ") for line in lines), out
    assert "stopped because it reached trainer.max_steps=4 (step 4)" in lines, out
    assert "trained in" in lines[-1] and lines[-1].endswith("(exported model, metrics, logs): run"), out
    assert (tmp_path / "run" / "model.json").is_file()
    assert "`Trainer.fit` stopped" not in err and "limit_val_batches" not in err, err  # ours replaces them
    # The warning still shows, as one line: no file:line, no category name, no source line under it.
    warning_lines = [line for line in err.splitlines() if "16-mixed" in line]
    assert warning_lines == [f"vidyn: warning: {FP16_WARNING}"], err
    assert "build_trainer(" not in err and "UserWarning" not in err, err


def test_early_stopping_and_the_time_budget_say_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_prediction_config()
    # lr 0: the weights never change, so val/loss repeats exactly and patience 1 ends the run at the
    # second validation.
    cfg["optim"]["lr"] = 0.0
    cfg["trainer"].update(max_steps=40, val_check_interval=1, early_stopping_patience=1)
    (tmp_path / "es.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(tmp_path / "es.yaml"), "--out", str(tmp_path / "es")]) == 0
    out = capsys.readouterr().out
    line = "stopped because early stopping at step 2: val/loss did not improve for 1 validation(s) (best "
    assert line in out and "trainer.early_stopping_patience=1)" in out, out
    assert f"run folder (exported model, metrics, logs): {tmp_path / 'es'}" in out

    cfg["optim"]["lr"] = 0.003
    cfg["trainer"].update(max_time=1e-3, early_stopping_patience=0)
    res = api.train(cfg, run_dir=tmp_path / "budget", evaluate_after=False)
    assert res.stop_reason == "the time budget trainer.max_time=0.001 s ran out at step 1"


def test_compare_into_a_pipe_has_no_profiler_lines(tmp_path: Path) -> None:
    cfg = tiny_compare_config(models=("convlstm_tiny",), steps=3)
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(cfg))
    proc = _vidyn(tmp_path, "compare", "-c", "compare.yaml", "--out", "out", "--set", "eval.max_clips=4")
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, out + err
    _clean(out + err)
    for noise in PROFILER_NOISE:
        assert noise not in out + err, err
    assert "compare: training convlstm_tiny (1 of 1) in out/runs/convlstm_tiny" in out
    assert "convlstm_tiny: stopped because it reached trainer.max_steps=3 (step 3)" in out, out
    assert "report: out/report.html  (numbers: out/report.json)" in out
    assert (tmp_path / "out" / "report.html").is_file()


PEAK_SCRIPT = """
import os, torch
from vidyn.models.profile import peak_memory_mb
held = [torch.ones(4096)]

def step():
    held.clear()  # frees a block allocated before profiling: c10 warns about it, once per process
    os.write(2, b"a line of the user's own\\n")
    return torch.ones(1024) * 2

peak_memory_mb(step)
print("done")
"""


def test_peak_memory_keeps_other_stderr_lines_and_drops_the_profilers() -> None:
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    assert proc.stderr == "a line of the user's own\n", proc.stderr


def test_vidyn_warnings_print_on_one_line_and_stay_filterable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    show_vidyn_warnings_on_one_line()
    show_vidyn_warnings_on_one_line()  # idempotent: not wrapped twice
    mine = warnings.formatwarning("fell back to fp32", VidynWarning, "/src/x.py", 7, "warn(...)")
    assert mine == "vidyn: warning: fell back to fp32\n"
    theirs = warnings.formatwarning("deprecated", FutureWarning, "/lib/y.py", 9, "old()")
    assert "/lib/y.py:9: FutureWarning: deprecated" in theirs  # other libraries' keep Python's format
    trainer_cfg = TrainerConfig(precision="16-mixed", progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_trainer(trainer_cfg, tmp_path)
    assert [str(w.message) for w in caught if w.category is VidynWarning] == [FP16_WARNING]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=VidynWarning)  # a user's filter still works
        build_trainer(trainer_cfg, tmp_path)
    assert not [w for w in caught if issubclass(w.category, VidynWarning)]


def test_loader_workers_are_capped_at_the_cpus_and_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cap_loader_workers(1) == (1, None)
    workers, note = cap_loader_workers(4)
    assert workers == 1 and note is not None and "data.num_workers=4 capped at 1" in note
    cfg = tiny_prediction_config()
    cfg["data"]["num_workers"] = 4
    cfg["trainer"]["max_steps"] = 2
    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.train(cfg, run_dir=tmp_path / "run", evaluate_after=False, echo=said.append)
    assert [s for s in said if "num_workers" in s] == [note]
    # PyTorch's loaders compare their worker count with the same CPU count: nothing to warn about.
    assert not [w for w in caught if "number of worker" in str(w.message)], [str(w.message) for w in caught]
