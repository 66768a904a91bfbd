"""`vidyn prepare`: decode a video dataset once into a prepared-clip store (format: `vidyn.data.store`).

Each video is decoded once, sequentially, in a worker process (spawned, so no decoder or thread state is
inherited; each worker creates its own decoders), centre-cropped and resized while decoding, and cut into
`clips_per_video` evenly spaced windows of `frames` frames `stride` apart. The parent writes the clips of
consecutive video ranges as uint8 shards. Work is handed out a few videos ahead of the writer, so memory
stays bounded however slow one video is.

Resuming: the video list is sorted by path and shard k holds the videos [kV, (k+1)V), so a re-run skips
the shards the manifest already lists and produces the same store, byte for byte, as an uninterrupted run.
A re-run with other parameters (or another video list) is refused. Unreadable files are skipped, listed in
the manifest with the reason and counted in the summary; the run still succeeds.

Spawned workers re-import the caller's main module: call `prepare_store` from a script under
`if __name__ == "__main__":` (the CLI does), or pass `workers=0`.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vidyn.data.folder import FolderIndex, read_clip_file
from vidyn.data.kinetics import KineticsClip, KineticsIndex, missing_csv
from vidyn.data.store import StoreWriter, VideoEntry, sliding_windows, take_clip, window_indices
from vidyn.data.ucf101 import UCF101Index
from vidyn.errors import VidynError
from vidyn.fileio import atomic_path

DATASETS = ("ucf101", "kinetics", "folder")
MISSING = "missing.csv"  # Kinetics: clips the CSVs list that are not on disk, in the CSVs' own format
ALL_WINDOWS_ESTIMATE = 64  # clips per video assumed when sizing shards for clips_per_video=0 (all windows)


@dataclass(frozen=True)
class _Job:
    video: int
    path: str
    size: int
    grayscale: bool
    frames: int
    stride: int
    clips_per_video: int  # 0: every window, `window_stride` frames apart
    pt_fps: float
    window_stride: int = 1


@dataclass
class _Result:
    video: int
    clips: np.ndarray | None  # uint8 (K, T, H, W, C)
    times: np.ndarray | None  # float64 (K, T)
    reason: str | None = None


def _decode(job: _Job) -> _Result:
    """Runs in a worker: decode one file and cut its windows; never raises for a bad file."""
    try:
        frames, times, fps = read_clip_file(
            job.path, size=job.size, grayscale=job.grayscale, pt_fps=job.pt_fps
        )
        if job.clips_per_video == 0:
            windows = sliding_windows(len(times), job.frames, job.stride, job.window_stride)
        else:
            windows = window_indices(len(times), job.frames, job.stride, job.clips_per_video)
        cut = [take_clip(frames, times, idx, fps) for idx in windows]
        return _Result(job.video, np.stack([c for c, _ in cut]), np.stack([t for _, t in cut]))
    except VidynError as e:  # VideoReadError and refused .pt files: the message names the problem
        return _Result(job.video, None, None, str(e))
    except Exception as e:  # a decoder failure we did not foresee must not end a multi-hour run
        return _Result(job.video, None, None, f"{type(e).__name__}: {e}")


def _init_worker() -> None:
    torch.set_num_threads(1)  # parallelism comes from the processes; resizing runs in torch


def _in_order(
    executor: Executor, fn: Callable[[_Job], _Result], jobs: Iterable[_Job], ahead: int
) -> Iterator[_Result]:
    """Results in job order, keeping at most `ahead` jobs in flight (bounded memory)."""
    todo, flight = iter(jobs), deque()
    for job in todo:
        flight.append(executor.submit(fn, job))
        if len(flight) >= ahead:
            break
    while flight:
        result = flight.popleft().result()
        job = next(todo, None)
        if job is not None:
            flight.append(executor.submit(fn, job))
        yield result


def _record(video: int, window: int, entry: VideoEntry, times: np.ndarray) -> dict[str, Any]:
    return {
        "video": video,
        "window": window,
        "label": entry.label,
        "class": entry.class_name,
        "group": entry.group,
        "clip": entry.clip,
        "source": entry.source,
        "split": entry.split,
        "times": times.tolist(),
    }


def _video_list(
    dataset: str,
    root: Path,
    fold: int,
    classes: Sequence[str] | None,
    val_fraction: float,
    test_fraction: float,
    labels: bool | None = None,
) -> tuple[list[VideoEntry], list[str], list[KineticsClip]]:
    """The videos to decode (sorted by path), the class names, and the listed clips missing on disk."""
    missing: list[KineticsClip] = []
    if dataset == "ucf101":  # official train/test of the fold; validation is carved when the store is read
        index = UCF101Index(root, fold=fold, classes=classes, val_groups=0.0)
        entries = index.train + index.test
    elif dataset == "kinetics":  # the CSVs' own train / val / test
        index = KineticsIndex(root, classes=classes)
        entries, missing = index.entries(), index.missing
    else:
        fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}
        index = FolderIndex(root, classes=classes, labels=labels, **fractions)
        entries = [e for split in ("train", "val", "test") for e in index.entries(split)]
    return sorted(entries, key=lambda e: e.source), index.classes, missing


def _check_args(
    dataset: str, size: int, frames: int, stride: int, shard_size: int, clips_per_video: int, workers: int,
    window_stride: int | None,
) -> None:  # fmt: skip
    if dataset not in DATASETS:
        raise VidynError(f"prepare supports datasets {', '.join(DATASETS)}; got {dataset!r}")
    if min(size, frames, stride, shard_size) < 1 or clips_per_video < 0 or workers < 0:
        raise VidynError(
            "size, frames, stride and shard_size must be >= 1, clips_per_video >= 0 (0 = all windows) and "
            "workers >= 0"
        )
    if window_stride is not None and window_stride < 1:
        raise VidynError(f"window_stride must be >= 1 frame; got {window_stride}")


def _store_params(
    dataset: str, classes: Sequence[str] | None, decoding: dict[str, Any], fold: int, folder: dict[str, Any],
    window_stride: int, entries: list[VideoEntry],
) -> dict[str, Any]:  # fmt: skip
    """A store's identity: its decoding parameters and a hash of its video list (a resumed or re-run
    `prepare` must match it). Keys that older stores lack are only added when they differ from then."""
    params = {"dataset": dataset, "classes": list(classes) if classes is not None else None, **decoding}
    if dataset == "ucf101":
        params["fold"] = fold
    elif dataset == "folder":
        params |= {k: v for k, v in folder.items() if k != "labels" or v is not None}
    if decoding["clips_per_video"] == 0:
        params["window_stride"] = window_stride
    listing = "\n".join(f"{e.source}\t{e.label}\t{e.split}" for e in entries)
    params["video_list_sha1"] = hashlib.sha1(listing.encode("utf-8")).hexdigest()
    return params


@contextlib.contextmanager
def _decoded(jobs: Iterable[_Job], workers: int) -> Iterator[Iterator[_Result]]:
    """Decode results in job order: in this process (`workers=0`) or in a pool of spawned processes."""
    if workers == 0:
        yield map(_decode, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    try:
        yield _in_order(executor, _decode, jobs, ahead=4 * workers)
        executor.shutdown()
    except BrokenProcessPool as e:
        raise VidynError(
            "a prepare worker process died (out of memory, a decoder crash, or prepare_store called from a "
            "script without `if __name__ == '__main__':`); re-run to resume, or use workers=0 to decode "
            "in this process"
        ) from e
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _write_shard(
    writer: StoreWriter, k: int, results: Iterator[_Result], entries: list, clip_shape: tuple, tick: Any
) -> None:
    """Decode results of shard k's videos (in video order) into the shard, its records and skips."""
    clips, records, skipped = [], [], []
    for i in writer.shard_videos(k):
        result, entry = next(results), entries[i]
        assert result.video == i, "results must arrive in video order"
        if result.clips is None:
            skipped.append({"file": entry.source, "reason": result.reason, "video": i})
        else:
            clips.append(result.clips)
            records += [_record(i, w, entry, clip_times) for w, clip_times in enumerate(result.times)]
        tick()
    data = np.concatenate(clips) if clips else np.zeros((0, *clip_shape), np.uint8)  # (N, T, H, W, C)
    writer.write_shard(k, data, records, skipped)


def _decode_pending(
    writer: StoreWriter, entries: list, decode: tuple, clip_shape: tuple[int, ...], workers: int,
    progress: bool, name: str,
) -> tuple[dict[str, Any], int]:  # fmt: skip
    """Decode the videos of the shards not yet written and write them, with a progress bar; (the
    finished manifest, the number of videos already in the store from an earlier run). `decode`: the
    `_Job` fields after the video (size, grayscale, frames, stride, clips_per_video, pt_fps, window
    stride)."""
    clips_per_video = decode[4]
    pending = writer.pending_shards()
    todo = [i for k in pending for i in writer.shard_videos(k)]
    jobs = (_Job(i, str(entries[i].path), *decode) for i in todo)
    done = len(entries) - len(todo)
    per_video = clips_per_video or 1  # every window: the bar counts videos
    bar = tqdm(
        total=len(entries) * per_video,
        initial=done * per_video,
        unit="clip" if clips_per_video else "video",
        desc=f"prepare {name}",
        disable=not progress,
        smoothing=0.05,
    )
    try:
        with _decoded(jobs, workers) as results:
            for k in pending:
                _write_shard(writer, k, results, entries, clip_shape, lambda: bar.update(per_video))
            manifest = writer.finish()
    finally:
        bar.close()
        writer.close()
    return manifest, done


def _open_writer(
    dataset: str, out: Path, root: Path, params: dict[str, Any], class_names: list[str], num_videos: int,
    clip_shape: tuple[int, ...], videos_per_shard: int, missing: list[KineticsClip],
) -> StoreWriter:  # fmt: skip
    """The writer of the store at `out` (new, or resumed when `params` match); Kinetics also gets
    `out/missing.csv`, written after the writer's checks so that a refused `out` is left as it was."""
    writer = StoreWriter(
        out, params, class_names, num_videos, videos_per_shard, clip_shape, str(root.resolve())
    )
    if dataset == "kinetics":
        with atomic_path(out / MISSING) as tmp:
            tmp.write_text(missing_csv(missing), encoding="utf-8")
    return writer


def _summary(
    manifest: dict[str, Any], num_videos: int, missing: list[KineticsClip], start: float, out: Path, done: int
) -> dict[str, Any]:
    """`prepare_store`'s result from the finished manifest; `start` is `time.perf_counter()` at its call."""
    return {
        "videos": num_videos,
        "clips": len(manifest["clips"]),
        "skipped": [{"file": s["file"], "reason": s["reason"]} for s in manifest["skipped"]],
        "seconds": time.perf_counter() - start,
        "store": str(out),
        "resumed_videos": done,
        "missing": len(missing),
    }


def prepare_store(
    dataset: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fold: int = 1,
    size: int = 64,
    frames: int = 16,
    stride: int = 2,
    clips_per_video: int = 1,
    grayscale: bool = False,
    classes: Sequence[str] | None = None,
    workers: int = 2,
    shard_size: int = 256,
    progress: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    pt_fps: float = 25.0,
    window_stride: int | None = None,
    labels: bool | None = None,
) -> dict[str, Any]:
    """Decode `dataset` ("ucf101", "kinetics" or "folder") under `root` into a store at `out`; resumes.

    `clips_per_video`: evenly spaced windows per video, or 0 for every window, `window_stride` frames
    apart (default: two clip strides). `shard_size` is the target number of clips per shard (shards hold
    whole videos); `workers=0` decodes in this process. `val_fraction`, `test_fraction`, `pt_fps` and
    `labels` (None: class folders when the root holds only folders; False: unlabelled) apply to "folder"
    only (UCF101 keeps its official train/test lists; its validation groups are chosen when the store is
    read).
    Kinetics (`root` holds the official CSVs and the clips, see `vidyn.data.kinetics`): clips the CSVs
    list but the disk lacks are counted in `missing` and listed in `out/missing.csv` (the CSVs' format).
    Returns `{"videos", "clips", "skipped": [{"file", "reason"}], "seconds", "store", "resumed_videos",
    "missing"}`.
    """
    start = time.perf_counter()
    _check_args(dataset, size, frames, stride, shard_size, clips_per_video, workers, window_stride)
    window_stride = window_stride or 2 * stride
    root, out = Path(root).expanduser(), Path(out).expanduser()
    entries, class_names, missing = _video_list(
        dataset, root, fold, classes, val_fraction, test_fraction, labels
    )
    if not entries:
        raise VidynError(f"no videos found under {root} for the chosen classes; check root and classes")
    decoding = {"size": size, "frames": frames, "stride": stride, "clips_per_video": clips_per_video}
    decoding |= {"grayscale": grayscale, "shard_size": shard_size}
    folder = dict(val_fraction=val_fraction, test_fraction=test_fraction, pt_fps=pt_fps, labels=labels)
    params = _store_params(dataset, classes, decoding, fold, folder, window_stride, entries)
    clip_shape = (frames, size, size, 1 if grayscale else 3)
    videos_per_shard = max(1, shard_size // (clips_per_video or ALL_WINDOWS_ESTIMATE))
    writer = _open_writer(
        dataset, out, root, params, class_names, len(entries), clip_shape, videos_per_shard, missing
    )
    decode = (size, grayscale, frames, stride, clips_per_video, pt_fps, window_stride)
    manifest, done = _decode_pending(writer, entries, decode, clip_shape, workers, progress, out.name)
    return _summary(manifest, len(entries), missing, start, out, done)
