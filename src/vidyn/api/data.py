"""Data verbs: `prepare` (decode a video dataset once into a prepared-clip store) and `render` (one clip
of a procedural dataset to a video file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidyn.data.datamodule import build_dataset
from vidyn.data.prepare import prepare_store
from vidyn.data.video_io import write_video
from vidyn.errors import VidynError

# ------------------------------------------------------------------------------------------- prepare


def prepare(
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    fold: int = 1,
    size: int = 64,
    frames: int = 16,
    stride: int = 2,
    clips_per_video: int = 1,
    grayscale: bool = False,
    classes: list[str] | None = None,
    workers: int = 2,
    progress: bool = True,
    window_stride: int | None = None,
    labels: bool | None = None,
) -> dict[str, Any]:
    """Decode a video dataset ("ucf101", "kinetics" or "folder") once into a prepared-clip store at `out`.

    Train from it with `--set data.args.store=OUT` (and the same size/frames/stride). Re-running the same
    command resumes an interrupted run. `clips_per_video=0` takes every window, `window_stride` frames
    apart; `labels=False` reads a folder of folders as unlabelled (a flat folder always is). Worker
    processes are spawned: from a script, call this under `if __name__ == "__main__":` (the CLI does), or
    pass workers=0. Returns prepare_store's summary (`videos`, `clips`, `skipped` [{file, reason}],
    `seconds`, `store`, `resumed_videos`, `missing`: Kinetics clips listed but not on disk, listed in
    `out/missing.csv`) plus `clips_per_second` over the videos decoded in this run.
    """
    summary = prepare_store(
        dataset,
        root,
        out,
        fold=fold,
        size=size,
        frames=frames,
        stride=stride,
        clips_per_video=clips_per_video,
        grayscale=grayscale,
        classes=classes,
        workers=workers,
        progress=progress,
        window_stride=window_stride,
        labels=labels,
    )
    fresh = summary["videos"] - summary["resumed_videos"]
    new_clips = summary["clips"] * fresh / max(1, summary["videos"])
    summary["clips_per_second"] = new_clips / summary["seconds"] if summary["seconds"] > 0 else 0.0
    return summary


# -------------------------------------------------------------------------------------------- render


def render(
    dataset: str = "shapes",
    *,
    out: str | Path,
    frames: int = 20,
    size: int = 64,
    seed: int = 0,
    fps: float = 10.0,
    channels: int = 3,
    index: int = 0,
    split: str = "test",
) -> dict[str, Any]:
    """Render one clip of a procedural dataset to .mp4/.gif/.npy."""
    if dataset != "shapes":
        raise VidynError(f"only procedural datasets can be rendered; got {dataset!r} (try: shapes)")
    ds = build_dataset(
        "shapes",
        split,
        {
            "num_frames": frames,
            "size": size,
            "seed": seed,
            "channels": channels,
            "num_samples": index + 1,
            "frame_interval": 1.0 / fps,
        },
    )
    sample = ds[index]
    write_video(out, sample["frames"], fps=fps)
    label = int(sample["label"])
    return {"out": str(out), "frames": frames, "size": size, "label": label, "class": ds.class_names[label]}
