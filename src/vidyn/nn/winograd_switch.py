"""Whether CPU training takes `vidyn.nn.winograd`'s path: forced (`set_winograd`), from the environment
(`VIDYN_WINOGRAD=0/1`), or measured once per process.

Winograd F(4x4, 3x3) does 4x fewer multiplications than a direct 3x3 convolution, as batched matrix
products, so it pays where this CPU's matrix products run near its direct convolution's rate. On first
use the process compares the two rates (`product_speedup`: 4x their ratio, the speed-up the fewer
multiplications give) and takes Winograd from `MIN_PRODUCT_SPEEDUP` (docs/speed.md, session 23: the AVX2
and Zen 4 AVX-512 machines come out on; session 6's AVX-512 machine, whose direct convolution ran at twice
the matrix-product rate, off).
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

# Winograd F(4x4, 3x3) does 4x fewer multiplications, as matrix products; where those run at under 5/8 of
# the direct convolution's rate the transforms eat the gain (docs/speed.md, session 23)
MIN_PRODUCT_SPEEDUP = 2.5


def product_speedup(repeats: int = 5) -> float:
    """4 x this CPU's fp32 matrix-product rate / its oneDNN direct 3x3 convolution rate, at the current
    thread count: how much faster F(4x4, 3x3) would compute a convolution's multiplications. A 512-square
    product against (4, 128, 16, 16) -> 256 channels, the fastest of `repeats` interleaved runs of each
    (~50 ms in all). Rates, not one Winograd product's time: a small product's time swings with what the
    cache holds (2.2-3.8x here for the same shapes), the rates do not (3.1-3.4x)."""
    gen = torch.Generator().manual_seed(0)  # not the global stream: training runs stay reproducible
    a, b = torch.randn(2, 512, 512, generator=gen).unbind()
    x = torch.randn(4, 128, 16, 16, generator=gen)
    w = torch.randn(256, 128, 3, 3, generator=gen)
    best = {"direct": float("inf"), "product": float("inf")}
    with torch.no_grad():
        for i in range(repeats + 1):  # the first round warms both up
            for name, fn in (("direct", lambda: F.conv2d(x, w, padding=1)), ("product", lambda: a @ b)):
                start = time.perf_counter()
                fn()
                if i:
                    best[name] = min(best[name], time.perf_counter() - start)
    product_rate = 2 * 512**3 / best["product"]
    direct_rate = 2 * 4 * 128 * 256 * 9 * 16 * 16 / best["direct"]
    return 4 * product_rate / direct_rate


def _default_enabled() -> bool:
    env = os.environ.get("VIDYN_WINOGRAD", "auto").lower()
    if env in ("0", "false", "off", "no"):
        return False
    if env in ("1", "true", "on", "yes"):
        return True
    return product_speedup() >= MIN_PRODUCT_SPEEDUP


_state: dict[str, bool | None] = {"enabled": None, "default": None}


def set_winograd(enabled: bool | None) -> None:
    """Force Winograd convolutions on or off in CPU training for this process (`None`: the default,
    `VIDYN_WINOGRAD` if set, else measured on first use: `product_speedup`)."""
    _state["enabled"] = enabled


def winograd_enabled() -> bool:
    """Whether CPU training may take the Winograd path (`set_winograd`, `VIDYN_WINOGRAD`, or measured
    once per process: `product_speedup` at least `MIN_PRODUCT_SPEEDUP`)."""
    if _state["enabled"] is not None:
        return bool(_state["enabled"])
    if _state["default"] is None:
        _state["default"] = _default_enabled()
    return bool(_state["default"])
