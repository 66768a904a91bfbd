"""`vidyn.api.scoring.score`: inputs, protocols, the self-score, missing weights and the baseline ordering."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from vidyn.api.baselines import shapes_baseline_sets, write_baseline_folders, write_clip_folder
from vidyn.api.scoring import format_score_table, score
from vidyn.errors import VidynError


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """140 clips per set (20 per law): real A, real B, still (B's first frames), shuffled (B's frames)."""
    return write_baseline_folders(tmp_path_factory.mktemp("baselines"), num=140)


def _quiet_score(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small N: below-the-feature-dimension warnings
        return score(*args, progress=False, **kwargs)


def test_a_folder_against_itself_scores_zero_with_protocols_and_json(baselines, tmp_path):
    out = tmp_path / "score.json"
    metrics = ("fd_judge", "motion_law", "ssim", "psnr")
    result = _quiet_score(baselines["real_b"], baselines["real_b"], metrics=metrics, json_path=out)
    m = result["metrics"]
    assert list(m) == list(metrics) and len(result["protocol_lines"]) == 4
    # Zero up to float64 rounding of the covariance square root: 1.5e-8 on an AVX2-only CPU, below 1e-8
    # with AVX-512 (real-vs-real of two different folders is ~0.5).
    assert abs(m["fd_judge"]["value"]) < 1e-6 and m["motion_law"]["value"] == 0.0
    assert m["ssim"]["value"] == pytest.approx(1.0) and m["psnr"]["value"] == pytest.approx(100.0)
    assert m["fd_judge"]["protocol"]["n_real"] == m["fd_judge"]["protocol"]["n_fake"] == 140
    assert "real split: folder" in m["fd_judge"]["protocol_line"]
    assert m["motion_law"]["accuracy"] >= 0.95  # the folders name the law of every clip
    assert json.loads(out.read_text())["metrics"]["fd_judge"]["protocol"]["metric"] == "fd_judge"
    assert "fd_judge" in format_score_table(result)


def test_fd_judge_orders_real_below_shuffled_and_still(baselines):
    values, accuracy = {}, {}
    for name in ("real_b", "shuffled", "still"):
        result = _quiet_score(baselines["real_a"], baselines[name], metrics=("fd_judge", "motion_law"))
        values[name] = result["metrics"]["fd_judge"]["value"]
        accuracy[name] = result["metrics"]["motion_law"]["accuracy"]
    assert values["real_b"] < values["shuffled"] and values["real_b"] < values["still"]
    assert accuracy["real_b"] > max(accuracy["shuffled"], accuracy["still"])


def test_tensor_files_folders_and_num(tmp_path):
    sets = shapes_baseline_sets(16, size=24, channels=3)
    clips = sets["real_a"]
    uint8 = clips.mul(255).round().to(torch.uint8)
    torch.save(uint8.permute(0, 1, 3, 4, 2).clone(), tmp_path / "batch.pt")  # (N, T, H, W, C) uint8
    np.save(tmp_path / "batch.npy", (uint8.float() / 255).numpy())  # (N, T, C, H, W) float
    write_clip_folder(clips, tmp_path / "folder")
    for other in ("batch.npy", "folder"):
        r = _quiet_score(tmp_path / "batch.pt", tmp_path / other, metrics="fd_judge,psnr", num=10)
        assert abs(r["metrics"]["fd_judge"]["value"]) < 1e-4  # uint8 / 255 rounded in two places
        assert r["metrics"]["psnr"]["value"] == pytest.approx(100.0)
        assert r["metrics"]["fd_judge"]["protocol"]["n_fake"] == 10


def test_errors_are_one_line(tmp_path, baselines):
    write_clip_folder(torch.rand(2, 16, 1, 16, 16), tmp_path / "small")
    with pytest.raises(VidynError, match="need equal"):
        _quiet_score(baselines["real_a"], tmp_path / "small", metrics=("ssim",))
    with pytest.raises(VidynError, match="unknown metric"):
        score(tmp_path / "small", tmp_path / "small", metrics=("fvd", "is"))
    with pytest.raises(VidynError, match="does not exist"):
        score(tmp_path / "missing", tmp_path / "small", metrics=("fd_judge",))
    write_clip_folder(torch.rand(1, 8, 1, 16, 16), tmp_path / "mixed")
    write_clip_folder(torch.rand(2, 16, 1, 16, 16), tmp_path / "mixed" / "more")
    with pytest.raises(VidynError, match="differ in shape"):
        score(tmp_path / "mixed", tmp_path / "small", metrics=("fd_judge",), progress=False)


@pytest.mark.parametrize("metric, group", [("fvd", "fvd"), ("fid", "fid"), ("kid", "fid")])
def test_missing_weights_name_the_install_command(tmp_path, monkeypatch, metric, group):
    monkeypatch.setenv("VIDYN_HOME", str(tmp_path / "empty"))
    write_clip_folder(torch.rand(2, 16, 1, 16, 16), tmp_path / "clips")
    with pytest.raises(VidynError, match=f"vidyn weights install {group}") as err:
        score(tmp_path / "clips", tmp_path / "clips", metrics=(metric,))
    assert "\n" not in str(err.value)


def test_fvd_fid_kid_of_a_folder_against_itself_are_zero(tmp_path):
    """The real networks (installed by `vidyn weights install all`, as CI does); N tiny to stay fast."""
    clips = torch.rand(3, 16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    write_clip_folder(clips, tmp_path / "c")
    r = _quiet_score(tmp_path / "c", tmp_path / "c", metrics=("fvd", "fid", "kid"), fid_frames_per_clip=2)
    m = r["metrics"]
    # Float64 rounding on the ~400 / ~2,040 null directions of rank-2 / rank-5 covariances (measured 3e-4
    # and 5e-5); FVD and FID between different shapes sets are in the tens to thousands.
    assert abs(m["fvd"]["value"]) < 1e-2 and abs(m["fid"]["value"]) < 1e-2
    assert m["fvd"]["protocol"]["n_real"] == 3 and m["fid"]["protocol"]["n_real"] == 6
    # KID's unbiased estimate is not 0 for a set against itself (random subsets); only its protocol here.
    assert m["kid"]["protocol"]["subset_size"] == 6 and m["kid"]["std"] >= 0


def test_a_prepared_store_and_its_splits(tmp_path):
    from vidyn.data.prepare import prepare_store

    sets = shapes_baseline_sets(14, channels=3)
    for i, clip in enumerate(sets["real_a"]):
        path = tmp_path / "clips" / f"law{i % 2}" / f"{i}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(clip, path)
    kw = {"size": 32, "frames": 16, "stride": 1, "progress": False, "workers": 0, "test_fraction": 0.5}
    prepare_store("folder", tmp_path / "clips", tmp_path / "store", **kw)
    r = _quiet_score(tmp_path / "store", f"{tmp_path / 'store'}:test", metrics=("fd_judge", "ssim"))
    # ~7 clips: float64 rounding on the null directions of a rank-deficient covariance (measured 6e-6)
    assert abs(r["metrics"]["fd_judge"]["value"]) < 1e-4 and r["metrics"]["ssim"]["value"] == pytest.approx(1)
    assert r["real"].startswith(f"store {tmp_path / 'store'} split test")
    train = _quiet_score(tmp_path / "store", f"{tmp_path / 'store'}:train", metrics=("fd_judge",))
    assert train["fake"].startswith(f"store {tmp_path / 'store'} split train")
