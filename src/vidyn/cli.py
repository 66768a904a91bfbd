"""`vidyn` command line: a table of subcommands over `vidyn.api`. Parsing and printing only.

User errors (VidynError) print one line `vidyn: error: ...` and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidyn.errors import VidynError

METRIC_COLUMNS = ("ssim", "psnr", "mse", "mae")


def format_table(models: dict[str, dict[str, Any]], columns: tuple[str, ...] = METRIC_COLUMNS) -> str:
    cols = [c for c in columns if any(c in m for m in models.values())]
    width = max([5] + [len(n) for n in models])
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>9}" for c in cols)]
    for name, res in models.items():
        cells = []
        for c in cols:
            v = res.get(c)
            cells.append(f"{v:>9.4f}" if isinstance(v, (int, float)) else f"{'-':>9}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.max_steps=200 (repeatable)",
    )


# ------------------------------------------------------------------------------------------ commands


def cmd_demo(a: argparse.Namespace) -> None:
    from vidyn import api

    res = api.demo(a.out, a.overrides)
    models = res["metrics"].get("models", {})
    print(format_table(models))
    out = Path(res["out"])
    print(f"\ndemo finished in {res['seconds']:.0f} s; files in {out}/:")
    for f in ("metrics.json", "per_step.png", "samples.gif", "model.safetensors", "model.json"):
        print(f"  {out / f}")


def cmd_train(a: argparse.Namespace) -> None:
    from vidyn import api

    res = api.train(a.config, a.overrides, run_dir=a.out, resume=a.resume)
    if res.metrics:
        print(format_table(res.metrics.get("models", {})))
    print(f"\ntrained in {res.seconds:.0f} s; run folder (exported model, metrics, logs): {res.run_dir}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from vidyn import api

    res = api.evaluate(a.model, split=a.split, json_path=a.json, max_clips=a.max_clips, overrides=a.overrides)
    print(format_table(res["models"]))
    if a.json:
        print(f"\nmetrics written to {a.json}")


def cmd_predict(a: argparse.Namespace) -> None:
    from vidyn import api

    times = [float(t) for t in a.times.split(",")] if a.times else None
    res = api.predict(
        a.model, a.input, steps=a.steps, times=times, out=a.out, context_frames=a.context, fps=a.fps
    )
    print(
        f"wrote {res['out']}: {res['context_frames']} context + {res['predicted_frames']} predicted frames "
        f"({res['size']}x{res['size']}, {res['channels']} channel(s), {res['fps']:.1f} fps)"
    )


def cmd_render(a: argparse.Namespace) -> None:
    from vidyn import api

    res = api.render(
        a.dataset,
        out=a.out,
        frames=a.frames,
        size=a.size,
        seed=a.seed,
        fps=a.fps,
        channels=a.channels,
        index=a.index,
    )
    print(
        f"wrote {res['out']}: {res['frames']} frames of {res['size']}x{res['size']}, motion law "
        f"{res['class']!r}"
    )


def cmd_models(a: argparse.Namespace) -> None:
    import vidyn.models  # noqa: F401
    from vidyn.registry import MODELS

    for name in MODELS.names(a.family):
        e = MODELS.get(name)
        print(f"{name:<22} {e.family:<11} {e.description}")


def cmd_configs(a: argparse.Namespace) -> None:
    from vidyn.config import list_shipped_configs

    print("\n".join(list_shipped_configs()))


# ---------------------------------------------------------------------------------------------- table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidyn", description="Learn video dynamics: predict, interpolate, generate and recognise video."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: list[tuple[str, str, Callable[[argparse.Namespace], None]]] = [
        ("demo", "train convlstm on shapes, evaluate it against baselines, write a report", cmd_demo),
        ("train", "train a model from a YAML config", cmd_train),
        ("evaluate", "evaluate an exported model on its dataset", cmd_evaluate),
        ("predict", "continue your own video with a trained predictor", cmd_predict),
        ("render", "render a clip of the procedural shapes dataset", cmd_render),
        ("models", "list registered models", cmd_models),
        ("configs", "list shipped configs", cmd_configs),
    ]
    ps = {}
    for name, help_text, fn in commands:
        ps[name] = sub.add_parser(name, help=help_text, description=help_text)
        ps[name].set_defaults(func=fn)

    ps["demo"].add_argument("--out", default="vidyn-demo", help="output folder (default: vidyn-demo)")
    _overrides(ps["demo"])

    p = ps["train"]
    p.add_argument(
        "-c", "--config", required=True, help="YAML file or shipped config name (see `vidyn configs`)"
    )
    p.add_argument("--out", default=None, help="run folder (default: <out_dir>/<name>)")
    p.add_argument("--resume", default=None, help="run folder or .ckpt to resume from")
    _overrides(p)

    p = ps["evaluate"]
    p.add_argument("model", help="exported model folder or run folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", default=None, help="write the metrics to this JSON file")
    p.add_argument("--max-clips", type=int, default=None)
    _overrides(p)

    p = ps["predict"]
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

    p = ps["render"]
    p.add_argument("dataset", choices=["shapes"])
    p.add_argument("--out", required=True, help="output .mp4, .gif or .npy")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--index", type=int, default=0)

    ps["models"].add_argument("--family", default=None, choices=["predictor", "classifier", "generator"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VidynError as exc:
        print(f"vidyn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidyn: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
