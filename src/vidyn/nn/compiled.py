"""`torch.compile` for small memory-bound pieces of vidyn's models, with an off switch and an eager fallback.

Some of vidyn's layers are chains of cheap element-wise passes over large tensors (the phase mixing of
`vidyn.nn.upsample.UpsampleConv` is a dozen of them, forward and backward): in eager mode each pass reads
and writes the whole tensor, so they are bound by memory traffic, not arithmetic. TorchInductor fuses
such a chain into one loop (C++/OpenMP on CPU, Triton on CUDA), forward and backward alike.

`compiled_or_eager(fast, eager)` returns a function that calls `torch.compile(fast)` and, where that is
off or cannot work, `eager` (which must compute the same function; the tests compare the two):
- `VIDYN_COMPILE=0` in the environment turns compilation off (for debugging, or where compile time
  matters more than speed); `set_compile(False)` does the same from Python;
- the first call compiles (seconds; new shapes recompile once, after which Dynamo's symbolic shapes cover
  the rest); if compiling fails (no C++ compiler, no Triton on a GPU), vidyn warns once and stays eager;
- inside a caller's own `torch.compile` the fast form is traced inline; under a dispatch mode (e.g.
  `FlopCounterMode`) the eager form runs, so the mode sees ordinary ops;
- `static_shapes=n`: the first n distinct input signatures (shapes, strides, dtypes, other arguments) are
  each compiled for their exact shapes, then Dynamo's automatic dynamic shapes take over. For small
  memory-bound kernels called many times per step (Winograd transforms, `UpsampleConv`'s mixing)
  Inductor's dynamic-shape code measured 1.3-8x slower than its static code for the same shapes
  (docs/speed.md, session 19); each signature costs one compile (1-3 s).
"""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from vidyn.errors import VidynWarning

# `static_shapes` of the small per-step kernels (Winograd transforms, UpsampleConv's mixing): a model calls
# each with 3-4 signatures (docs/speed.md, session 19)
SMALL_KERNEL_STATIC_SHAPES = 8

_state = {"enabled": os.environ.get("VIDYN_COMPILE", "1").lower() not in ("0", "false", "off", "no")}


def set_compile(enabled: bool) -> None:
    """Turn vidyn's use of `torch.compile` on or off for this process (the default: on, unless
    `VIDYN_COMPILE=0`)."""
    _state["enabled"] = bool(enabled)


def compile_enabled() -> bool:
    """Whether vidyn may use `torch.compile` in this process (`set_compile`, `VIDYN_COMPILE`)."""
    return bool(_state["enabled"])


def compiled_or_eager(
    fast: Callable[..., Any], eager: Callable[..., Any], mode: str | None = None, static_shapes: int = 0
) -> Callable[..., Any]:
    """`torch.compile(fast, mode=mode)` when enabled and working, else `eager` (see the module
    docstring)."""
    compiled: Callable[..., Any] | None = None  # made on first use: importing Dynamo takes ~1 s
    static: dict[tuple, Callable[..., Any]] = {}  # signature -> its own static-shape compile
    failed = False

    def pick(args: tuple, kwargs: dict) -> Callable[..., Any]:
        nonlocal compiled
        key = _signature(args, kwargs) if static_shapes else None
        if key is not None and (key in static or len(static) < static_shapes):
            if key not in static:
                static[key] = torch.compile(_own_code(fast), dynamic=False, mode=mode)
            return static[key]
        if compiled is None:
            compiled = torch.compile(fast) if mode is None else torch.compile(fast, mode=mode)
        return compiled

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if torch.compiler.is_compiling():
            return fast(*args, **kwargs)
        if failed or not _state["enabled"] or _get_current_dispatch_mode() is not None:
            return eager(*args, **kwargs)  # (under a dispatch mode such as FlopCounterMode: count eager ops)
        try:
            return pick(args, kwargs)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (any backend failure: fall back, say so once)
            result = eager(*args, **kwargs)  # bad inputs raise here, exactly as they would without compile
            failed = True
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            warnings.warn(
                VidynWarning(
                    f"torch.compile failed ({first_line}); running {fast.__name__} eagerly (same results, "
                    "slower). Set VIDYN_COMPILE=0 to skip compiling."
                ),
                stacklevel=2,
            )
            return result

    return call


def _signature(args: tuple, kwargs: dict) -> tuple | None:
    """What a static-shape compile is specialised on: each tensor's shape, strides, dtype, device and
    whether it needs a gradient; other arguments by value (None where one is unhashable)."""

    def part(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (value.shape, value.stride(), value.dtype, value.device, value.requires_grad)
        if isinstance(value, (tuple, list)):
            return tuple(part(v) for v in value)
        return value

    key = (part(args), tuple((name, part(value)) for name, value in sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with a code object of its own: Dynamo keeps compiled entries per code object, so each
    static-shape compile holds one entry (one guard set to check per call) and none counts toward
    another's recompile limit."""
    if not isinstance(fn, types.FunctionType):
        return fn
    copy = types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy
