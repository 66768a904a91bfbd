"""Model profiling: parameters, FLOPs per clip, train-step time, inference latency and peak memory.

Used by `vidyn compare` and by the benchmarks. Conventions (stated in every report that uses them):

- **FLOPs** are counted by `torch.utils.flop_counter.FlopCounterMode` on one forward pass: matrix
  multiplications, convolutions and attention, at 2 FLOPs per multiply-accumulate. Element-wise ops
  (gates, activations, norms) are not counted, so parameter-free baselines count 0.
- **Times** are medians of wall-clock repeats after warm-up runs, in seconds, at the current
  `torch.get_num_threads()` (report it beside the figures: these machines drift by ~30%).
- **Peak memory** is the peak of the bytes newly held by torch tensors while a function runs, above
  what was held when it started. On CUDA: `torch.cuda.max_memory_allocated` minus the allocation at the
  start. On CPU, where torch keeps no such counter: the maximum of the running sum of the allocation and
  free events that `torch.profiler` records with `profile_memory=True` (every tensor allocation made on
  the CPU allocator, by any op, including autograd buffers and optimiser state). It excludes memory the
  process held before (weights, data) and non-tensor memory (Python objects, allocator caches, library
  workspaces), so it is the tensor working set of the function, not the process RSS.

This module sits in `models` and so knows nothing of tasks or configs: a training step is given as a
loss closure plus an optimiser.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from vidyn.console import drop_native_lines

MIB = 2**20
_CPU_DEVICES = ("CPU", "MKLDNN", "IDEEP")
# What the profiler's C++ side writes to stderr on every use, saying nothing about the model: Kineto's
# start/stop trace points (logged at its highest level, so KINETO_LOG_LEVEL can only hide them with its
# errors) and c10's note that a block allocated before profiling was freed during it (expected: the
# measurement starts from what is held at the start).
_PROFILER_NOISE = (
    rb"SyncActivityProfilerHandler\.cpp:\d+\] profiler_(start|stop)",
    rb"CPUAllocator\.cpp:\d+\] Memory block of unknown size was allocated before",
)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared tensors counted once; `trainable_only`: requires_grad only)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (what stays resident between calls)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@torch.no_grad()
def flops_per_clip(model: nn.Module, context: Tensor, context_times: Tensor, target_times: Tensor) -> int:
    """FLOPs of one inference forward, divided by the batch size `context.shape[0]`.

    context `(B, T_in, C, H, W)`; times `(B, T)` or `(T,)`. The model is put in eval mode (and left so).
    """
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(context, context_times, target_times)
    return int(counter.get_total_flops()) // max(1, context.shape[0])


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on a CUDA `device` (a no-op elsewhere): CUDA runs asynchronously, so a
    wall-clock time read without it covers only the launches."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, device: torch.device | None = None
) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_inference(
    model: nn.Module,
    context: Tensor,
    context_times: Tensor,
    target_times: Tensor,
    *,
    repeats: int = 5,
    warmup: int = 1,
) -> float:
    """Median seconds per clip of an inference forward (eval mode, no grad): call time / batch size.

    Pass a batch of one clip for latency; a larger batch gives amortised throughput per clip instead.
    """
    model.eval()

    @torch.no_grad()
    def run() -> None:
        model(context, context_times, target_times)

    return median_seconds(run, repeats=repeats, warmup=warmup, device=context.device) / max(
        1, context.shape[0]
    )


def train_step(
    loss_fn: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    clip_grad_norm: float | None = None,
) -> float:
    """One optimisation step: zero grads, `loss_fn()`, backward, optional norm clipping, step; the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    if clip_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    optimizer.step()
    return float(loss.detach())


def time_train_step(
    loss_fn: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    clip_grad_norm: float | None = None,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | None = None,
) -> float:
    """Median seconds of a full training step (forward + backward + optimiser step), see `train_step`.

    The steps really update the parameters: profile a copy of a model whose weights matter.
    """
    return median_seconds(
        lambda: train_step(loss_fn, optimizer, clip_grad_norm=clip_grad_norm),
        repeats=repeats,
        warmup=warmup,
        device=device,
    )


def peak_memory_mb(fn: Callable[[], Any], *, device: torch.device | None = None) -> float:
    """Peak MiB newly held by torch tensors while `fn()` runs, above the start (see module docstring).

    `device` selects the counter: CUDA devices use the allocator's peak statistics, anything else the
    CPU allocator events recorded by `torch.profiler`. Call it with a fresh optimiser (grads set to
    None) to include the gradients and optimiser state a first step allocates.
    """
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / MIB
    with (
        drop_native_lines(*_PROFILER_NOISE),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type().name in _CPU_DEVICES
    ]
    held = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        held += nbytes  # negative for frees
        peak = max(peak, held)
    return peak / MIB
