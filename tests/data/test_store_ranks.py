"""A prepared store read by two DDP ranks: each rank its own share of every epoch, resumable mid-epoch.

The loaders are the ones vidyn's datamodule builds for a real Lightning DDP trainer of two ranks (one node
each; NODE_RANK picks the rank, as a launcher sets it), passed through Lightning's own dataloader
preparation, so the test sees what training reads. Clips are identified by their stored bytes: the store's
23 training clips are distinct random videos.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from vidyn.data.datamodule import VideoDataModule
from vidyn.data.prepare import prepare_store
from vidyn.data.store import StoreDataset

N_TRAIN, BATCH, RANKS = 23, 2, 2  # 29 clip files -> 23 train / 3 val / 3 test (folder split fractions 0.1)
ARGS = {"size": 8, "num_frames": 4, "frame_stride": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ranks")
    gen = torch.Generator().manual_seed(0)
    (root / "clips").mkdir()
    for k in range(29):
        torch.save(torch.rand(5, 3, 8, 8, generator=gen), root / "clips" / f"{k:02d}.pt")
    prepare_store("folder", root / "clips", root / "store", size=8, frames=4, stride=1, shard_size=4,
                  progress=False, workers=0)  # fmt: skip
    assert len(StoreDataset(root / "store", "train")) == N_TRAIN
    return root / "store"


def _clip_ids(store: Path) -> dict[bytes, int]:
    ds = StoreDataset(store, "train")
    ids = {ds[i]["frames"].numpy().tobytes(): i for i in range(len(ds))}
    assert len(ids) == len(ds)  # every clip tells itself apart
    return ids


def _datamodule(store: Path, rank: int | None, monkeypatch: pytest.MonkeyPatch, batch: int = BATCH):
    """vidyn's datamodule, attached to a Lightning DDP trainer as rank `rank` of 2 (None: no trainer)."""
    dm = VideoDataModule("folder", {"store": str(store), **ARGS}, batch_size=batch, seed=7)
    if rank is not None:
        monkeypatch.setenv("NODE_RANK", str(rank))
        # Lightning's DDP strategy sets the process-wide rank_zero_only.rank to this trainer's rank; left at
        # 1 it would silence every later test's rank-zero work (logging, TensorBoard files) in this process.
        monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
        dm.trainer = L.Trainer(accelerator="cpu", devices=1, num_nodes=RANKS, strategy="ddp", logger=False,
                               enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
        assert dm.trainer.distributed_sampler_kwargs == {"num_replicas": RANKS, "rank": rank}
    return dm


def _train_loader(dm: VideoDataModule):
    loader = dm.train_dataloader()
    if dm.trainer is None:
        return loader
    connector = dm.trainer._data_connector  # what Lightning does to every training loader under DDP
    prepared = connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING)
    assert prepared is loader  # Lightning keeps vidyn's sampler instead of injecting its own
    return loader


def _epoch(loader, epoch: int, ids: dict[bytes, int], batches: int | None = None) -> list[list[int]]:
    """The clips of each batch the loader yields in `epoch`, by stored bytes, read as Lightning reads them:
    the epoch set on the sampler, then len(loader) batches (never asking for one past the last)."""
    _set_sampler_epoch(loader, epoch)
    out = []
    for batch in itertools.islice(loader, len(loader)):
        out.append([ids[clip.numpy().tobytes()] for clip in batch["frames"]])
        if batches is not None and len(out) == batches:
            break
    return out


def test_two_ranks_read_disjoint_shares_that_are_the_single_process_batches(store, monkeypatch) -> None:
    ids = _clip_ids(store)
    loaders = [_train_loader(_datamodule(store, r, monkeypatch)) for r in range(RANKS)]
    single = _train_loader(_datamodule(store, None, monkeypatch, batch=RANKS * BATCH))
    orders = []
    for epoch in range(3):
        shares = [_epoch(loader, epoch, ids) for loader in loaders]
        one = _epoch(single, epoch, ids)
        # Each rank: floor(23 / 2) = 11 clips, 5 whole batches of 2 (the 6th, incomplete, is dropped).
        assert [len(s) for s in shares] == [5, 5] and all(len(b) == BATCH for s in shares for b in s)
        seen = [[c for b in s for c in b] for s in shares]
        assert not set(seen[0]) & set(seen[1]) and len(set(seen[0])) == 10  # no clip on two ranks
        # Step k of the two ranks together trains on the clips of a single process's step k at batch 4.
        assert [set(a) | set(b) for a, b in zip(*shares, strict=True)] == [set(b) for b in one]
        # And the sampler itself: the ranks split all but 23 mod 2 = 1 clip of the epoch's permutation.
        split = [list(loader.sampler) for loader in loaders]
        assert len(split[0]) == len(split[1]) == 11 and len(set(split[0]) | set(split[1])) == 22
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # a new order every epoch


@pytest.mark.parametrize("stop", ["mid_epoch", "epoch_end"])
def test_resume_continues_each_rank_share(store, monkeypatch, stop: str) -> None:
    """Stopped after 2 batches of epoch 1 (or at the end of epoch 0) and resumed from the position a
    checkpoint keeps (rank 0's, the same on every rank): each rank reads what it would have read."""
    ids = _clip_ids(store)
    for rank in range(RANKS):
        full = _train_loader(_datamodule(store, rank, monkeypatch))
        uninterrupted = [_epoch(full, e, ids) for e in range(3)]

        first = _datamodule(store, rank, monkeypatch)
        loader = _train_loader(first)
        _epoch(loader, 0, ids)
        if stop == "mid_epoch":
            assert _epoch(loader, 1, ids, batches=2) == uninterrupted[1][:2]
            position = first.train_sampler.position(2, epoch_over=False)
        else:
            position = first.train_sampler.position(5, epoch_over=True)

        resumed = _datamodule(store, rank, monkeypatch)
        resumed.resume_sampler(position)  # what the checkpoint callback does before the loaders exist
        loader = _train_loader(resumed)
        rest = _epoch(loader, 1, ids)
        assert rest == (uninterrupted[1][2:] if stop == "mid_epoch" else uninterrupted[1])
        assert _epoch(loader, 2, ids) == uninterrupted[2]


_READER = """
import sys
from pathlib import Path
store = Path(sys.argv[1]).resolve()

def read_only(event, args):  # refuses (raises in) any write-mode open, lock or writable map in the store
    if event == "open" and args[0] is not None and str(args[0]).startswith(str(store)):
        mode, flags = args[1] or "r", args[2] or 0
        if any(m in mode for m in "wax+") or flags & 3:  # O_WRONLY | O_RDWR
            raise PermissionError(f"store opened for writing: {args}")
    if event == "fcntl.flock" or (event == "mmap.__new__" and args[2] != 1):  # 1: mmap.ACCESS_READ
        raise PermissionError(f"store locked or mapped writable: {event} {args}")

sys.addaudithook(read_only)
try:
    open(store / "manifest.json", "a")
    sys.exit("the audit hook let a write through")
except PermissionError:
    pass
import hashlib
import itertools
from torch.utils.data import DataLoader
from vidyn.data.store import StoreDataset

ds = StoreDataset(store, "train")
ds[0]  # the parent maps shard 0 before its workers fork: they inherit that read-only map
digests = {}
for batch in DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=True):
    for frames in batch["frames"]:
        digests[len(digests)] = hashlib.sha1(frames.numpy().tobytes()).hexdigest()
print(" ".join(digests[i] for i in range(len(ds))))
"""


def test_many_readers_open_the_store_read_only_at_once(store, tmp_path) -> None:
    """Two processes (two ranks) with two loader workers each read the whole store at the same time: no
    write-mode open, no lock, no writable map (an audit hook refuses them in every process), and every
    process reads every clip right."""
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent(_READER))
    before = {p.name: p.stat().st_mtime_ns for p in store.iterdir()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), str(store)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for _ in range(RANKS)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    ds = StoreDataset(store, "train")
    expected = " ".join(hashlib.sha1(ds[i]["frames"].numpy().tobytes()).hexdigest() for i in range(len(ds)))
    assert [out.strip() for out, _ in outs] == [expected, expected]
    assert {p.name: p.stat().st_mtime_ns for p in store.iterdir()} == before  # nothing was written
