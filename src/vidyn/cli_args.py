"""The arguments of each `vidyn` subcommand (`vidyn.cli` maps the subcommands to `vidyn.api`)."""

from __future__ import annotations

import argparse


def overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.max_steps=200 (repeatable)",
    )


def score(p: argparse.ArgumentParser) -> None:
    p.add_argument("real", help="real clips: a folder of videos / .npy / .pt, one tensor file, or a store")
    p.add_argument("fake", help="generated clips, in any of the same forms")
    p.add_argument(
        "--metrics",
        default="fvd,fid,kid,fd_judge,ssim,psnr",
        help="comma-separated: fvd, fid, kid, fd_judge, motion_law, ssim, psnr (default: all but motion_law)",
    )
    p.add_argument("--num", type=int, default=None, help="clips per side (default: all)")
    p.add_argument("--json", default=None, help="write every value with its protocol to this JSON file")
    p.add_argument("--fid-frames-per-clip", type=int, default=None, help="frames per clip for FID/KID")
    p.add_argument("--judge-frame-stride", type=int, default=1, help="judge every k-th frame (2 for 2x fps)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["install", "list"], help="install (fetch + verify) or list")
    p.add_argument(
        "which", nargs="?", default="all", choices=["fid", "fvd", "lpips", "all"], help="install only these"
    )


def clips_per_video(text: str) -> str:
    if text == "all" or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"must be a number >= 1 or `all`, not {text!r}")


def demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="vidyn-demo", help="output folder (default: vidyn-demo)")
    overrides(p)


def train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help="YAML file or shipped config name (see `vidyn configs`); not read with --resume",
    )
    p.add_argument(
        "--out", default=None, help="run folder (default: <out_dir>/<name>, or <name>-2, -3, ... if taken)"
    )
    p.add_argument(
        "--resume",
        default=None,
        help="run folder (or .ckpt) to continue, with the run's own config.yaml; --set changes apply on top",
    )
    overrides(p)


def evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="exported model folder or run folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", default=None, help="write the metrics to this JSON file")
    p.add_argument("--max-clips", type=int, default=None)
    p.add_argument(
        "--with",
        dest="others",
        action="append",
        default=[],
        metavar="MODEL",
        help="another exported predictor scored on the same clips, e.g. a discrete-time "
        "model beside a continuous-time one (repeatable)",
    )
    overrides(p)


def compare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", required=True, help="YAML file or shipped config name, e.g. compare/shapes_quick"
    )
    p.add_argument("--out", required=True, help="output folder (report.html, report.json, runs/)")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train every model again (by default a rerun reuses models whose training finished in "
        "OUT/runs with the same config)",
    )
    overrides(p)


def predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="exported model folder or run folder")
    p.add_argument("--input", required=True, help="video file (any format PyAV reads) or .npy array")
    p.add_argument("--steps", type=int, default=None, help="number of frames to predict")
    p.add_argument(
        "--times",
        default=None,
        help="comma-separated target times in seconds after the last context frame (continuous-time models)",
    )
    p.add_argument("--context", type=int, default=None, help="context frames to use (default: as trained)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's)")
    p.add_argument("--out", required=True, help="output .mp4, .gif, .avi or .npy")
    p.add_argument("--size", type=int, default=None, help="frame size to run a fully convolutional model at")


def interpolate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="exported continuous-time predictor (e.g. vid_ode) or its run folder")
    p.add_argument("--input", required=True, help="video file (its real timestamps are kept) or .npy array")
    p.add_argument("--factor", type=int, required=True, help="frame-rate multiplier K >= 2")
    p.add_argument("--out", required=True, help="output .mp4, .avi, .gif or .npy")
    p.add_argument("--context", type=int, default=None, help="frames per window (default: as trained)")
    p.add_argument("--size", type=int, default=None, help="frame size to run a fully convolutional model at")
    p.add_argument("--start", type=float, default=0.0, help="interpolate from this time on (seconds)")
    p.add_argument(
        "--duration", type=float, default=None, help="interpolate this many seconds (default: all)"
    )


def render(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["shapes"])
    p.add_argument("--out", required=True, help="output .mp4, .gif or .npy")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--index", type=int, default=0)


def ui(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=".", help="folder searched for exported models (default: here)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default: this machine only; 0.0.0.0 opens it)",
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--samples", default=None, help="folder of sample videos offered in every tab")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload in MiB (default: 200)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="longest clip in seconds (default: 600)")
    p.add_argument("--max-side", type=int, default=3840, help="largest frame side in pixels (default: 3840)")
    p.add_argument(
        "--max-interpolated-frames", type=int, default=1200, help="most frames Interpolate makes (1200)"
    )


def models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", default=None, choices=["predictor", "classifier", "generator"])


def classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="exported classifier folder or run folder")
    p.add_argument("video", help="video file (any format PyAV reads), any length")
    p.add_argument("--top", type=int, default=5, help="number of classes to show (default: 5)")
    p.add_argument("--clips", type=int, default=None, help="clips to average (default: cover it, <= 10)")


def prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=["ucf101", "kinetics", "folder"])
    p.add_argument(
        "--root",
        required=True,
        help="dataset folder (UCF101: the one holding UCF-101/; Kinetics: the CSVs and <split>/ folders)",
    )
    p.add_argument("--out", required=True, help="store folder to create (re-run the same command to resume)")
    p.add_argument("--fold", type=int, default=1, choices=[1, 2, 3], help="UCF101 split (default: 1)")
    p.add_argument("--size", type=int, default=64, help="frame size in pixels, square (default: 64)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16)")
    p.add_argument("--stride", type=int, default=2, help="frames between clip frames (default: 2)")
    p.add_argument(
        "--clips-per-video",
        default="1",
        type=clips_per_video,
        help="evenly spaced clips per video, or `all`: every window, --window-stride frames apart",
    )
    p.add_argument(
        "--window-stride", type=int, default=None, help="frames between windows (default: 2 x --stride)"
    )
    p.add_argument("--no-labels", action="store_true", help="folders are not classes: an unlabelled set")
    p.add_argument("--grayscale", action="store_true", help="store BT.601 luma instead of RGB")
    p.add_argument("--classes", default=None, help="comma-separated subset of classes, e.g. Punch,Typing")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0 = in this process)")


def generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="exported generator folder or run folder")
    p.add_argument("--num-samples", type=int, default=4, help="clips to sample (default: 4)")
    p.add_argument("--prompt", default=None, help="a class name of the training data, e.g. bounce")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: as trained)")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: as trained)")
    p.add_argument(
        "--times", default=None, help="comma-separated timestamps in seconds, instead of frames/fps"
    )
    p.add_argument(
        "--initial-frames", default=None, help="video or image folder to continue (frame-conditioned)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same clips")
    p.add_argument("--out", required=True, help="output folder (MP4 per sample, grid.png, generate.json)")
