"""Lightning DataModule over any registered dataset.

Each split is built from the registry with the shared `args` plus that split's overrides, so a
config names a dataset once and, for instance, asks for fewer test clips than training clips.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(self.dataset(split)) >= self.batch_size,
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
