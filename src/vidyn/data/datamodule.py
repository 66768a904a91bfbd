"""Lightning DataModule over any registered dataset.

Each split is built from the registry with the shared `args` plus that split's overrides, so a
config names a dataset once and, for instance, asks for fewer test clips than training clips.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

import vidyn.data.registered  # noqa: F401  (registers the dataset builders)
from vidyn.errors import VidynError
from vidyn.registry import DATASETS

SPLITS = ("train", "val", "test")


def build_dataset(
    name: str,
    split: str,
    args: dict[str, Any] | None = None,
    split_args: dict[str, dict[str, Any]] | None = None,
) -> Dataset:
    kwargs = {**(args or {}), **((split_args or {}).get(split, {}))}
    return DATASETS.build(name, split=split, **kwargs)


def class_names_of(dataset: Any, num_classes: int | None = None) -> list[str]:
    """A dataset's class names (`class_names` or `classes` attribute), else "0", "1", ... ."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    if names is None and hasattr(dataset, "dataset"):  # torch.utils.data.Subset
        return class_names_of(dataset.dataset, num_classes)
    if names is None:
        if num_classes is None:
            raise VidynError("the dataset names no classes (class_names/classes); cannot label predictions")
        return [str(i) for i in range(num_classes)]
    return [str(n) for n in names]


class ResumableRandomSampler(RandomSampler):
    """torch's RandomSampler (the same order from the same generator) that resumes in the middle of an epoch.

    `position(batches, epoch_over)` says where training stands (`vidyn.tasks.checkpointing` stores it in
    checkpoints; the sampler itself runs ahead of training by the loader's prefetch): the epoch, the
    generator's state when its permutation was drawn and the batches of it already trained, or, at the end
    of an epoch, the generator's state then. `resume(position)` continues from there with the random draws
    of an uninterrupted run. The DataLoader draws its workers' base seed from the same generator whenever
    it starts an iterator (every epoch, or once with persistent workers), and after resuming Lightning may
    start iterators it never reads, so the permutation is remembered per epoch (`set_epoch`, which
    Lightning calls) and drawn again from the same state whenever an iterator of that epoch starts. A
    subclass of RandomSampler, so under DDP Lightning still replaces it with a DistributedSampler (whose
    position is not restored).
    """

    def __init__(
        self, data_source: Dataset, generator: torch.Generator, batch_size: int, persistent: bool = False
    ) -> None:
        super().__init__(data_source, generator=generator)
        self.batch_size, self.persistent, self.epoch = batch_size, persistent, 0
        self._start: tuple[int, torch.Tensor] | None = None  # (epoch, generator state at its permutation)
        self._skip = (0, 0)  # (epoch, samples already trained in it when resumed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def position(self, batches: int, epoch_over: bool) -> dict[str, Any]:
        if epoch_over or self._start is None:
            return {"epoch": self.epoch + 1, "generator": self.generator.get_state(), "batches": 0, "over": 1}
        epoch, state = self._start
        return {"epoch": epoch, "generator": state.clone(), "batches": int(batches), "over": 0}

    def resume(self, position: dict[str, Any]) -> None:
        self.epoch, state = position["epoch"], position["generator"]
        if position["over"] and not self.persistent:
            # Between an epoch's end and the next permutation the DataLoader starts an iterator, which
            # draws one int64 (its workers' base seed) from the generator (torch.utils.data.dataloader).
            gen = torch.Generator()
            gen.set_state(state)
            torch.empty((), dtype=torch.int64).random_(generator=gen)
            state = gen.get_state()
        self._start = (position["epoch"], state)
        self._skip = (position["epoch"], position["batches"] * self.batch_size)

    def skipped(self) -> int:
        """Samples of the current epoch that a resumed run skips (trained before it was interrupted)."""
        return self._skip[1] if self._skip[0] == self.epoch else 0

    def __iter__(self) -> Iterator[int]:
        if self._start is not None and self._start[0] == self.epoch:
            self.generator.set_state(self._start[1])  # this epoch's permutation was drawn before: again
        else:
            self._start = (self.epoch, self.generator.get_state())
        yield from itertools.islice(super().__iter__(), self.skipped(), None)


class ResumableDistributedSampler(DistributedSampler):
    """One rank's share of each epoch's training order under DDP; resumes mid-epoch like the single process.

    Every rank draws the epoch's permutation of all N clips exactly as a single process does (`inner`, a
    `ResumableRandomSampler` from the same seed, counting global batches of ranks x batch_size), keeps its
    first ranks x floor(N / ranks) positions and takes positions rank, rank + ranks, ... of them. So in one
    epoch no clip goes to two ranks, together the ranks read every clip but the last N mod ranks of that
    epoch's permutation (DistributedSampler's `drop_last`; other clips each epoch; with fewer clips than
    ranks the order is repeated instead, so every rank gets one), and the k-th batches of all ranks hold
    the clips of a single process's k-th batch at the global batch size. The position a checkpoint keeps
    is the inner sampler's, the same on every rank. A DistributedSampler, so Lightning keeps it rather than
    putting its own (unresumable, padded with repeated clips) in the loader.
    """

    def __init__(self, inner: ResumableRandomSampler, num_replicas: int, rank: int) -> None:
        n = len(inner.data_source)
        super().__init__(inner.data_source, num_replicas, rank, shuffle=True, drop_last=n >= num_replicas)
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.inner.set_epoch(epoch)

    def position(self, batches: int, epoch_over: bool) -> dict[str, Any]:
        return self.inner.position(batches, epoch_over)

    def resume(self, position: dict[str, Any]) -> None:
        self.inner.resume(position)

    def __iter__(self) -> Iterator[int]:
        # The epoch's permutation past the global batches already trained (whole global batches, so a
        # multiple of the ranks), trimmed or padded to make the whole epoch `total_size` long. Never read
        # past what is kept: a single process's loader stops at its last whole batch, so its sampler never
        # draws RandomSampler's trailing permutation either, and both generators stay in step.
        skipped = self.inner.skipped()
        keep = self.total_size - skipped
        order = list(itertools.islice(self.inner, min(keep, len(self.inner.data_source) - skipped)))
        order = list(itertools.islice(itertools.cycle(order), keep)) if order else []
        yield from order[self.rank :: self.num_replicas]


class VideoDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        splits: dict[str, dict[str, Any]] | None = None,
        *,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.name, self.args, self.split_args = name, dict(args or {}), dict(splits or {})
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self._datasets: dict[str, Dataset] = {}
        self.train_sampler: ResumableRandomSampler | ResumableDistributedSampler | None = None
        self._sampler_position: dict[str, Any] | None = None

    def resume_sampler(self, position: dict[str, Any]) -> None:
        """Continue the training order from a checkpoint's sampler position (before the loader is built)."""
        self._sampler_position = position
        if self.train_sampler is not None:
            self.train_sampler.resume(position)

    def dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            self._datasets[split] = build_dataset(self.name, split, self.args, self.split_args)
        return self._datasets[split]

    def check_splits(self, splits: tuple[str, ...] = SPLITS) -> dict[str, int]:
        """Clips per split; refuses, in one line before any training, a split that is empty or unreadable."""
        counts: dict[str, int | str] = {}
        for split in dict.fromkeys(splits):
            try:
                counts[split] = len(self.dataset(split))
            except VidynError as exc:
                counts[split] = f"error: {exc}"
        bad = [s for s, n in counts.items() if not isinstance(n, int) or n == 0]
        if bad:
            listed = "; ".join(
                f"{s}: {n} clips" if isinstance(n, int) else f"{s}: {n}" for s, n in counts.items()
            )
            raise VidynError(
                f"dataset {self.name!r} has no usable {'/'.join(bad)} split ({listed}); every run needs "
                "train, val and test clips: add data or change the split settings (e.g. "
                "data.args.val_fraction / test_fraction, or train/ val/ test/ folders)"
            )
        return counts  # type: ignore[return-value]

    def _ranks(self) -> tuple[int, int]:
        """(ranks, this rank) of the DDP launch this module trains in, from its trainer; (1, 0) outside."""
        trainer = getattr(self, "trainer", None)  # attached by Lightning before it asks for the loaders
        kwargs = getattr(trainer, "distributed_sampler_kwargs", None) or {}
        return int(kwargs.get("num_replicas", 1)), int(kwargs.get("rank", 0))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The loader and its sampler share one seeded generator, as with `shuffle=True, generator=gen`: the
        # loader draws its workers' base seed from it at each epoch, the sampler its permutation.
        gen = torch.Generator().manual_seed(self.seed)
        dataset, sampler = self.dataset(split), None
        if shuffle:
            ranks, rank = self._ranks()
            inner = ResumableRandomSampler(dataset, gen, self.batch_size * ranks, self.num_workers > 0)
            sampler = inner if ranks == 1 else ResumableDistributedSampler(inner, ranks, rank)
            if self._sampler_position is not None:
                sampler.resume(self._sampler_position)
                self._sampler_position = None
            self.train_sampler = sampler
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            sampler=sampler,
            drop_last=sampler is not None and len(sampler) >= self.batch_size,  # len: this rank's share
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=gen if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
