"""Loading the reference implementations from a user's checkout, for the side-by-side benchmarks.

Nothing of OpenSTL or Vid-ODE is copied into vidyn: their files are executed from the path the user
gives. OpenSTL's package `__init__` files import every model it has (and timm, mmcv-style extras); only
the three recurrent models and their cell modules are loaded here, each file by path, under a stand-in
`openstl.modules` namespace holding just the cells they import.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

from vidyn.errors import VidynError
from vidyn.nn.conv_rnn import fuse_gate_weights

OPENSTL_FILES = {  # vidyn name: (model file, class, cell module, cell class)
    "convlstm": ("convlstm_model", "ConvLSTM_Model", "convlstm_modules", "ConvLSTMCell"),
    "predrnn": ("predrnn_model", "PredRNN_Model", "predrnn_modules", "SpatioTemporalLSTMCell"),
    "predrnn_v2": ("predrnnv2_model", "PredRNNv2_Model", "predrnnv2_modules", "SpatioTemporalLSTMCellv2"),
}


def _load_file(name: str, path: Path) -> types.ModuleType:
    if not path.is_file():
        raise VidynError(f"{path} not found: pass the root of a checkout of the reference repository")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_openstl(root: Path) -> dict[str, type[nn.Module]]:
    """OpenSTL's ConvLSTM, PredRNN and PredRNN-V2 model classes, by vidyn name, from `root/openstl`."""
    base = Path(root).expanduser() / "openstl"
    package = sys.modules.setdefault("openstl", types.ModuleType("openstl"))
    modules = types.ModuleType("openstl.modules")
    package.modules = modules
    sys.modules["openstl.modules"] = modules
    for _, _, cell_file, cell_class in OPENSTL_FILES.values():
        cells = _load_file(f"openstl.modules.{cell_file}", base / "modules" / f"{cell_file}.py")
        setattr(modules, cell_class, getattr(cells, cell_class))
    return {
        name: getattr(_load_file(f"openstl.models.{model_file}", base / "models" / f"{model_file}.py"), cls)
        for name, (model_file, cls, _, _) in OPENSTL_FILES.items()
    }


def openstl_config(
    num_context: int, num_frames: int, size: int, patch: int, kernel: int, reverse: bool
) -> types.SimpleNamespace:
    """The `configs` object OpenSTL's recurrent models read (its Moving MNIST defaults otherwise)."""
    return types.SimpleNamespace(
        in_shape=(num_frames, 1, size, size), patch_size=patch, filter_size=kernel, stride=1,
        layer_norm=False, pre_seq_length=num_context, aft_seq_length=num_frames - num_context,
        total_length=num_frames, reverse_scheduled_sampling=int(reverse), decouple_beta=0.1,
    )  # fmt: skip


@torch.no_grad()
def copy_openstl_weights(ref: nn.Module, ours: nn.Module) -> None:
    """Give vidyn's model the reference's weights (vidyn's ConvLSTM fuses conv_x and conv_h into one
    convolution over `[x, h]`, its ST-LSTM conv_x / conv_h / conv_m into two over `[x, h]` and `[x, m]`;
    OpenSTL's unused `conv_o`/`conv_last` of the ConvLSTM cell are skipped)."""
    for ref_cell, cell in zip(ref.cell_list, ours.cells, strict=True):
        if hasattr(cell, "conv"):  # ConvLSTM
            cell.conv.weight.copy_(torch.cat([ref_cell.conv_x[0].weight, ref_cell.conv_h[0].weight], dim=1))
            continue
        w_x, w_h, w_m = (getattr(ref_cell, name)[0].weight for name in ("conv_x", "conv_h", "conv_m"))
        w_xh, w_xm = fuse_gate_weights(w_x, w_h, w_m, cell.in_channels)
        cell.conv_xh.weight.copy_(w_xh)
        cell.conv_xm.weight.copy_(w_xm)
        cell.conv_o.weight.copy_(ref_cell.conv_o[0].weight)
        cell.conv_last.weight.copy_(ref_cell.conv_last.weight)
    ours.conv_last.weight.copy_(ref.conv_last.weight)
    if hasattr(ours, "adapter"):
        ours.adapter.weight.copy_(ref.adapter.weight)


def load_vid_ode(root: Path, video: torch.Tensor, times: torch.Tensor, device: torch.device) -> tuple:
    """The official VidODE generator (64x64 RGB, extrapolation 5 -> 5, dopri5 1e-3/1e-4 as in its code)
    and the batch dict its `compute_all_losses` takes, from the checkout at `root`."""
    root = Path(root).expanduser()
    if not (root / "models" / "conv_odegru.py").is_file():
        raise VidynError(f"{root}/models/conv_odegru.py not found: pass the root of a Vid-ODE checkout")
    sys.path.insert(0, str(root))
    try:
        from models.conv_odegru import VidODE  # noqa: PLC0415  (the user's checkout)
    finally:
        sys.path.remove(str(root))
    opt = types.SimpleNamespace(
        init_dim=32, n_downs=2, input_size=video.shape[-1], input_dim=video.shape[2], n_layers=2,
        run_backwards=True, dec_diff="dopri5", extrap=True,
    )  # fmt: skip
    model = VidODE(opt, device.type)
    b, t = video.shape[:2]
    half = t // 2
    batch = {  # the official code views these, so they must be contiguous
        "observed_data": video[:, :half].contiguous(),
        "observed_tp": times[:half],
        "observed_mask": torch.ones(b, half, 1, device=device),
        "data_to_predict": video[:, half:].contiguous(),
        "tp_to_predict": times[half:],
        "mask_predicted_data": torch.ones(b, t - half, 1, device=device),
    }
    return model, batch


def count_calls(module: nn.Module) -> list[int]:
    """A one-item counter of `module`'s forward calls (the ODE functions' NFE)."""
    counter = [0]

    def hook(*_) -> None:
        counter[0] += 1

    module.register_forward_hook(hook)
    return counter
