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
