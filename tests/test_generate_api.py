"""`vidyn.api.generation.generate` and the generator evaluator (`EVALUATORS["generator"]`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidyn import api
from vidyn.api.generation import generate
from vidyn.api.models import io_spec
from vidyn.config import build_config
from vidyn.data.datamodule import build_dataset
from vidyn.data.video_io import read_video
from vidyn.errors import VidynError
from vidyn.evaluation.generation import (
    PROMPT_SAMPLES,
    _judge_with_frames,
    best_mean_worst,
    clip_scores,
    future_scores,
    nearest_real_ssim,
    shuffled_frames,
    still_frame,
    takes_initial_frames,
    temporal_ssim,
)
from vidyn.export import build_model, export_model

sys.path.insert(0, str(Path(__file__).resolve().parent / "tasks"))
from test_generation import CLASSES, generation_config  # noqa: E402

ROWS = {"temporal_ssim", "nearest_real_ssim", "frame_change", "spread", "num_clips", "num_reference"}


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gan") / "run"
    cfg = generation_config("ode_gan_tiny", "gan", {"num_frames": 4, "d_base_channels": 8}, num_classes=7)
    cfg["eval"]["max_clips"] = 8
    return out, api.train(cfg, run_dir=out).metrics


@pytest.fixture(scope="module")
def sde_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sde") / "run"
    cfg = generation_config("sde_video_tiny", "latent_sde", {"num_context": 2}, frames=6, num_classes=7)
    cfg["eval"]["max_clips"] = 8
    return out, api.train(cfg, run_dir=out).metrics


def _export(tmp_path: Path, name: str, cfg: dict, **args) -> Path:
    model = build_model(name, **args)
    folder = tmp_path / name
    conf = build_config(cfg)
    return export_model(model, folder, config=conf.to_dict(), extra=io_spec(conf, model))


# -- the evaluator's pieces, on numbers that can be checked by hand ---------------------------------------
def test_still_frame_and_identical_clips_score_one() -> None:
    clips = torch.rand(3, 5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(temporal_ssim(still_frame(clips)), torch.ones(3))
    assert torch.allclose(nearest_real_ssim(clips, clips), torch.ones(3))
    assert temporal_ssim(clips).max() < 0.2  # independent noise frames are unrelated
    shuffled = shuffled_frames(clips)
    assert torch.equal(shuffled.sort(dim=1).values, clips.sort(dim=1).values)  # the same frames, reordered


def test_spread_is_zero_for_identical_clips_and_the_per_pixel_std_otherwise() -> None:
    """A generator whose samples all look alike (collapse) has spread 0; two clips of 0 and 1 differ by a
    per-pixel std of 0.5 everywhere."""
    clip = torch.rand(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    assert clip_scores(clip.expand(6, -1, -1, -1, -1), clip)["spread"] == 0
    two = torch.cat([torch.zeros(1, 4, 1, 16, 16), torch.ones(1, 4, 1, 16, 16)])
    assert clip_scores(two, clip)["spread"] == pytest.approx(0.5)


def test_future_scores_of_perfect_samples_and_best_mean_worst() -> None:
    truth = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    s = future_scores(truth.expand(5, -1, -1, -1, -1).contiguous(), truth)
    assert torch.allclose(s["ssim"], torch.ones(5, 4)) and s["coverage"] == 1.0
    assert s["diversity_std"] == 0.0 and s["pairwise_ssim"] == pytest.approx(1.0)
    curves = best_mean_worst([torch.tensor([[1.0, 1.0], [0.0, 0.5]])])
    assert curves == {"best": [1.0, 1.0], "mean": [0.5, 0.75], "worst": [0.0, 0.5]}


def test_per_class_rows_set_each_prompts_spread_beside_its_real_clips() -> None:
    """`per_class` gives each class's samples' spread and `real_spread`, the same over the reference clips of
    that class (None with fewer than 2), and `vidyn evaluate` prints them under a heading with N."""
    from vidyn.cli_tables import format_per_class
    from vidyn.evaluation.generation import _per_class

    ref = torch.zeros(4, 4, 1, 16, 16)
    ref[2] = 1.0  # class 0: clips 0, 1 (zeros) and 2 (ones): per-pixel std sqrt(2) / 3
    labels, times = torch.tensor([0, 0, 0, 1]), torch.arange(4) * 0.1
    model = build_model("ode_gan_tiny", in_channels=1, num_classes=2)
    rows, _ = _per_class(model.eval(), times, ref, labels, ["bounce", "orbit"], 3)
    assert rows["bounce"]["real_spread"] == pytest.approx(2**0.5 / 3, abs=1e-6)
    assert rows["orbit"]["real_spread"] is None and rows["bounce"]["num_clips"] == 3
    table = format_per_class(rows)
    assert "per prompt (3 samples each" in table and f"{2**0.5 / 3:.4f}" in table and "orbit" in table


def test_only_frame_conditioned_generators_take_initial_frames() -> None:
    assert takes_initial_frames(build_model("sde_video_tiny"))
    assert not takes_initial_frames(build_model("ode_gan_tiny", in_channels=1))


def test_the_untrained_row_is_seeded_and_leaves_the_global_generators_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The `untrained` row's weights come from seed 0 inside a CPU-only fork of the RNG; `torch.manual_seed`
    there also reseeded every GPU's generator, for good (seen here through `torch.cuda.manual_seed_all`,
    which it calls even without a GPU)."""
    from vidyn.evaluation.generation import _untrained

    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    before = torch.get_rng_state()
    first, second = (_untrained({"name": "ode_gan_tiny"}, torch.device("cpu")) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), before) and seeded == []
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_gan_evaluation_has_the_documented_keys(gan_run: tuple[Path, dict]) -> None:
    _, metrics = gan_run
    rows = metrics["models"]
    assert set(rows) == {"ode_gan_tiny", "real_vs_real", "still_frame", "shuffled_frames", "untrained"}
    assert all(ROWS <= set(r) and r["num_clips"] == 4 and r["num_reference"] == 4 for r in rows.values())
    assert (
        rows["still_frame"]["temporal_ssim"] == pytest.approx(1.0)
        and rows["still_frame"]["frame_change"] == 0
    )
    assert set(metrics["per_class"]) == set(CLASSES) and "futures" not in metrics
    assert metrics["judge"]["value"] is None and "16 frames" in metrics["judge"]["reason"]  # 4-frame clips
    assert set(metrics["fd_judge"]) == set(rows) and metrics["fvd"]["value"] is None
    assert metrics["protocol"]["num_scored"] == 4 and metrics["protocol"]["num_frames"] == 4
    double = metrics["double_rate"]  # shapes renders any time: 7 frames 0.05 s apart over the same 0.3 s
    assert double["times"] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert double["models"]["generated"]["num_clips"] == 4 and "real_vs_real" in double["models"]


def test_sde_evaluation_scores_futures_beside_copy_last(sde_run: tuple[Path, dict]) -> None:
    run, metrics = sde_run
    fut = metrics["futures"]
    assert fut["num_clips"] == 4 and fut["num_samples"] == 20 and fut["num_context"] == 2
    for metric in ("ssim", "psnr"):  # the best sample is chosen per clip by its mean over the steps
        assert all(len(fut[f"{metric}_per_step"][k]) == 4 for k in ("best", "mean", "worst"))
        assert fut[metric]["best"] >= fut[metric]["mean"] >= fut[metric]["worst"]
    assert 0 <= fut["coverage_5_95"] <= 1 and fut["diversity_std"] >= 0
    assert len(fut["copy_last"]["ssim_per_step"]) == 4
    long = metrics["futures_context_4"]  # from 4 frames, where the law is visible: 2 frames left
    assert long["num_context"] == 4 and long["target_times"] == [0.4, 0.5]
    prompted = metrics["judge_with_frames"]  # first frames + law; the judge reads 16 frames, these have 6
    assert prompted["num_context"] == 2 and prompted["samples_per_clip"] == PROMPT_SAMPLES
    assert prompted["num_clips"] == 2 * fut["num_clips"]  # every evaluation clip, the reference half too
    assert prompted["value"] is None and "16 frames" in prompted["reason"]
    assert (run / "generated_vs_real.png").is_file()


class _Continuation(torch.nn.Module):
    """A stand-in generator whose samples from a clip's first frame are that clip itself."""

    def __init__(self, clips: torch.Tensor) -> None:
        super().__init__()
        self.clips, self.weight = clips, torch.nn.Parameter(torch.zeros(()))

    def sample(self, n, times, *, condition=None, generator=None):
        match = (self.clips[:, 0] == condition.frames[0, 0]).flatten(1).all(1)  # the clip starting so
        return self.clips[match][:1].expand(n, -1, -1, -1, -1)


def test_judge_with_frames_scores_samples_against_the_law_asked_with_each_first_frame() -> None:
    args = {
        "size": 32,
        "channels": 1,
        "num_frames": 16,
        "frame_interval": 0.1,
        "max_objects": 1,
        "textured": False,
    }
    data = build_dataset("shapes", "test", args | {"num_samples": 14})
    clips = torch.stack([data[i]["frames"] for i in range(14)])
    laws = torch.tensor([int(data[i]["label"]) for i in range(14)])
    times = data[0]["times"]
    model = _Continuation(clips)
    right = _judge_with_frames(model, clips, laws, times, 1, list(CLASSES))
    assert right["value"] == 1.0 and right["samples_per_clip"] == PROMPT_SAMPLES  # the real continuations
    wrong = _judge_with_frames(model, clips, (laws + 1) % 7, times, 1, list(CLASSES))
    assert wrong["value"] == 0.0


def test_predictors_given_with_a_generator_predict_the_same_futures(
    sde_run: tuple[Path, dict], tmp_path: Path
) -> None:
    run, metrics = sde_run
    plain = generation_config("sde_video_tiny", "latent_sde", {"num_context": 2}, frames=6)
    copy_last = _export(tmp_path, "copy_last", plain)
    out = api.evaluate(run, others=[copy_last])
    (scored,) = out["futures"]["predictors"].values()
    # the exported copy_last predictor and the evaluator's own copy_last row are separate code paths
    assert scored["ssim_per_step"] == pytest.approx(out["futures"]["copy_last"]["ssim_per_step"], abs=1e-6)
    assert scored["psnr"] == pytest.approx(out["futures"]["copy_last"]["psnr"], abs=1e-4)
    assert out["futures"]["ssim"] == pytest.approx(metrics["futures"]["ssim"], abs=1e-6)  # same samples
    gan = _export(tmp_path, "ode_gan_tiny", plain)
    with pytest.raises(VidynError, match="does not continue initial frames"):
        api.evaluate(gan, others=[copy_last])


# -- generate ---------------------------------------------------------------------------------------------
def test_generate_writes_videos_grid_and_json(gan_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, _ = gan_run
    rec = generate(run, num_samples=3, out=tmp_path / "g", prompt="orbit", frames=5, fps=20, seed=7)
    assert rec["label"] == 1 and rec["sample_times"] == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert len(rec["videos"]) == 3
    for name in rec["videos"]:
        assert read_video(tmp_path / "g" / name).frames.shape[0] == 5
    grid = Image.open(tmp_path / "g" / "grid.png")  # 16-pixel frames shown at 64, under time labels
    assert grid.size[0] == 5 * 64 and 3 * 64 < grid.size[1] < 3 * 64 + 40
    saved = json.loads((tmp_path / "g" / "generate.json").read_text())
    assert saved["request"] == {"num_samples": 3, "prompt": "orbit", "frames": 5, "fps": 20, "times": None,
                                "initial_frames": None, "seed": 7}  # fmt: skip
    again = generate(run, num_samples=3, out=tmp_path / "h", prompt="orbit", frames=5, fps=20, seed=7)
    assert again["videos"] == rec["videos"]


def test_generate_continues_initial_frames_from_an_image_folder(
    sde_run: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = sde_run
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):  # RGB 40x30 images: resized to 16x16 grayscale; the last num_context=2 are kept
        Image.fromarray(np.full((30, 40, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    rec = generate(run, num_samples=2, out=tmp_path / "s", initial_frames=folder, times=[0.1, 0.25])
    assert rec["initial_frame_count"] == 2 and rec["sample_times"] == [0.2, 0.35]
    assert rec["video_times"] == [0.0, 0.1, 0.2, 0.35]
    video = read_video(tmp_path / "s" / rec["videos"][0]).frames
    assert video.shape[0] == 4 and abs(int(video[0].mean()) - 60) <= 2  # the first kept frame (60)


def test_generate_errors_are_one_line(gan_run: tuple[Path, dict], tmp_path: Path) -> None:
    run, _ = gan_run
    cases = [
        (dict(model_path=run, prompt="dance"), "unknown prompt 'dance'; model 'ode_gan_tiny' knows: bounce"),
        (dict(model_path=run, initial_frames=tmp_path), "drop --initial-frames"),
        (dict(model_path=run, frames=4, times=[0.0]), "not both"),
    ]
    plain = generation_config("ode_gan_tiny", "gan", {})
    cases.append((dict(model_path=_export(tmp_path, "ode_gan_tiny", plain, in_channels=1), prompt="orbit"),
                  "takes no class prompt"))  # fmt: skip
    cases.append(
        (dict(model_path=_export(tmp_path, "convlstm_tiny", plain, in_channels=1)), "not a generator")
    )
    for kwargs, message in cases:
        with pytest.raises(VidynError, match=message) as err:
            generate(
                num_samples=1,
                out=tmp_path / "x",
                **{"frames": 3, **kwargs} if "times" not in kwargs else kwargs,
            )
        assert "\n" not in str(err.value)
