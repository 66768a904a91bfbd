from pathlib import Path

import pytest

from vidyn.config import build_config, list_shipped_configs, parse_override, save_config
from vidyn.errors import VidynError


def test_defaults_yaml_and_overrides_in_order(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("name: x\ntrainer: {max_steps: 50}\nmodel: {name: convlstm, args: {hidden_channels: 8}}\n")
    cfg = build_config(f, ["trainer.max_steps=7", "model.args.num_layers=3", "optim.lr=1e-2"])
    assert cfg.name == "x"
    assert cfg.trainer.max_steps == 7  # --set beats YAML
    assert cfg.model.args == {"hidden_channels": 8, "num_layers": 3}
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.trainer.seed == 0  # untouched default


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(VidynError, match="unknown config key 'trainer.max_stepz'.*max_steps"):
        build_config({}, ["trainer.max_stepz=3"])
    with pytest.raises(VidynError, match="unknown config key 'modle'"):
        build_config({"modle": {}})


def test_type_errors_are_user_errors() -> None:
    with pytest.raises(VidynError, match="must be an integer"):
        build_config({}, ["trainer.max_steps=abc"])
    with pytest.raises(VidynError, match="must be a number"):
        build_config({}, ["optim.lr=fast"])
    with pytest.raises(VidynError, match="key.sub=value"):
        parse_override("trainer.max_steps")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(VidynError, match="not found"):
        build_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(VidynError, match="not valid YAML"):
        build_config(bad)


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = build_config({"name": "r", "data": {"splits": {"train": {"num_samples": 5}}}})
    save_config(cfg, tmp_path / "config.yaml")
    again = build_config(tmp_path / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("name", list_shipped_configs())
def test_shipped_configs_parse_and_open_with_their_command(name: str) -> None:
    from vidyn.config import shipped_config_path

    cfg = build_config(name)
    assert cfg.model.name
    first = shipped_config_path(name).read_text().splitlines()[0]
    assert first.startswith("# vidyn "), f"{name} must open with the command that runs it"


def test_optional_integers_refuse_words() -> None:
    # `int | None` fields used to accept any value: the union was not checked as its int part.
    for key in ("trainer.max_epochs", "data.eval_batch_size", "eval.max_clips", "compare.budget_steps"):
        with pytest.raises(VidynError, match=f"{key}' must be an integer, got 'ten'"):
            build_config(None, [f"{key}=ten"])
        assert build_config(None, [f"{key}=null"]) is not None
    assert build_config(None, ["trainer.max_epochs=3"]).trainer.max_epochs == 3
    with pytest.raises(VidynError, match="must be a number"):
        build_config(None, ["trainer.val_check_interval=often"])


def test_the_old_flat_task_section_is_refused_with_how_to_convert() -> None:
    with pytest.raises(VidynError, match=r"old flat layout \(kind, label_smoothing\).*name: recognition"):
        build_config({"task": {"kind": "recognition", "label_smoothing": 0.1}})
    with pytest.raises(VidynError, match="--set task.args.num_context=10"):
        build_config(None, ["task.num_context=4"])
    cfg = build_config(None, ["task.name=recognition", "task.args.label_smoothing=0.2"])
    assert (cfg.task.name, cfg.task.args) == ("recognition", {"label_smoothing": 0.2})


def test_configs_inside_older_exported_models_are_upgraded() -> None:
    from vidyn.config import Config, upgrade_legacy

    old = Config().to_dict()
    old["task"] = {"kind": "prediction", "num_context": 2, "num_future": 4, "mode": "irregular",
                   "loss": "vid_ode", "warp_weight": 1.0, "pyramid_scales": [2, 4], "label_smoothing": 0.0,
                   "adversarial_weight": 0.0, "sampling_stop_fraction": 0.5, "freeze_backbone_until_epoch": 0,
                   "unfreeze_layers": ["layer3"]}  # fmt: skip
    task = build_config(upgrade_legacy(old)).task
    assert task.name == "prediction"
    assert task.args == {"num_context": 2, "num_future": 4, "mode": "irregular", "loss": "model",
                         "adversarial_weight": 0.0, "sampling_stop_fraction": 0.5,
                         "loss_args": {"warp_weight": 1.0, "pyramid_scales": [2, 4]}}  # fmt: skip
    old["task"] = {"kind": "recognition", "num_context": 10, "label_smoothing": 0.1, "unfreeze_layers": ["a"]}
    task = build_config(upgrade_legacy(old)).task
    assert (task.name, task.args) == ("recognition", {"label_smoothing": 0.1, "unfreeze_layers": ["a"]})
    assert upgrade_legacy({"task": {"name": "x"}}) == {"task": {"name": "x"}}
