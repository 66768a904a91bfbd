"""`release_process_group`: `vidyn train` closes its DDP group before the interpreter exits."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from vidyn.tasks.distributed import release_process_group


def test_release_destroys_the_group_and_is_a_no_op_without_one(tmp_path: Path) -> None:
    release_process_group()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    release_process_group()
    assert not dist.is_initialized()
    release_process_group()
