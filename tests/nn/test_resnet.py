"""Tests for vidyn.nn.resnet: torchvision-compatible names, parameter counts, strides, weight loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vidyn.errors import VidynError
from vidyn.nn.resnet import BasicBlock, Bottleneck, ResNet, load_pretrained, resnet

# torchvision.models.resnet18().state_dict(): key and shape ("-" = scalar num_batches_tracked), in order.
TORCHVISION_RESNET18 = """
conv1.weight 64,3,7,7
bn1.weight 64
bn1.bias 64
bn1.running_mean 64
bn1.running_var 64
bn1.num_batches_tracked -
layer1.0.conv1.weight 64,64,3,3
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.bn1.running_mean 64
layer1.0.bn1.running_var 64
layer1.0.bn1.num_batches_tracked -
layer1.0.conv2.weight 64,64,3,3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.0.bn2.running_mean 64
layer1.0.bn2.running_var 64
layer1.0.bn2.num_batches_tracked -
layer1.1.conv1.weight 64,64,3,3
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.bn1.running_mean 64
layer1.1.bn1.running_var 64
layer1.1.bn1.num_batches_tracked -
layer1.1.conv2.weight 64,64,3,3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer1.1.bn2.running_mean 64
layer1.1.bn2.running_var 64
layer1.1.bn2.num_batches_tracked -
layer2.0.conv1.weight 128,64,3,3
layer2.0.bn1.weight 128
layer2.0.bn1.bias 128
layer2.0.bn1.running_mean 128
layer2.0.bn1.running_var 128
layer2.0.bn1.num_batches_tracked -
layer2.0.conv2.weight 128,128,3,3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.bn2.running_mean 128
layer2.0.bn2.running_var 128
layer2.0.bn2.num_batches_tracked -
layer2.0.downsample.0.weight 128,64,1,1
layer2.0.downsample.1.weight 128
layer2.0.downsample.1.bias 128
layer2.0.downsample.1.running_mean 128
layer2.0.downsample.1.running_var 128
layer2.0.downsample.1.num_batches_tracked -
layer2.1.conv1.weight 128,128,3,3
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.bn1.running_mean 128
layer2.1.bn1.running_var 128
layer2.1.bn1.num_batches_tracked -
layer2.1.conv2.weight 128,128,3,3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer2.1.bn2.running_mean 128
layer2.1.bn2.running_var 128
layer2.1.bn2.num_batches_tracked -
layer3.0.conv1.weight 256,128,3,3
layer3.0.bn1.weight 256
layer3.0.bn1.bias 256
layer3.0.bn1.running_mean 256
layer3.0.bn1.running_var 256
layer3.0.bn1.num_batches_tracked -
layer3.0.conv2.weight 256,256,3,3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.bn2.running_mean 256
layer3.0.bn2.running_var 256
layer3.0.bn2.num_batches_tracked -
layer3.0.downsample.0.weight 256,128,1,1
layer3.0.downsample.1.weight 256
layer3.0.downsample.1.bias 256
layer3.0.downsample.1.running_mean 256
layer3.0.downsample.1.running_var 256
layer3.0.downsample.1.num_batches_tracked -
layer3.1.conv1.weight 256,256,3,3
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.bn1.running_mean 256
layer3.1.bn1.running_var 256
layer3.1.bn1.num_batches_tracked -
layer3.1.conv2.weight 256,256,3,3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer3.1.bn2.running_mean 256
layer3.1.bn2.running_var 256
layer3.1.bn2.num_batches_tracked -
layer4.0.conv1.weight 512,256,3,3
layer4.0.bn1.weight 512
layer4.0.bn1.bias 512
layer4.0.bn1.running_mean 512
layer4.0.bn1.running_var 512
layer4.0.bn1.num_batches_tracked -
layer4.0.conv2.weight 512,512,3,3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.bn2.running_mean 512
layer4.0.bn2.running_var 512
layer4.0.bn2.num_batches_tracked -
layer4.0.downsample.0.weight 512,256,1,1
layer4.0.downsample.1.weight 512
layer4.0.downsample.1.bias 512
layer4.0.downsample.1.running_mean 512
layer4.0.downsample.1.running_var 512
layer4.0.downsample.1.num_batches_tracked -
layer4.1.conv1.weight 512,512,3,3
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.bn1.running_mean 512
layer4.1.bn1.running_var 512
layer4.1.bn1.num_batches_tracked -
layer4.1.conv2.weight 512,512,3,3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
layer4.1.bn2.running_mean 512
layer4.1.bn2.running_var 512
layer4.1.bn2.num_batches_tracked -
fc.weight 1000,512
fc.bias 1000
"""


def _expected_resnet18() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in TORCHVISION_RESNET18.strip().splitlines():
        key, shape = line.split()
        rows.append((key, () if shape == "-" else tuple(int(s) for s in shape.split(","))))
    return rows


def test_resnet18_state_dict_matches_torchvision_names_and_shapes():
    expected = _expected_resnet18()
    assert len(expected) == 122
    got = [(k, tuple(v.shape)) for k, v in resnet(18, num_classes=1000).state_dict().items()]
    assert got == expected


@pytest.mark.parametrize(
    ("depth", "num_params", "num_entries", "feature_dim"),
    # entries: convs + 5 per BatchNorm + fc weight/bias (18: 20 + 100 + 2; 34: 36 + 180 + 2; 50: 53 + 265 + 2)
    [(18, 11_689_512, 122, 512), (34, 21_797_672, 218, 512), (50, 25_557_032, 320, 2048)],
)
def test_parameter_counts_match_torchvision(depth, num_params, num_entries, feature_dim):
    model = resnet(depth, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == num_params
    assert len(model.state_dict()) == num_entries
    assert model.feature_dim == feature_dim
    headless = resnet(depth)
    assert headless.fc is None
    assert sum(p.numel() for p in headless.parameters()) == num_params - (feature_dim * 1000 + 1000)


def test_resnet50_is_v1_5_with_projection_shortcuts():
    model = resnet(50)
    block = model.layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # stride on the 3x3 (v1.5)
    assert tuple(model.state_dict()["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(model.state_dict()["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert model.layer1[1].downsample is None


@pytest.mark.parametrize(("depth", "size", "grid"), [(18, 224, 7), (50, 64, 2)])
def test_total_stride_is_32_and_features_are_pooled(depth, size, grid):
    model = resnet(depth, num_classes=7).eval()
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.setdefault("layer4", o))
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert seen["layer4"].shape == (2, model.feature_dim, grid, grid)
    torch.testing.assert_close(features, seen["layer4"].mean(dim=(2, 3)))
    torch.testing.assert_close(logits, model.fc(features))
    assert resnet(depth).eval()(x).shape == (2, model.feature_dim)  # headless forward = features


def test_basic_block_matches_reference_formula():
    torch.manual_seed(0)
    block = BasicBlock(
        4,
        8,
        stride=2,
        downsample=torch.nn.Sequential(
            torch.nn.Conv2d(4, 8, 1, stride=2, bias=False), torch.nn.BatchNorm2d(8)
        ),
    )
    for bn in (block.bn1, block.bn2, block.downsample[1]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    block.eval()
    x = torch.randn(2, 4, 9, 9)

    def bn(t, m):
        return (t - m.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            m.running_var.view(1, -1, 1, 1) + m.eps
        ) * (m.weight.view(1, -1, 1, 1)) + m.bias.view(1, -1, 1, 1)

    h = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    h = bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    shortcut = bn(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(h + shortcut))


def test_tiny_widths_keep_torchvision_names():
    tiny = ResNet(BasicBlock, (1, 1, 1, 1), widths=(8, 16, 32, 64))
    names = set(tiny.state_dict())
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer4.0.bn2.running_var"} <= names
    assert tiny.feature_dim == 64
    assert tiny.forward_features(torch.rand(2, 3, 32, 32)).shape == (2, 64)


@pytest.fixture(scope="module")
def imagenet_like_state():
    torch.manual_seed(1)
    model = resnet(18, num_classes=1000)
    for m in model.modules():  # non-default statistics so a silent skip of buffers would be caught
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model.state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_pretrained_round_trip_ignores_mismatched_fc(tmp_path, imagenet_like_state, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in imagenet_like_state.items()}, str(path))
    else:
        torch.save(imagenet_like_state, path)
    for num_classes in (None, 10, 1000):
        model = resnet(18, num_classes=num_classes)
        fc_before = None if model.fc is None else model.fc.weight.detach().clone()
        load_pretrained(model, path)
        state = model.state_dict()
        for key, value in imagenet_like_state.items():
            if not key.startswith("fc."):
                assert torch.equal(state[key], value), key
        if num_classes == 1000:
            assert torch.equal(model.fc.weight, imagenet_like_state["fc.weight"])
        elif num_classes == 10:
            assert torch.equal(model.fc.weight, fc_before)


def test_load_pretrained_accepts_files_without_num_batches_tracked(tmp_path, imagenet_like_state):
    path = tmp_path / "old_torchvision.pth"
    torch.save({k: v for k, v in imagenet_like_state.items() if "num_batches_tracked" not in k}, path)
    model = resnet(18)
    load_pretrained(model, path)
    assert torch.equal(model.layer3[1].bn2.running_var, imagenet_like_state["layer3.1.bn2.running_var"])
    assert int(model.layer3[1].bn2.num_batches_tracked) == 0


@pytest.mark.parametrize(
    ("file_depth", "model_depth", "expected"),
    [(34, 18, "unexpected keys: layer1.2"), (18, 34, "missing keys: layer1.2"), (50, 18, "wrong shapes")],
)
def test_load_pretrained_depth_mismatch_names_keys(tmp_path, file_depth, model_depth, expected):
    path = tmp_path / f"resnet{file_depth}.pth"
    torch.save(resnet(file_depth).state_dict(), path)
    with pytest.raises(VidynError, match=expected) as info:
        load_pretrained(resnet(model_depth), path)
    assert f"(ResNet-{file_depth}) does not fit this ResNet-{model_depth}" in str(info.value)
    assert "\n" not in str(info.value)


class _NotATensor:
    pass


def test_load_pretrained_bad_files_raise_vidyn_error(tmp_path):
    model = resnet(18)
    with pytest.raises(VidynError, match="does not exist"):
        load_pretrained(model, tmp_path / "missing.pth")
    pickled = tmp_path / "objects.pth"
    torch.save({"conv1.weight": _NotATensor()}, pickled)
    with pytest.raises(VidynError, match="could not read"):
        load_pretrained(model, pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(VidynError, match="could not read"):
        load_pretrained(model, garbage)
    wrong_suffix = tmp_path / "weights.npz"
    wrong_suffix.write_bytes(b"")
    with pytest.raises(VidynError, match="expected a .pth"):
        load_pretrained(model, wrong_suffix)
    with pytest.raises(VidynError, match="unsupported ResNet depth"):
        resnet(101)
