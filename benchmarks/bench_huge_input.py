"""Peak memory (RSS) and wall time of `vidyn predict`, `interpolate` and `classify` on a long 1080p video.

    flock /tmp/bench.lock python benchmarks/bench_huge_input.py [--folder /tmp/huge] [--seconds 120]

Makes, when missing, a 2-minute 1920x1080 30 fps H.264 video of a few moving shapes over a gradient
(`make_huge_video`, streamed to the encoder one frame at a time) and three small models trained for a few
steps with the shipped configs (the figures are about input handling, not model quality): ConvLSTM
(`predict/demo`, 64x64 grayscale), Vid-ODE (`interpolate/vid_ode_shapes_quick`, 32x32 grayscale) and a
CNN-RNN recognizer at 112x112 RGB with a ResNet-18 backbone (`recognize/cnn_rnn_shapes_quick` with its
size, channels and backbone overridden, as `recognize/own_videos` has them). Then runs each command in
a subprocess under `/usr/bin/time -v` and prints its peak resident set size and wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_huge_video(
    path: Path, *, seconds: float = 120.0, width: int = 1920, height: int = 1080, fps: int = 30
) -> Path:
    """Write a `seconds`-long video of moving shapes, one frame in memory at a time (ultrafast H.264)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 60)], axis=-1).astype(
        np.uint8
    )  # (H, W, 3)
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(int(seconds * fps)):
            frame = background.copy()
            t = k / fps
            for i, (speed, size, colour) in enumerate([(300, 160, 255), (-450, 120, 200), (220, 200, 120)]):
                x = int((speed * t + i * 500) % (width - size))
                y = int((height - size) * (0.5 + 0.4 * np.sin(t * (1 + i) + i)))
                frame[y : y + size, x : x + size] = colour
            cy, cx = int(height / 2 + 300 * np.cos(t)), int(width / 2 + 600 * np.sin(t))
            frame[max(0, cy - 60) : cy + 60, max(0, cx - 60) : cx + 60, 2] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    tmp.replace(path)
    return path


_TRAIN = {  # model folder -> the `vidyn train` arguments that make it in a few steps
    "convlstm": ["-c", "predict/demo"],
    "vid_ode": ["-c", "interpolate/vid_ode_shapes_quick"],
    "cnn_rnn": [
        "-c", "recognize/cnn_rnn_shapes_quick",
        "--set", "model.args.in_channels=3", "--set", "model.args.backbone=resnet18",
        "--set", "data.args.size=112", "--set", "data.args.channels=3", "--set", "data.batch_size=2",
    ],
}  # fmt: skip
_QUICK = ["trainer.max_steps=3", "trainer.val_check_interval=3", "data.splits.val.num_samples=4"]
_QUICK += ["data.splits.test.num_samples=4", "data.eval_batch_size=4", "eval.num_visual_clips=0"]


def make_models(folder: Path) -> dict[str, Path]:
    runs = {}
    for name, args in _TRAIN.items():
        run = folder / "models" / name
        if not (run / "export" / "model.json").is_file() and not (run / "model.json").is_file():
            sets = [x for kv in _QUICK for x in ("--set", kv)]
            cmd = [sys.executable, "-m", "vidyn", "train", *args, *sets, "--out", str(run)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        runs[name] = run
    return runs


def measure(cmd: list[str], src: Path | None = None) -> dict:
    """Run `cmd` under GNU time (with vidyn imported from `src` if given); its peak RSS (MB), wall seconds,
    exit code and last stderr line."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    own = [line for line in proc.stderr.splitlines() if line.startswith("vidyn")]
    return {"rss_mb": rss_kb / 1024, "wall_s": seconds, "rc": proc.returncode, "said": own[-1] if own else ""}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=Path("/tmp/huge"))
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument(
        "--only",
        nargs="*",
        default=["predict", "interpolate", "classify"],
        help="also: interpolate@1024 (refused) and interpolate@256,60s+2s (--start/--duration)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=None,
        help="import vidyn from this src/ folder (e.g. an older commit's: "
        "git archive COMMIT src | tar -x -C DIR), to measure before a change",
    )
    a = parser.parse_args()
    video = a.folder / f"huge_{int(a.seconds)}s_1080p.mp4"
    if not video.is_file():
        make_huge_video(video, seconds=a.seconds)
    runs = make_models(a.folder)
    vidyn, out = [sys.executable, "-m", "vidyn"], a.folder / "out"
    out.mkdir(exist_ok=True)
    interp = [*vidyn, "interpolate", str(runs["vid_ode"]), "--input", str(video), "--factor", "2"]
    commands = {
        "predict": [*vidyn, "predict", str(runs["convlstm"]), "--input", str(video), "--steps", "10",
                    "--out", str(out / "predict.mp4")],
        "interpolate": [*interp, "--out", str(out / "interpolate.mp4")],
        "classify": [*vidyn, "classify", str(runs["cnn_rnn"]), str(video)],
        # too large to hold at 1024x1024 (refused), and a 2-second part of it at 256x256
        "interpolate@1024": [*interp, "--size", "1024", "--out", str(out / "interpolate_1024.mp4")],
        "interpolate@256,60s+2s": [*interp, "--size", "256", "--start", "60", "--duration", "2",
                                   "--out", str(out / "interpolate_part.mp4")],
    }  # fmt: skip
    print(f"vidyn from {a.src or 'this checkout'}")
    print(f"input: {video} ({video.stat().st_size / 2**20:.0f} MB, {a.seconds:.0f} s of 1920x1080 at 30 fps)")
    for name in a.only:
        r = measure(commands[name], a.src)
        said = f"exit {r['rc']}  {r['said']}"
        print(f"{name:<22} peak RSS {r['rss_mb']:8.0f} MB  wall {r['wall_s']:7.1f} s  {said}")


if __name__ == "__main__":
    main()
