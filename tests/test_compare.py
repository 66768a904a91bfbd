"""`vidyn compare` end to end on tiny models: the report.json contract, the HTML report, the CLI, errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_configs import tiny_prediction_config

from vidyn import api
from vidyn.cli import main
from vidyn.config import build_config
from vidyn.errors import VidynError

LEARNED = ("convlstm_tiny", "predrnn_tiny", "predrnn_v2_tiny", "transformer_tiny")
CONTRACT = {
    "ssim", "psnr", "mse", "mae", "lpips", "params", "flops_per_clip", "train_step_s", "infer_clip_s",
    "peak_mem_mb", "per_step",
}  # fmt: skip


BASELINES = ("copy_last", "linear", "context_median")  # the default eval.baselines


def tiny_compare_config(models: tuple[str, ...] = LEARNED, steps: int = 3) -> dict[str, Any]:
    cfg = tiny_prediction_config()
    cfg["trainer"]["val_check_interval"] = 2
    cfg["compare"] = {
        "models": [{"name": n} for n in models],
        "budget_steps": steps,
        "budget_seconds": 60,
        "profile_batch": 2,
        "profile_repeats": 1,
    }
    return cfg


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("compare")
    cfg = tiny_compare_config()
    cfg["compare"]["models"][0]["optim"] = {"lr": 0.01}  # a per-model override
    path = tmp / "tiny_compare.yaml"
    path.write_text("# vidyn compare -c tiny_compare.yaml --out out\n" + yaml.safe_dump(cfg))
    out = tmp / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["compare", "-c", str(path), "--out", str(out), "--set", "eval.max_clips=5"]) == 0
    return out, buf.getvalue()


def test_report_json_holds_exactly_the_contract_for_every_model(compared: tuple[Path, str]) -> None:
    out, _ = compared
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"models", "protocol"}
    assert list(report["models"]) == [*BASELINES, *LEARNED]
    for name, res in report["models"].items():
        assert set(res) == CONTRACT, name
        assert 0 <= res["ssim"] <= 1 and res["psnr"] > 0 and res["mse"] >= 0 and res["mae"] >= 0
        assert res["lpips"] is None  # 16x16 frames: too small for LPIPS, null with the reason
        assert set(res["per_step"]) == {"ssim", "psnr", "mse", "mae"}
        assert all(len(v) == 4 for v in res["per_step"].values())
        # The overall value is the mean of the per-step values (every step sees every clip).
        assert res["ssim"] == pytest.approx(sum(res["per_step"]["ssim"]) / 4, rel=1e-9)
        assert res["infer_clip_s"] > 0 and res["peak_mem_mb"] >= 0
    for name in BASELINES:
        base = report["models"][name]
        assert base["params"] == 0 and base["flops_per_clip"] == 0 and base["train_step_s"] is None
    for name in LEARNED:
        res = report["models"][name]
        assert res["params"] > 0 and res["flops_per_clip"] > 0 and res["train_step_s"] > 0
        # Weights (float32) are part of the peak, so it is at least the parameter bytes.
        assert res["peak_mem_mb"] >= res["params"] * 4 / 2**20
    protocol = report["protocol"]
    assert protocol["clips"] == 5 and protocol["num_context"] == 4 and protocol["num_future"] == 4
    assert protocol["budget_steps"] == 3 and protocol["budget_seconds"] == 60
    assert protocol["profile_batch"] == 2 and protocol["threads"] >= 1
    assert protocol["lpips"].startswith("null:") and "minimum" in protocol["lpips"]
    assert set(protocol["trained"]) == set(LEARNED)
    assert all(t["steps"] == 3 for t in protocol["trained"].values())


def test_each_learned_model_has_its_own_run_folder_with_the_shared_budget(compared: tuple[Path, str]) -> None:
    out, _ = compared
    for name in LEARNED:
        run = out / "runs" / name
        assert (run / "model.safetensors").is_file() and (run / "model.json").is_file()
        assert not (run / "metrics.json").exists()  # evaluate_after=False: scored only in the comparison
        cfg = build_config(run / "config.yaml")
        assert cfg.model.name == name and cfg.trainer.max_steps == 3 and cfg.trainer.max_time == 60
        assert cfg.optim.lr == (0.01 if name == "convlstm_tiny" else 0.003)


def test_html_report_references_existing_figures_and_lists_every_model(compared: tuple[Path, str]) -> None:
    out, _ = compared
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == ["per_step.png", "samples.gif"]
    for src in sources:
        assert (out / src).stat().st_size > 0
    assert (out / "samples.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert (out / "per_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in (*BASELINES, *LEARNED):
        assert f"<td>{name}</td>" in page
    assert "AlexNet LPIPS" in page


def test_cli_prints_the_table_and_the_report_path(compared: tuple[Path, str]) -> None:
    out, printed = compared
    header = next(line for line in printed.splitlines() if line.startswith("model"))
    for column in ("SSIM", "PSNR (dB)", "params", "FLOPs/clip", "train step", "latency/clip", "peak mem"):
        assert column in header
    rows = {line.split()[0]: line for line in printed.splitlines() if line and line.split()[0] in LEARNED}
    assert set(rows) == set(LEARNED)
    assert str(out / "report.html") in printed


def test_html_writer_embeds_images_when_asked(tmp_path: Path, compared: tuple[Path, str]) -> None:
    from vidyn.report.html import Column, write_html_report

    out, _ = compared
    page = write_html_report(
        tmp_path / "r.html",
        title="t <&>",
        columns=[Column("ssim", "SSIM", "metric", "max"), Column("params", "params", "count")],
        rows={"a": {"ssim": 0.5, "params": 1_500_000}, "b": {"ssim": 0.7, "params": None}},
        figures=[("curves", out / "per_step.png")],
        embed=True,
    ).read_text()
    assert 'src="data:image/png;base64,' in page and "t &lt;&amp;&gt;" in page
    assert '<td class="best">0.7000</td>' in page and "1.50 M" in page and "<td>-</td>" in page
    with pytest.raises(FileNotFoundError):
        write_html_report(
            tmp_path / "x.html", title="x", columns=[], rows={}, figures=[("m", tmp_path / "no.png")]
        )


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([], "compare.models is empty"),
        ([{"name": "convlstm_tiny", "lr": 0.1}], "unknown key(s) lr"),
        ([{"name": "copy_last"}], "not a learned frame predictor"),
        ([{"name": "convlstm_tiny"}, {"name": "convlstm_tiny"}], "used twice"),
        ([{"name": "convlstm_tiny", "args": {"hidden": 3}}], "has no argument(s) hidden"),
        (
            [{"name": "convlstm_tiny", "optim": {"learning_rate": 1}}],
            "unknown config key 'optim.learning_rate'",
        ),
    ],
)
def test_bad_compare_configs_fail_before_training(tmp_path: Path, models: list, message: str) -> None:
    cfg = tiny_compare_config()
    cfg["compare"]["models"] = models
    with pytest.raises(VidynError, match=re.escape(message)):
        api.compare(cfg, out=tmp_path / "out")
    assert not (tmp_path / "out" / "runs" / "convlstm_tiny" / "model.json").exists()


def test_shipped_compare_configs_parse_and_name_their_command() -> None:
    from vidyn.config import shipped_config_path

    for name in ("compare/shapes_quick", "compare/seed003_shapes"):
        text = shipped_config_path(name).read_text()
        assert text.startswith(f"# vidyn compare -c {name} --out ")
        cfg = build_config(name)
        assert cfg.compare.models and cfg.compare.budget_steps and cfg.compare.budget_seconds
        assert set(BASELINES) <= set(cfg.eval.baselines)
        names = [m["name"] for m in cfg.compare.models]
        assert {"convlstm", "predrnn", "transformer"} <= set(names)


def test_the_profiled_task_is_on_the_profiling_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task whose training step is timed sits on the profiling device, not only its model: a task left
    at "cpu" copied every value it logged during a GPU step back to the host. The meta device stands in
    for the GPU (the timers, which would run the model, are stubbed)."""
    import torch

    from vidyn.api import comparison
    from vidyn.export import build_model

    made = []
    build = comparison.task_for
    monkeypatch.setattr(comparison, "task_for", lambda *a, **k: made.append(build(*a, **k)) or made[-1])
    for timer in ("flops_per_clip", "time_inference", "peak_memory_mb", "time_train_step"):
        monkeypatch.setattr(comparison, timer, lambda *a, **k: 0.0)
    run_cfg = build_config(tiny_prediction_config())
    batch = {"frames": torch.rand(2, 8, 1, 16, 16), "times": torch.arange(8.0).expand(2, -1) / 10}
    model = build_model("convlstm_tiny", in_channels=1, image_size=16)
    split = {"num_context": 4, "num_future": 4, "mode": "extrapolate"}
    comparison._profile_predictor(model, split, run_cfg, batch, 1, torch.device("meta"))
    assert len(made) == 1 and made[0].device == torch.device("meta")


def test_a_rerun_reuses_finished_models_and_retrains_interrupted_ones(compared: tuple[Path, str]) -> None:
    # Last in this file: it reruns the shared comparison in place.
    out, _ = compared
    weights = {name: (out / "runs" / name / "model.safetensors").stat().st_mtime_ns for name in LEARNED}
    (out / "runs" / "predrnn_tiny" / "compare_trained.json").unlink()  # as if killed before it finished
    buf = io.StringIO()
    args = [
        "compare",
        "-c",
        str(out.parent / "tiny_compare.yaml"),
        "--out",
        str(out),
        "--set",
        "eval.max_clips=5",
    ]
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    reused = {name for name in LEARNED if f"{name}: already trained in" in buf.getvalue()}
    assert reused == set(LEARNED) - {"predrnn_tiny"}
    trained = json.loads((out / "report.json").read_text())["protocol"]["trained"]
    for name in LEARNED:
        changed = (out / "runs" / name / "model.safetensors").stat().st_mtime_ns != weights[name]
        assert changed == (name == "predrnn_tiny") and trained[name].get("reused", False) == (name in reused)
        assert trained[name]["steps"] == 3
