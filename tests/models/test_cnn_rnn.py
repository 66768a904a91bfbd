"""Tests for vidyn.models.cnn_rnn: seed 002's CNN-RNN classifier and the single-frame control."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vidyn.models.cnn_rnn  # noqa: F401  (registers the builders)
from vidyn.errors import VidynError
from vidyn.models.cnn_rnn import TemporalAttention, cnn_rnn, single_frame
from vidyn.models.interface import Classifier
from vidyn.nn.resnet import BasicBlock, ResNet
from vidyn.registry import MODELS


def cnn_rnn_tiny(**kwargs):
    return MODELS.build("cnn_rnn_tiny", **kwargs)


def single_frame_tiny(**kwargs):
    return MODELS.build("single_frame_tiny", **kwargs)


def _clip(batch: int = 2, frames: int = 4, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _backbone_bns(model: nn.Module, part: str) -> list[nn.BatchNorm2d]:
    module = getattr(model.backbone.resnet, part)
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("name", ["cnn_rnn", "cnn_rnn_tiny", "single_frame", "single_frame_tiny"])
def test_registered_as_classifiers(name):
    entry = MODELS.get(name)
    assert entry.family == "classifier"
    assert entry.defaults()["in_channels"] == 3


def test_full_size_cnn_rnn_shapes():
    model = MODELS.build("cnn_rnn", num_classes=101).eval()
    assert isinstance(model, Classifier) and model.num_classes == 101
    lstm = model.temporal_head.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.bidirectional) == (512, 256, True)
    assert model.temporal_head.attention.query_proj.out_features == 256
    assert model.temporal_head.attention.value_proj.out_features == 512
    with torch.no_grad():
        assert model(_clip(1, 2, size=32)).shape == (1, 101)
    assert cnn_rnn(backbone="resnet50").temporal_head.lstm.input_size == 2048


@pytest.mark.parametrize("builder", [cnn_rnn_tiny, single_frame_tiny])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_output_shapes(builder, channels):
    model = builder(num_classes=5, in_channels=channels).eval()
    with torch.no_grad():
        assert model(_clip(2, 3, channels)).shape == (2, 5)


def test_grayscale_is_repeated_and_imagenet_normalised():
    model = cnn_rnn_tiny(in_channels=1).eval()
    gray = _clip(2, 1, 1)[:, 0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.backbone.resnet.forward_features((gray.repeat(1, 3, 1, 1) - mean) / std)
        torch.testing.assert_close(model.backbone.encode_images(gray), expected)
    assert "backbone.mean" not in model.state_dict()  # constants, not weights


def test_ablations_change_structure():
    full = cnn_rnn_tiny()
    no_attention = cnn_rnn_tiny(attention=False)
    forward_only = cnn_rnn_tiny(bidirectional=False)
    assert isinstance(full.temporal_head.attention, TemporalAttention)
    assert no_attention.temporal_head.attention is None
    assert not any("attention" in k for k in no_attention.state_dict())
    assert full.temporal_head.lstm.bidirectional and not forward_only.temporal_head.lstm.bidirectional
    assert full.classifier.in_features == 32 and forward_only.classifier.in_features == 16
    two_layers = cnn_rnn_tiny(lstm_layers=2, dropout=0.25)
    assert two_layers.temporal_head.lstm.num_layers == 2 and two_layers.temporal_head.lstm.dropout == 0.25


def test_without_attention_the_head_averages_lstm_outputs():
    model = cnn_rnn_tiny(attention=False).eval()
    frames = _clip()
    with torch.no_grad():
        sequence, _ = model.temporal_head.lstm(model.backbone(frames))
        expected = model.classifier(sequence.mean(dim=1))
        logits, weights = model.forward_with_attention(frames)
    assert weights is None
    torch.testing.assert_close(logits, expected)


def test_temporal_attention_matches_scaled_dot_product_formula():
    torch.manual_seed(0)
    attention = TemporalAttention(feature_dim=6, attention_dim=4)
    x = torch.randn(3, 5, 6)
    q, k, v = attention.query_proj(x), attention.key_proj(x), attention.value_proj(x)
    weights = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)  # sqrt(attention_dim) = 2
    expected = attention.output_proj(weights @ v + x)
    output, got_weights = attention(x)
    torch.testing.assert_close(got_weights, weights)
    torch.testing.assert_close(output, expected)


def test_attention_weights_are_distributions_over_time():
    model = cnn_rnn_tiny().eval()
    with torch.no_grad():
        logits, weights = model.forward_with_attention(_clip(2, 6))
    assert weights.shape == (2, 6, 6)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 6))
    torch.testing.assert_close(logits, model(_clip(2, 6)))


def test_cnn_rnn_depends_on_frame_order_single_frame_only_on_the_middle_frame():
    torch.manual_seed(0)
    frames = _clip(2, 5)
    cnn = cnn_rnn_tiny().eval()
    single = single_frame_tiny().eval()
    with torch.no_grad():
        assert not torch.allclose(cnn(frames), cnn(frames.flip(1)), atol=1e-6)
        others_changed = frames.clone()
        others_changed[:, [0, 1, 3, 4]] = torch.rand(2, 4, 3, 32, 32)
        torch.testing.assert_close(single(others_changed), single(frames), rtol=0, atol=0)
        middle_changed = frames.clone()
        middle_changed[:, 2] = 1.0 - middle_changed[:, 2]
        assert not torch.allclose(single(middle_changed), single(frames), atol=1e-6)
        assert not torch.allclose(
            single(frames[:, :4]), single(frames[:, :3])
        )  # T=4 -> frame 2, T=3 -> frame 1
        torch.testing.assert_close(single(frames[:, :4]), single(frames[:, 2:3]))


@pytest.mark.parametrize(
    "builder", [cnn_rnn_tiny, lambda: cnn_rnn_tiny(attention=False, lstm_layers=2), single_frame_tiny]
)
def test_every_trainable_parameter_gets_a_gradient(builder):
    torch.manual_seed(0)
    model = builder().train()
    loss = F.cross_entropy(model(_clip(2, 3)), torch.tensor([1, 3]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_freeze_keeps_backbone_batchnorm_in_eval_mode_and_unfreeze_releases_layers():
    model = cnn_rnn_tiny()
    model.freeze_backbone()
    model.train()
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    assert all(not bn.training for part in ("bn1", "layer1", "layer4") for bn in _backbone_bns(model, part))
    assert model.temporal_head.training and model.temporal_head.dropout.training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loss = F.cross_entropy(model(_clip()), torch.tensor([0, 1]))
    loss.backward()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics untouched
    assert all(p.grad is None for p in model.backbone_parameters())

    model.unfreeze_backbone()  # seed 002's default: layer3 and layer4
    model.eval()
    model.train()  # a second train() must not revive frozen BatchNorm layers
    for part, trainable in [
        ("conv1", False),
        ("layer1", False),
        ("layer2", False),
        ("layer3", True),
        ("layer4", True),
    ]:
        module = getattr(model.backbone.resnet, part)
        assert all(p.requires_grad == trainable for p in module.parameters()), part
    assert all(bn.training for bn in _backbone_bns(model, "layer3") + _backbone_bns(model, "layer4"))
    assert not any(bn.training for bn in _backbone_bns(model, "layer1") + _backbone_bns(model, "bn1"))
    model.unfreeze_backbone(layers=None)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    with pytest.raises(VidynError, match="layer5"):
        model.unfreeze_backbone(layers=("layer5",))


@pytest.mark.parametrize("builder", [cnn_rnn_tiny, single_frame_tiny])
def test_parameter_groups_partition_the_model(builder):
    model = builder()
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}
    assert backbone == {id(p) for p in model.backbone.resnet.parameters()}


def test_pretrained_backbone_loads_from_local_file(tmp_path):
    torch.manual_seed(3)
    source = ResNet(BasicBlock, (1, 1, 1, 1), widths=(8, 16, 32, 64), num_classes=1000)
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    for model in (
        cnn_rnn(num_classes=4, backbone="resnet_tiny", pretrained=str(path)),
        single_frame(num_classes=4, backbone="resnet_tiny", pretrained=str(path)),
    ):
        loaded = model.backbone.resnet.state_dict()
        for key, value in source.state_dict().items():
            if not key.startswith("fc."):
                assert torch.equal(loaded[key], value), key
    with pytest.raises(VidynError, match="does not fit this ResNet-18"):
        cnn_rnn(pretrained=str(path))


def test_user_errors_are_vidyn_errors():
    with pytest.raises(VidynError, match="unknown backbone"):
        cnn_rnn(backbone="vgg16")
    with pytest.raises(VidynError, match="in_channels"):
        cnn_rnn_tiny(in_channels=2)
    with pytest.raises(VidynError, match="dropout"):
        single_frame_tiny(dropout=1.0)
    with pytest.raises(VidynError, match=r"\(B, T, 3, H, W\)"):
        cnn_rnn_tiny()(torch.rand(2, 4, 1, 32, 32))
    with pytest.raises(VidynError, match=r"\(B, T, 1, H, W\)"):
        single_frame_tiny(in_channels=1)(torch.rand(4, 3, 32, 32))


def _temporal_only_data() -> tuple[torch.Tensor, torch.Tensor]:
    """4 clips 4x3x32x32: brightening (class 0) or darkening (class 1); frame 2 is identical in all four."""
    base = 0.3 + 0.4 * torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    offsets = (torch.arange(4.0) - 2).view(4, 1, 1, 1)  # frame 2 = T // 2 has offset 0
    clips = [(base + sign * speed * offsets).clamp(0, 1) for sign in (1.0, -1.0) for speed in (0.1, 0.15)]
    return torch.stack(clips), torch.tensor([0, 0, 1, 1])


def _train(model: nn.Module, frames: torch.Tensor, labels: torch.Tensor, max_steps: int) -> tuple[int, float]:
    """Adam steps until train accuracy (eval mode) is 100% with loss < 0.1; returns (steps, accuracy)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = 0.0
    for step in range(1, max_steps + 1):
        model.train()
        loss = F.cross_entropy(model(frames), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            logits = model(frames)
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        if accuracy == 1.0 and F.cross_entropy(logits, labels).item() < 0.1:
            return step, accuracy
    return max_steps, accuracy


def test_cnn_rnn_learns_a_purely_temporal_task_single_frame_cannot():
    frames, labels = _temporal_only_data()
    torch.manual_seed(0)
    steps, accuracy = _train(cnn_rnn_tiny(num_classes=2), frames, labels, max_steps=99)
    assert accuracy == 1.0 and steps < 99
    torch.manual_seed(0)
    control = single_frame_tiny(num_classes=2)
    _, accuracy = _train(control, frames, labels, max_steps=30)
    assert accuracy == 0.5  # identical middle frames -> identical logits -> one class for all four clips
