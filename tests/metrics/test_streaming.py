"""FrameMetrics: accumulation over batches, merging (what DDP's sum does), and a real 2-process gloo run."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vidyn.errors import VidynError
from vidyn.metrics import FrameMetrics, frame_metrics, psnr_of_mean_mse, summarize

ALL = ("mse", "mae", "psnr", "ssim", "openstl_mse", "openstl_mae", "predrnn_psnr")


def clips(n: int, t: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(n, t, 1, 12, 12, generator=gen)
    # Error growing with the step, as in real rollouts, so per-step values differ.
    scale = torch.linspace(0.02, 0.2, t).view(1, t, 1, 1, 1)
    pred = (target + scale * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    return pred, target


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b) and set(a["per_step"]) == set(b["per_step"])
    for k in a:
        if k != "per_step":
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
    for k in a["per_step"]:
        assert a["per_step"][k] == pytest.approx(b["per_step"][k], rel=1e-9, abs=1e-12), k


def test_accumulating_batches_equals_whole_set() -> None:
    pred, target = clips(7)
    metric = FrameMetrics(num_steps=3)
    for sl in (slice(0, 2), slice(2, 3), slice(3, 7)):
        metric.update(pred[sl], target[sl])
    result = metric.compute()
    whole = summarize(frame_metrics(pred, target, names=ALL, dtype=torch.float64))
    assert_same(result, whole)
    # vidode_psnr is the PSNR of the pooled MSE, per step and over everything.
    assert result["per_step"]["vidode_psnr"] == pytest.approx(
        psnr_of_mean_mse(pred, target).double().tolist()
    )
    pooled = float(psnr_of_mean_mse(pred.double(), target.double(), per_step=False))
    assert result["vidode_psnr"] == pytest.approx(pooled)
    assert result["psnr"] > result["vidode_psnr"]  # mean of per-frame PSNRs >= PSNR of mean MSE
    assert result["per_step"]["mse"][0] < result["per_step"]["mse"][2]


def test_names_select_what_is_reported() -> None:
    pred, target = clips(2)
    plain = FrameMetrics(num_steps=3, names=("ssim",), conventions=False)
    plain.update(pred, target)
    out = plain.compute()
    assert set(out) == {"ssim", "per_step"} and set(out["per_step"]) == {"ssim"}
    with pytest.raises(VidynError, match="unknown frame metric"):
        FrameMetrics(names=("fvd",))


def test_num_steps_inferred_then_reset() -> None:
    pred, target = clips(4, t=3)
    metric = FrameMetrics()
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    assert len(metric.compute()["per_step"]["ssim"]) == 3
    with pytest.raises(VidynError, match="tracking 3 prediction steps"):
        metric.update(*clips(1, t=5))
    metric.reset()
    metric.update(*clips(2, t=5))
    assert len(metric.compute()["per_step"]["mse"]) == 5
    with pytest.raises(VidynError, match="tracking 2 prediction steps"):
        FrameMetrics(num_steps=2).update(pred, target)


def test_forward_and_merge_state_equal_whole_set() -> None:
    pred, target = clips(6, seed=1)
    metric = FrameMetrics()  # inferred steps: forward() merges into an empty global state first
    batch_value = metric(pred[:2], target[:2])
    assert_same(batch_value, summarize(frame_metrics(pred[:2], target[:2], names=ALL, dtype=torch.float64)))
    metric(pred[2:4], target[2:4])
    other = FrameMetrics(num_steps=3)  # what a second DDP rank would hold
    other.update(pred[4:], target[4:])
    metric.merge_state(other)
    assert_same(metric.compute(), summarize(frame_metrics(pred, target, names=ALL, dtype=torch.float64)))


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_compute_without_data_raises() -> None:
    with pytest.raises(VidynError, match="no frames"):
        FrameMetrics(num_steps=2).compute()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pred, target = clips(5, seed=2)
        mine = slice(0, 2) if rank == 0 else slice(2, 5)  # uneven shards
        metric = FrameMetrics(num_steps=3)
        metric.update(pred[mine], target[mine])
        result = metric.compute()  # sums the states across both ranks
        try:
            FrameMetrics().update(pred, target)
            refused = False
        except VidynError:
            refused = True
        queue.put((rank, result, refused))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_sum_their_states() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    pred, target = clips(5, seed=2)
    whole = summarize(frame_metrics(pred, target, names=ALL, dtype=torch.float64))
    for _rank, result, refused in results:
        assert_same(result, whole)
        assert refused, "FrameMetrics without num_steps must refuse to run under DDP"
    assert math.isfinite(whole["vidode_psnr"])
