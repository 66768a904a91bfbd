"""`vidyn` command line: a table of subcommands over `vidyn.api`. Parsing and printing only.

User errors (VidynError) print one line `vidyn: error: ...` and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidyn import cli_args
from vidyn.cli_tables import format_compare_table, format_per_class, format_table
from vidyn.errors import VidynError
from vidyn.fileio import disk_error

# ------------------------------------------------------------------------------------------ commands


def cmd_demo(a: argparse.Namespace) -> None:
    from vidyn import api

    res = api.demo(a.out, a.overrides)
    models = res["metrics"].get("models", {})
    print(format_table(models))
    out = Path(res["out"])
    print(f"\ntraining stopped because {res['stop_reason']}" if res.get("stop_reason") else "")
    print(f"demo finished in {res['seconds']:.0f} s; files in {out}/:")
    for f in ("metrics.json", "per_step.png", "samples.gif", "model.safetensors", "model.json"):
        print(f"  {out / f}")


def cmd_train(a: argparse.Namespace) -> None:
    from vidyn import api
    from vidyn.tasks.distributed import is_rank_zero, release_process_group

    try:
        res = api.train(
            a.config, a.overrides, run_dir=a.out, resume=a.resume, echo=lambda s: print(s, flush=True)
        )
    finally:
        release_process_group()  # the process ends here: close the DDP group before interpreter teardown
    if not is_rank_zero():  # a DDP rank other than 0: rank 0 wrote the run folder, exported and evaluated
        print(f"trained in {res.seconds:.0f} s as a rank other than 0; rank 0 wrote the run folder")
        return
    if res.metrics:
        print(format_table(res.metrics.get("models", {})))
        if res.metrics.get("per_class"):
            print(format_per_class(res.metrics["per_class"]))
    print(f"\nstopped because {res.stop_reason}")
    print(f"trained in {res.seconds:.0f} s; run folder (exported model, metrics, logs): {res.run_dir}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from vidyn import api

    kwargs = {"split": a.split, "json_path": a.json, "max_clips": a.max_clips, "others": a.others}
    res = api.evaluate(a.model, overrides=a.overrides, **kwargs)
    print(format_table(res["models"]))
    if res.get("per_class"):  # class-conditional generators: does one prompt give varied clips?
        print(format_per_class(res["per_class"]))
    for protocol, entries in res.get("continuous", {}).items():
        if protocol != "protocol":  # unseen timestamps (shapes renders the truth at any time)
            print(f"\ncontinuous time, {protocol}:\n{format_table(entries)}")
            per_gap = {n: e.get("per_gap") or {} for n, e in entries.items()}
            buckets = tuple(dict.fromkeys(k for gaps in per_gap.values() for k in gaps))
            for metric in ("ssim", "psnr") if buckets else ():
                print(f"{metric} of in-between frames by gap (frame intervals):")
                by_gap = {n: {k: v[metric] for k, v in gaps.items()} for n, gaps in per_gap.items()}
                print(format_table(by_gap, buckets))
    if a.json:
        print(f"\nmetrics written to {a.json}")


def _note_input(model: str, video: str, verb: str, size: int | None = None) -> None:
    from vidyn import api

    note = api.input_note(model, video, verb, size)
    if note:
        print(note, file=sys.stderr, flush=True)


def cmd_predict(a: argparse.Namespace) -> None:
    from vidyn import api

    _note_input(a.model, a.input, "predict", a.size)
    times = [float(t) for t in a.times.split(",")] if a.times else None
    res = api.predict(
        a.model,
        a.input,
        steps=a.steps,
        times=times,
        out=a.out,
        context_frames=a.context,
        fps=a.fps,
        size=a.size,
    )
    print(
        f"wrote {res['out']}: {res['context_frames']} context + {res['predicted_frames']} predicted frames "
        f"({res['size']}x{res['size']}, {res['channels']} channel(s), {res['fps']:.1f} fps)"
    )


def cmd_interpolate(a: argparse.Namespace) -> None:
    from vidyn import api

    _note_input(a.model, a.input, "interpolate", a.size)
    res = api.interpolate(
        a.model, a.input, factor=a.factor, out=a.out, context_frames=a.context, size=a.size, start=a.start,
        duration=a.duration,
    )  # fmt: skip
    print(
        f"wrote {res['out']}: {res['input_frames']} -> {res['output_frames']} frames ({res['factor']}x), "
        f"{res['fps_in']:.2f} -> {res['fps_out']:.2f} fps over {res['duration']:.2f} s, "
        f"{res['size']}x{res['size']}, {res['channels']} channel(s)"
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


def cmd_classify(a: argparse.Namespace) -> None:
    from vidyn import api

    _note_input(a.model, a.video, "classify")
    res = api.classify(a.model, a.video, top=a.top, clips=a.clips)
    width = max([5] + [len(p["class"]) for p in res["predictions"]])
    print(f"{res['video']}: {res['num_clips']} clip(s), probabilities averaged")
    print(f"{'rank':>4}  {'class':<{width}}  probability")
    for rank, p in enumerate(res["predictions"], 1):
        print(f"{rank:>4}  {p['class']:<{width}}  {p['probability']:>11.4f}")


def cmd_prepare(a: argparse.Namespace) -> None:
    from vidyn import api

    classes = [c.strip() for c in a.classes.split(",") if c.strip()] if a.classes else None
    res = api.prepare(
        a.dataset,
        a.root,
        a.out,
        fold=a.fold,
        size=a.size,
        frames=a.frames,
        stride=a.stride,
        clips_per_video=0 if a.clips_per_video == "all" else int(a.clips_per_video),
        window_stride=a.window_stride,
        labels=False if a.no_labels else None,
        grayscale=a.grayscale,
        classes=classes,
        workers=a.workers,
    )
    print(
        f"store {res['store']}: {res['videos']} videos, {res['clips']} clips, {len(res['skipped'])} skipped, "
        f"{res['seconds']:.1f} s ({res['clips_per_second']:.1f} clips/s)"
        + (f"; resumed after {res['resumed_videos']} videos" if res["resumed_videos"] else "")
    )
    for s in res["skipped"]:
        print(f"  skipped {s['file']}: {s['reason']}")
    if a.dataset == "kinetics":
        listed = res["videos"] + res["missing"]
        print(f"{res['missing']} of {listed} listed clips are missing on disk: {res['store']}/missing.csv")
    name = f"--set data.name={a.dataset} " if a.dataset == "kinetics" else ""
    print(f"train from it with {name}--set data.args.store={res['store']}")


def cmd_compare(a: argparse.Namespace) -> None:
    from vidyn import api

    report = api.compare(a.config, a.overrides, out=a.out, retrain=a.retrain)
    print(format_compare_table(report["models"]))
    protocol = report["protocol"]
    print(f"\ncompared in {protocol['wall_seconds']:.0f} s on {protocol['threads']} thread(s)")
    print(f"report: {Path(a.out) / 'report.html'}  (numbers: {Path(a.out) / 'report.json'})")


def cmd_ui(a: argparse.Namespace) -> None:
    from vidyn.ui.app import launch
    from vidyn.ui.limits import Limits

    limits = Limits(
        max_mb=a.max_upload_mb,
        max_seconds=a.max_seconds,
        max_side=a.max_side,
        max_interpolated_frames=a.max_interpolated_frames,
    )
    launch(a.models, host=a.host, port=a.port, samples_dir=a.samples, limits=limits)


def cmd_models(a: argparse.Namespace) -> None:
    import vidyn.models  # noqa: F401
    from vidyn.registry import MODELS

    for name in MODELS.names(a.family):
        e = MODELS.get(name)
        print(f"{name:<22} {e.family:<11} {e.description}")


def cmd_configs(a: argparse.Namespace) -> None:
    from vidyn.config import list_shipped_configs

    print("\n".join(list_shipped_configs()))


def cmd_generate(a: argparse.Namespace) -> None:
    from vidyn import api

    times = [float(t) for t in a.times.split(",")] if a.times else None
    res = api.generate(
        a.model, num_samples=a.num_samples, out=a.out, prompt=a.prompt, frames=a.frames, fps=a.fps,
        times=times, initial_frames=a.initial_frames, seed=a.seed,
    )  # fmt: skip
    out = Path(a.out)
    print(
        f"wrote {len(res['videos'])} sample(s) to {out}/: "
        + ", ".join(res["videos"][:4])
        + ("..." if len(res["videos"]) > 4 else "")
    )
    print(f"  {out / res['grid']}  (all samples)\n  {out / 'generate.json'}  (what was asked)")


def cmd_weights(a: argparse.Namespace) -> None:
    from vidyn import api

    if a.action == "install":
        report = api.install_weights(a.which)
        for row in report["files"]:
            print(f"{row['status']:>17}  {row['path']}  ({row['seconds']} s)")
        print(f"weights folder: {report['dir']}")
        return
    for row in api.list_weights():
        state = "verified" if row["verified"] else ("CORRUPT" if row["installed"] else "missing")
        print(f"{state:>8}  {row['group']:<5}  {row['path']}  <- {row['source']}")


def cmd_score(a: argparse.Namespace) -> None:
    from vidyn import api

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    kwargs = {"fid_frames_per_clip": a.fid_frames_per_clip, "judge_frame_stride": a.judge_frame_stride}
    result = api.score(a.real, a.fake, metrics=a.metrics, num=a.num, json_path=a.json, **kwargs)
    print(api.format_score_table(result))
    if a.json:
        print(f"\nscores written to {a.json}")


# ---------------------------------------------------------------------------------------------- table

# (name, help and description, handler, adds its arguments or None), in `vidyn --help` order
_COMMANDS = [
    (
        "demo",
        "train convlstm on shapes, evaluate it against baselines, write a report",
        cmd_demo,
        cli_args.demo,
    ),
    ("train", "train a model from a YAML config", cmd_train, cli_args.train),
    ("evaluate", "evaluate an exported model on its dataset", cmd_evaluate, cli_args.evaluate),
    (
        "compare",
        "train several predictors under one budget; compare quality and speed",
        cmd_compare,
        cli_args.compare,
    ),
    ("predict", "continue your own video with a trained predictor", cmd_predict, cli_args.predict),
    (
        "interpolate",
        "raise a video's frame rate with a continuous-time predictor",
        cmd_interpolate,
        cli_args.interpolate,
    ),
    ("render", "render a clip of the procedural shapes dataset", cmd_render, cli_args.render),
    ("ui", "start the web UI over your exported models", cmd_ui, cli_args.ui),
    ("models", "list registered models", cmd_models, cli_args.models),
    ("configs", "list shipped configs", cmd_configs, None),
    (
        "classify",
        "name the action in your own video with a trained classifier",
        cmd_classify,
        cli_args.classify,
    ),
    (
        "prepare",
        "decode a video dataset once into a fast prepared-clip store",
        cmd_prepare,
        cli_args.prepare,
    ),
    ("weights", "install or list the verified FID/FVD/LPIPS networks", cmd_weights, cli_args.weights),
    (
        "score",
        "FVD, FID, KID, FD-judge, SSIM, PSNR between real and generated clips",
        cmd_score,
        cli_args.score,
    ),
    (
        "generate",
        "sample clips from a trained generator (any timestamps, prompts)",
        cmd_generate,
        cli_args.generate,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidyn", description="Learn video dynamics: predict, interpolate, generate and recognise video."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, fn, add_arguments in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        if add_arguments is not None:
            add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vidyn.console import show_vidyn_warnings_on_one_line

    show_vidyn_warnings_on_one_line()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VidynError as exc:
        code = getattr(exc, "exit_code", None)  # a run stopped by a signal, its state saved
        print(f"vidyn: {exc}" if code else f"vidyn: error: {exc}", file=sys.stderr)
        return code or 2
    except KeyboardInterrupt:
        print("vidyn: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a folder that cannot be created (files themselves: vidyn.fileio.atomic_path)
        error = disk_error(exc.filename, exc) if exc.filename else None
        if error is None:
            raise
        print(f"vidyn: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
