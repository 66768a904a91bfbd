"""Contract tests over the whole registry: every `*_tiny` model honours its family's interface and
survives export -> load (safetensors + JSON) bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vidyn
import vidyn.models  # noqa: F401  (registers every builder before the parameter lists are made)
from vidyn.registry import MODELS

TINY = [n for n in MODELS.names() if n.endswith("_tiny")]
PREDICTORS = [n for n in TINY if MODELS.get(n).family == "predictor"]
CLASSIFIERS = [n for n in TINY if MODELS.get(n).family == "classifier"]
GENERATORS = [n for n in TINY if MODELS.get(n).family == "generator"]


# Parameter-free baselines have no size to shrink: the contract tests take them as they are.
SIZELESS = ["context_median", "copy_last", "linear"]
TINY = TINY + SIZELESS
PREDICTORS = PREDICTORS + SIZELESS


def test_every_registered_model_has_a_tiny_variant() -> None:
    for name in MODELS.names():
        if not name.endswith("_tiny") and name not in SIZELESS:
            assert f"{name}_tiny" in MODELS, f"{name} has no {name}_tiny for tests"


def test_tiny_variants_override_their_full_builder() -> None:
    for name in MODELS.names():
        if name.endswith("_tiny"):
            entry = MODELS.get(name)
            assert entry.base == name.removesuffix("_tiny"), f"{name} is not a variant of its full model"
            full = set(MODELS.get(entry.base).defaults())
            assert set(entry.defaults()) == full, f"{name} must accept every argument of {entry.base}"


def _frame_spec(name: str) -> tuple[int, int]:
    d = MODELS.get(name).defaults()
    return int(d.get("in_channels", 1)), int(d.get("image_size", 16))


def _clip(name: str, b: int = 2, t: int = 6) -> torch.Tensor:
    c, s = _frame_spec(name)
    return torch.rand(b, t, c, s, s, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", PREDICTORS)
def test_predictor_interface(name: str) -> None:
    model = vidyn.build_model(name).eval()
    clip = _clip(name)
    times = torch.arange(6, dtype=torch.float32) * 0.1
    with torch.no_grad():
        out = model(clip[:, :3], times[:3], times[3:])
    assert out.shape == clip[:, 3:].shape
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert isinstance(model.continuous_time, bool)
    # batched (B, T) times mean the same as shared (T,) times
    with torch.no_grad():
        again = model(clip[:, :3], times[:3].expand(2, -1), times[3:].expand(2, -1))
    torch.testing.assert_close(again, out, atol=1e-5, rtol=1e-4)
    if not model.continuous_time:
        with pytest.raises(ValueError):
            model(clip[:, :3], times[:3], torch.tensor([0.35, 0.45]))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_interface(name: str) -> None:
    model = vidyn.build_model(name).eval()
    c, _ = _frame_spec(name)
    with torch.no_grad():
        logits = model(torch.rand(2, 4, c, 32, 32))
    assert logits.shape == (2, model.num_classes)


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_interface(name: str) -> None:
    model = vidyn.build_model(name).eval()
    times = torch.tensor([0.0, 0.1, 0.25, 0.3])  # irregular: generators answer at any timestamp
    with torch.no_grad():
        a = model.sample(3, times, generator=torch.Generator().manual_seed(0))
        b = model.sample(3, times, generator=torch.Generator().manual_seed(0))
        c = model.sample(3, times, generator=torch.Generator().manual_seed(1))
    c_in, size = model.in_channels, model.image_size
    assert a.shape == (3, 4, c_in, size, size) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)  # reproducible from the generator, and random
    assert isinstance(model.num_classes, int)


@pytest.mark.parametrize("name", PREDICTORS + CLASSIFIERS + GENERATORS)
def test_export_load_round_trip(name: str, tmp_path: Path) -> None:
    model = vidyn.build_model(name).eval()
    vidyn.export_model(model, tmp_path, metrics={"x": 1.0})
    assert {p.name for p in tmp_path.iterdir()} == {"model.safetensors", "model.json"}
    loaded = vidyn.load_model(tmp_path)
    assert type(loaded) is type(model)
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert (
        loaded.vidyn_meta["metrics"] == {"x": 1.0} and loaded.vidyn_meta["vidyn_version"] == vidyn.__version__
    )


def test_protocols_tell_the_families_apart() -> None:
    from torch import nn

    from vidyn.models.interface import Classifier, Generator, Predictor

    assert not isinstance(nn.Linear(2, 2), (Predictor, Classifier, Generator))  # any module is not enough
    predictor, classifier = vidyn.build_model("convlstm_tiny"), vidyn.build_model("cnn_rnn_tiny")
    assert isinstance(predictor, Predictor) and not isinstance(predictor, (Classifier, Generator))
    assert isinstance(classifier, Classifier) and not isinstance(classifier, (Predictor, Generator))


def test_load_refuses_mismatched_weights(tmp_path: Path) -> None:
    import json

    vidyn.export_model(vidyn.build_model("convlstm_tiny"), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["args"] = {"hidden_channels": 12}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(vidyn.errors.VidynError, match="do not fit"):
        vidyn.load_model(tmp_path)
