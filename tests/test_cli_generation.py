"""`vidyn weights`, `vidyn score` and `vidyn generate` from the command line (the metrics and the
generators themselves are tested under tests/metrics and tests/models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _vidyn(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIDYN_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "vidyn", *args], capture_output=True, text=True, env=env)


def test_list_shows_each_file_missing_in_an_empty_cache(tmp_path: Path) -> None:
    proc = _vidyn("weights", "list", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert [r.split()[:2] for r in rows] == [["missing", "fid"], ["missing", "fvd"], ["missing", "lpips"]]
    assert all(str(tmp_path) in r for r in rows)


def test_install_refuses_an_unknown_group_without_touching_the_cache(tmp_path: Path) -> None:
    proc = _vidyn("weights", "install", "fdi", home=tmp_path / "cache")
    assert proc.returncode == 2 and "invalid choice: 'fdi'" in proc.stderr
    assert not (tmp_path / "cache").exists()


def _clips(folder: Path, seed: int) -> Path:
    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(4):
        np.save(folder / f"clip{k}.npy", (rng.random((16, 32, 32, 1)) * 255).astype(np.uint8))
    return folder


def test_score_names_the_install_command_when_the_cache_is_empty(tmp_path: Path) -> None:
    real = _clips(tmp_path / "real", 0)
    proc = _vidyn("score", str(real), str(real), "--metrics", "fvd", home=tmp_path / "empty")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidyn: error:") and "vidyn weights install fvd" in err[0]


def test_score_of_a_set_against_itself_is_zero(tmp_path: Path) -> None:
    real = _clips(tmp_path / "real", 0)
    out = tmp_path / "s.json"
    proc = _vidyn(
        "score", str(real), str(real), "--metrics", "fd_judge,psnr", "--json", str(out), home=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    import json

    result = json.loads(out.read_text())
    assert abs(result["metrics"]["fd_judge"]["value"]) < 1e-3
    assert result["metrics"]["fd_judge"]["protocol"]  # never a bare number
    assert "fd_judge" in proc.stdout


def test_generate_from_the_command_line_and_its_one_line_errors(tmp_path: Path) -> None:
    import vidyn

    gen = tmp_path / "gen"
    vidyn.export_model(vidyn.build_model("ode_gan_tiny"), gen)
    out = tmp_path / "samples"
    args = ["--num-samples", "2", "--frames", "4", "--fps", "10", "--out", str(out)]
    proc = _vidyn("generate", str(gen), *args, home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert (out / "grid.png").is_file() and (out / "generate.json").is_file()
    assert len(list(out.glob("*.mp4")) + list(out.glob("*.gif"))) == 2
    bad = _vidyn("generate", str(gen), "--prompt", "bounce", "--out", str(tmp_path / "x"), home=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    predictor = tmp_path / "pred"
    vidyn.export_model(vidyn.build_model("convlstm_tiny"), predictor)
    wrong = _vidyn("generate", str(predictor), "--out", str(tmp_path / "y"), home=tmp_path)
    assert (
        wrong.returncode == 2 and "generator" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    )
