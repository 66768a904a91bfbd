"""The prepared-clip store (the clip-selection helpers every video dataset shares are in `clips`).

A store is a folder written by `vidyn prepare` (`vidyn.data.prepare.prepare_store`):

    manifest.json    parameters, class names, completed shards, one record per clip, skipped files
    shard_00000.npy  uint8 (N, T, H, W, C): the clips of videos [0, V) of the sorted video list
    shard_00001.npy  the clips of videos [V, 2V), ...

Shard k always holds the videos whose list positions are in [kV, (k+1)V), clips in list order, so every
shard and the whole manifest depend only on the video list and the parameters: never on which worker
finished first, nor on where an earlier run was interrupted. That is what makes a resumed run produce
exactly the store an uninterrupted run would.

Crash safety: a shard is written to a temporary name, fsynced and renamed into place, then the manifest
(rewritten the same way) starts listing it. A run killed at any moment leaves only completed shards in
the manifest; a shard file that the manifest does not list yet is simply rewritten on resume. A lock file
(`flock`, released by the kernel even on kill -9) keeps two runs from writing one store.

Reading (`StoreDataset`) memory-maps the shards and copies one clip out per item: no decoding at all.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vidyn.data.clips import (  # noqa: F401  (re-exported: the datasets import them from here)
    CLIP_SAMPLING,
    VideoEntry,
    carve_val_groups,
    clip_indices,
    clip_sample,
    fit_stride,
    sliding_windows,
    take_clip,
    window_indices,
)
from vidyn.data.video_io import frames_to_tensor
from vidyn.errors import VidynError
from vidyn.fileio import TEMP_GLOB, atomic_path

try:  # POSIX only; elsewhere the store is simply not protected against two concurrent writers
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
FORMAT, VERSION = "vidyn-clip-store", 1
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as in video_io


# ---------------------------------------------------------------- writing


def _atomic_write(path: Path, payload: bytes | np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if isinstance(payload, np.ndarray):
            np.save(f, payload, allow_pickle=False)
        else:
            f.write(payload)


def read_manifest(store_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(store_dir) / MANIFEST
    if not path.is_file():
        raise VidynError(
            f"{store_dir} is not a prepared store (no {MANIFEST}); create it with `vidyn prepare`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise VidynError(f"{path} is not a {FORMAT} v{VERSION} manifest; prepare the store again")
    return manifest


def check_store(store: str | os.PathLike, expected: dict[str, Any]) -> None:
    """Refuse a store whose parameters differ from what the dataset config asks for."""
    params = read_manifest(store)["params"]
    wrong = [f"{k}={params.get(k)!r} (config: {v!r})" for k, v in expected.items() if params.get(k) != v]
    if wrong:
        raise VidynError(
            f"store {store} was prepared with {', '.join(wrong)}; prepare a store with these settings "
            "or change the dataset arguments to match"
        )


class StoreWriter:
    """Writes a store shard by shard; resumes a store left by an interrupted run with the same parameters.

    `params` must determine the store's content completely (the caller includes a fingerprint of the video
    list); a store on disk with other params is refused rather than mixed.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        params: dict[str, Any],
        classes: Sequence[str],
        num_videos: int,
        videos_per_shard: int,
        clip_shape: tuple[int, int, int, int],
        root: str,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.params = json.loads(json.dumps(params))  # tuples -> lists, as they come back from disk
        self.classes, self.root = list(classes), root
        self.num_videos, self.videos_per_shard = num_videos, videos_per_shard
        self.num_shards = math.ceil(num_videos / videos_per_shard)
        self.clip_shape = tuple(clip_shape)
        self._clips: dict[int, list[dict[str, Any]]] = {}  # shard -> clip records
        self._skipped: dict[int, list[dict[str, Any]]] = {}
        self._lock_fd = self._lock()
        try:
            for tmp in self.out.glob(TEMP_GLOB):  # left by a killed run; never listed anywhere
                tmp.unlink()
            if (self.out / MANIFEST).exists():
                self._resume(read_manifest(self.out))
            else:
                foreign = [p.name for p in self.out.iterdir() if p.name != ".lock"]
                if foreign:
                    raise VidynError(
                        f"{self.out} is not empty and holds no prepared store ({foreign[0]}, ...); "
                        "pick a new --out"
                    )
                self._write_manifest(complete=False)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> int | None:
        if fcntl is None:  # pragma: no cover
            return None
        fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):  # no locking on this file system (some NFS)
                return None
            raise VidynError(
                f"another `vidyn prepare` is writing {self.out}; wait for it or pick a new --out"
            ) from e
        return fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _identity(self) -> dict[str, Any]:
        return {"params": self.params, "classes": self.classes, "num_videos": self.num_videos}

    def _resume(self, manifest: dict[str, Any]) -> None:
        old = {key: manifest.get(key) for key in ("params", "classes", "num_videos")}
        if old != self._identity():
            changed = sorted(k for k in self.params if old["params"].get(k) != self.params[k]) or ["classes"]
            raise VidynError(
                f"{self.out} holds a store prepared with different parameters ({', '.join(changed)}); "
                f"pick a new --out or delete {self.out}"
            )
        for shard in manifest["shards"]:
            k, path = shard["index"], self.out / shard["file"]
            try:
                stored = np.load(path, mmap_mode="r")
                ok = stored.shape == (shard["clips"], *self.clip_shape) and stored.dtype == np.uint8
            except (OSError, ValueError):
                ok = False
            if ok:  # otherwise (deleted or damaged by hand) the shard is simply decoded again
                self._clips[k] = [
                    {key: v for key, v in c.items() if key != "index"}
                    for c in manifest["clips"]
                    if c["shard"] == k
                ]
                self._skipped[k] = [s for s in manifest["skipped"] if self.shard_of(s["video"]) == k]

    def shard_of(self, video: int) -> int:
        return video // self.videos_per_shard

    def shard_videos(self, shard: int) -> range:
        return range(shard * self.videos_per_shard, min((shard + 1) * self.videos_per_shard, self.num_videos))

    def pending_shards(self) -> list[int]:
        return [k for k in range(self.num_shards) if k not in self._clips]

    def write_shard(
        self, shard: int, clips: np.ndarray, records: list[dict[str, Any]], skipped: list[dict[str, Any]]
    ) -> None:
        """Commit one shard: uint8 clips `(N, T, H, W, C)` with one record per clip, plus skipped files."""
        if clips.shape != (len(records), *self.clip_shape) or clips.dtype != np.uint8:
            raise ValueError(f"shard {shard}: clips {clips.dtype} {clips.shape} do not match the records")
        _atomic_write(self.out / f"shard_{shard:05d}.npy", np.ascontiguousarray(clips))
        self._clips[shard] = [{**r, "shard": shard, "offset": i} for i, r in enumerate(records)]
        self._skipped[shard] = list(skipped)
        self._write_manifest(complete=False)

    def _write_manifest(self, complete: bool) -> None:
        shards, clips, skipped = [], [], []
        for k in sorted(self._clips):
            videos = self.shard_videos(k)
            span = [videos.start, videos.stop]
            entry = {"index": k, "file": f"shard_{k:05d}.npy", "videos": span, "clips": len(self._clips[k])}
            shards.append({**entry, "first_clip": len(clips)})
            clips += [{"index": len(clips) + i, **c} for i, c in enumerate(self._clips[k])]
            skipped += self._skipped[k]
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            **self._identity(),
            "root": self.root,
            "videos_per_shard": self.videos_per_shard,
            "num_shards": self.num_shards,
            "clip_shape": list(self.clip_shape),
            "complete": complete,
            "shards": shards,
            "clips": clips,
            "skipped": skipped,
        }
        _atomic_write(self.out / MANIFEST, json.dumps(manifest).encode())

    def finish(self) -> dict[str, Any]:
        """Mark the store complete (all shards written) and release the lock; returns the manifest."""
        if self.pending_shards():
            raise RuntimeError(f"shards {self.pending_shards()} of {self.out} were never written")
        self._write_manifest(complete=True)
        self.close()
        return read_manifest(self.out)


# ---------------------------------------------------------------- reading


class StoreDataset(Dataset):
    """Clips of a prepared store, by memory map: one `np.array(shard[offset])` copy per item.

    `split` selects the clips of a split: for a folder or Kinetics store the split fixed at prepare time;
    for a UCF101 store the official train/test list of the store's fold, with validation carved from the
    train list by group (`val_groups`, `seed`: see `carve_val_groups`), so one store serves any validation
    choice. `classes` keeps a subset, re-indexed 0..K-1: in classInd order for UCF101 and in the CSVs'
    (sorted) vocabulary order for Kinetics (labels fixed by an official list), in the given order for a
    folder store. `grayscale=True` on an RGB store converts to BT.601 luma on read; `None` keeps the
    store's channels. Each stored clip is one item (no clip sampling: the windows were chosen at prepare
    time); times are the clip's real presentation timestamps.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike,
        split: str,
        *,
        classes: Sequence[str] | None = None,
        grayscale: bool | None = None,
        val_groups: float | Sequence[int] = 0.15,
        seed: int = 0,
    ) -> None:
        self.store_dir = Path(store_dir)
        manifest = read_manifest(self.store_dir)
        if not manifest["complete"]:
            raise VidynError(
                f"store {self.store_dir} is incomplete ({len(manifest['shards'])} of "
                f"{manifest['num_shards']} shards); re-run the same `vidyn prepare` command to finish it"
            )
        if split not in ("train", "val", "test"):
            raise VidynError(f"split must be train, val or test; got {split!r}")
        self.params, self.split = manifest["params"], split
        store_classes: list[str] = manifest["classes"]
        records: list[dict[str, Any]] = manifest["clips"]
        self.val_groups: list[int] = []
        if self.params["dataset"] == "ucf101":
            train = [r for r in records if r["split"] == "train"]
            val = carve_val_groups((r["group"] for r in train), val_groups, seed) if train else set()
            self.val_groups = sorted(val)
            if split == "test":
                records = [r for r in records if r["split"] == "test"]
            else:  # val: the held-out groups of the train list; train: the rest
                held = split == "val"
                records = [r for r in records if r["split"] == "train" and (r["group"] in val) == held]
        else:
            records = [r for r in records if r["split"] == split]
        if classes is None:
            self.classes = store_classes
        else:
            unknown = sorted(set(classes) - set(store_classes))
            if unknown:
                raise VidynError(
                    f"classes {unknown} are not in store {self.store_dir}; it holds {store_classes}"
                )
            keep = set(classes)
            fixed = self.params["dataset"] in ("ucf101", "kinetics")  # labels fixed by an official list
            self.classes = [c for c in store_classes if c in keep] if fixed else list(dict.fromkeys(classes))
        new_label = {name: i for i, name in enumerate(self.classes)}
        if store_classes:
            self.records = [r for r in records if r["class"] in new_label]
        else:  # an unlabelled folder (prediction, interpolation, generation): every clip, label -1
            self.records, new_label = records, {r["class"]: -1 for r in records}
        if self.params["grayscale"] and grayscale is False:
            raise VidynError(f"store {self.store_dir} is grayscale; prepare an RGB store for grayscale=False")
        self.to_gray = bool(grayscale) and not self.params["grayscale"]
        self.shard_files = {s["index"]: s["file"] for s in manifest["shards"]}
        self._shard = np.array([r["shard"] for r in self.records], dtype=np.int64)
        self._offset = np.array([r["offset"] for r in self.records], dtype=np.int64)
        self._label = np.array([new_label[r["class"]] for r in self.records], dtype=np.int64)
        t = self.params["frames"]
        self._times = np.array([r["times"] for r in self.records], dtype=np.float32).reshape(-1, t)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> np.ndarray:
        return self._label

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}  # memory maps would be pickled as copies of whole shards

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k = int(self._shard[index])
        if k not in self._maps:
            self._maps[k] = np.load(self.store_dir / self.shard_files[k], mmap_mode="r")
        clip = np.array(self._maps[k][self._offset[index]])  # (T, H, W, C) uint8, copied out of the map
        if self.to_gray:
            clip = np.rint(clip.astype(np.float32) @ _LUMA)[..., None].astype(np.uint8)
        return {
            "frames": frames_to_tensor(clip),
            "times": torch.from_numpy(self._times[index].copy()),
            "label": torch.tensor(self._label[index]),
        }
