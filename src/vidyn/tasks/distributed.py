"""Multi-process training: what the launcher (torchrun, SLURM, Lightning's own) says about this process.

vidyn does not launch processes itself. Under `torchrun` (or `srun`), every process runs `python -m vidyn
train ...`; torchrun puts RANK / WORLD_SIZE / LOCAL_WORLD_SIZE / NODE_RANK in the environment, and
Lightning's own launcher (`trainer.devices=N` on one machine) restarts the command with LOCAL_RANK /
NODE_RANK set. From these:

- `launch_settings` fills `devices` / `num_nodes` / `strategy` the user left at "auto" / 1, so the same
  config trains in one process or under torchrun; DDP gets a bounded collective timeout
  (`trainer.dist_timeout`), so a rank that dies stops the others with an error instead of a 30-minute hang.
- `is_rank_zero` says whether this process is rank 0, the only one that writes files (config.yaml, the
  run folder, export, metrics); Lightning already keeps checkpoints and loggers to rank 0 (ModelCheckpoint
  takes rank 0's folder), so the folder another rank would have picked is never created.
- `peer_lost` / `peer_lost_error` turn the backend's failure when a rank dies into one line.
- `release_process_group` ends this process's part of the job before the interpreter exits: left to
  interpreter teardown, the gloo process group's threads were sometimes destroyed still running
  ("terminate called without an active exception", exit -6), torchrun then reported the rank failed and
  the other node's agent lost its rendezvous store (seen in tests/engine/test_torchrun.py).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from vidyn.errors import VidynError


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def world_size() -> int:
    """Processes in the job, as the launcher says (1 outside a multi-process launch)."""
    return _env_int("WORLD_SIZE") or 1


def planned_world_size(devices: Any, num_nodes: int, accelerator: str) -> int:
    """Processes the run will train in: the launcher's WORLD_SIZE, else what the trainer config asks
    Lightning to start (`devices` x `num_nodes`; "auto" devices = every GPU when training on GPUs)."""
    if _env_int("WORLD_SIZE"):
        return world_size()
    if devices == "auto":
        import torch

        devices = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 1
    return max(1, devices if isinstance(devices, int) else 1) * max(1, num_nodes)


def is_rank_zero() -> bool:
    """Rank 0 by RANK (torchrun), else node 0's first process (Lightning's launcher sets only these)."""
    rank = _env_int("RANK")
    if rank is not None:
        return rank == 0
    return not (_env_int("NODE_RANK") or _env_int("LOCAL_RANK"))


def launch_settings(
    devices: Any, num_nodes: int, strategy: Any, timeout_s: float, accelerator: str = "auto"
) -> dict[str, Any]:
    """Trainer `devices` / `num_nodes` / `strategy` for this launch.

    Under torchrun with `devices="auto"` and `num_nodes=1`, they come from LOCAL_WORLD_SIZE and
    WORLD_SIZE (Lightning would otherwise refuse the mismatch with torchrun's WORLD_SIZE). A multi-process
    "auto" or "ddp" strategy becomes DDP with `timeout_s` for its collectives (gloo on CPU, NCCL on GPU).
    """
    size, local_size = world_size(), _env_int("LOCAL_WORLD_SIZE")
    if local_size and size > 1 and devices == "auto" and num_nodes == 1:
        devices, num_nodes = local_size, size // local_size
    if planned_world_size(devices, num_nodes, accelerator) > 1 and strategy in ("auto", "ddp"):
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(timeout=datetime.timedelta(seconds=float(timeout_s)))
    return {"devices": devices, "num_nodes": num_nodes, "strategy": strategy}


# What gloo and NCCL say when a peer stops answering or vanishes (torch raises these as RuntimeError or
# torch.distributed.DistError, without naming the rank that is gone).
_PEER_LOST = (
    "Timed out waiting",
    "Connection closed by peer",
    "Connection reset by peer",
    "timed out",
    "NCCL",
)


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` is a collective operation that failed because another rank died or hung."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and any(s in str(exc) for s in _PEER_LOST)
    )


def peer_lost_error(exc: BaseException, trainer: Any) -> VidynError:
    """The one-line error of a rank whose peers stopped answering (instead of the backend's traceback)."""
    detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
    timeout = getattr(trainer.strategy, "_timeout", None)
    within = f" within trainer.dist_timeout={timeout.total_seconds():g} s" if timeout else ""
    run = Path(trainer.default_root_dir) if trainer.is_global_zero else Path("RUN_FOLDER")
    return VidynError(
        f"rank {trainer.global_rank} of {trainer.world_size}: another rank stopped answering (a collective "
        f"operation failed{within}: {detail}); a rank has likely died, its log says why. Rank 0's run "
        f"folder keeps {run / 'checkpoints' / 'last.ckpt'}: relaunch every node with the same torchrun "
        f"command and `vidyn train --resume {run}`"
    )


def release_process_group() -> None:
    """Destroy the default process group if this process has one (a no-op otherwise); local, so a rank
    that finished need not wait for rank 0's export and evaluation."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001  (best effort at exit: never mask the run's own error)
            pass
