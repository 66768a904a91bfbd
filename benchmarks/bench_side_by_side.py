"""Training speed of vidyn beside the reference implementations, loaded from the user's own checkouts.

    python benchmarks/bench_side_by_side.py --openstl ~/src/OpenSTL --vid-ode ~/src/Vid-ODE \
        [--threads 1 2] [--configs small openstl] [--steps 7] [--device cpu|cuda]

- `--openstl PATH`: OpenSTL's `openstl/models/{convlstm,predrnn,predrnnv2}_model.py` and their
  `openstl/modules/*_modules.py` files are loaded directly from PATH (not installed, not copied: only
  those files are executed, so OpenSTL's other dependencies need not be installed).
- `--vid-ode PATH`: the official Vid-ODE `models/*.py` and `utils.py`, unmodified, from PATH.
- Without either path, vidyn's models are timed alone.
- Vid-ODE is also timed with `torch.compile` off ("eager", `VIDYN_COMPILE=0`), interleaved with the rest.
- `--direct`: the recurrent models are also timed with `vidyn.nn.winograd` off (direct oneDNN
  convolutions, vidyn before session 16), interleaved with the rest.
- The process runs as `vidyn train` sets it up: denormals flushed, and freed host memory kept for reuse
  (`vidyn.allocator.keep_freed_memory`; glibc would otherwise hand the top of its heap back and fault it
  in again at every step). Both sides share the process, so both run under it; `--glibc-defaults` leaves
  glibc's own thresholds instead.
- `--no-tf32` (CUDA): fp32 convolutions in full fp32 (torch lets cuDNN use TF32 by default); on an H200
  vidyn's Vid-ODE decoder took 20 solver evaluations against 14 on a CPU, TF32 being one suspect.

One training step, both sides: the same configuration, the same inputs and scheduled-sampling mask, the
same loss (next-frame MSE, + PredRNN-V2's decoupling term; Vid-ODE: the L1 frame and difference terms)
and optimiser (Adam 5e-4; Vid-ODE Adamax 1e-3). Before timing, the reference weights are copied into
vidyn's model and both losses are compared: the printed `|dloss|` shows the two compute the same function.
Steps alternate between the two sides (interleaved, order flipped every step) after warm-up; the table
gives the median process CPU time per step (CUDA: the median wall time, synchronised), so drift of this
shared machine hits both sides alike. Also printed: this machine's fp32 matmul and oneDNN convolution
peaks, measured in the same run, and the achieved GFLOP/s of vidyn's recurrent steps (FlopCounterMode:
convolutions and matmuls of one forward + backward, counted as direct convolutions, so a Winograd step
shows its effective rate).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _references import (  # noqa: E402
    copy_openstl_weights,
    count_calls,
    load_openstl,
    load_vid_ode,
    openstl_config,
)
from bench_recurrent import conv_gflops, matmul_gflops  # noqa: E402

import vidyn.models  # noqa: E402, F401  (registers the builders)
from vidyn.allocator import keep_freed_memory  # noqa: E402
from vidyn.config import TrainerConfig  # noqa: E402
from vidyn.errors import VidynError  # noqa: E402
from vidyn.nn.compiled import set_compile  # noqa: E402
from vidyn.nn.patch import patchify  # noqa: E402
from vidyn.nn.winograd import product_speedup, set_winograd, winograd_enabled  # noqa: E402
from vidyn.registry import MODELS  # noqa: E402
from vidyn.tasks.sampling import sample_truth_mask  # noqa: E402

CONFIGS = {  # the configurations: 64x64x1, 10 -> 10, patch 4
    "small": {"hidden": 64, "layers": 2, "kernel": 3, "batch": 4},
    "openstl": {"hidden": 128, "layers": 4, "kernel": 5, "batch": 1},  # OpenSTL's Moving MNIST model
}
NUM_CONTEXT, NUM_FRAMES, SIZE, PATCH = 10, 20, 64, 4
Step = Callable[[], torch.Tensor]


def _recurrent_model(name: str, cfg: dict, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.build(
        name, image_size=SIZE, hidden_channels=cfg["hidden"], num_layers=cfg["layers"],
        kernel_size=cfg["kernel"], patch_size=PATCH,
    ).to(device)  # fmt: skip


def without_winograd(loss_fn: Step) -> Step:
    """`loss_fn` with vidyn's convolutions computed directly (oneDNN), as before `vidyn.nn.winograd`."""

    def direct() -> torch.Tensor:
        set_winograd(False)
        try:
            return loss_fn()
        finally:
            set_winograd(None)

    return direct


def recurrent_pair(
    name: str,
    cfg: dict,
    openstl: Path | None,
    device: torch.device,
    compile_mode: str | None = None,
    direct: bool = False,
) -> dict:
    """vidyn's model and step (and OpenSTL's, given its path) on one batch and mask; with `compile_mode`
    also vidyn's step under `torch.compile(mode=compile_mode)` ("reduce-overhead": CUDA graphs); with
    `direct` also vidyn's step with Winograd convolutions off."""
    ours = _recurrent_model(name, cfg, device)
    batch = cfg["batch"]
    frames = torch.rand(batch, NUM_FRAMES, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    kwargs = {"stop_iter": 100} if ours.scheduled_sampling == "standard" else {"r_step_1": 0, "r_step_2": 100}
    mask = sample_truth_mask(
        batch,
        NUM_FRAMES,
        NUM_CONTEXT,
        ours.scheduled_sampling,
        50,
        torch.Generator().manual_seed(0),
        **kwargs,
    )  # (B, T-1) bool; iteration 50 of 100: about half the future inputs are the model's own
    frames = frames.to(device)  # the mask stays on the host, as in vidyn's prediction task

    def loss_of(model: torch.nn.Module) -> torch.Tensor:
        next_frames, aux = model.rollout(frames, mask)
        return F.mse_loss(next_frames, frames[:, 1:]) + sum(aux.values(), frames.new_zeros(()))

    pair = {"vidyn": (ours, lambda: loss_of(ours))}
    if openstl is not None:
        classes = load_openstl(openstl)
        reverse = ours.scheduled_sampling == "reverse"
        ref = classes[name](cfg["layers"], [cfg["hidden"]] * cfg["layers"], openstl_config(
            NUM_CONTEXT, NUM_FRAMES, SIZE, PATCH, cfg["kernel"], reverse)).to(device)  # fmt: skip
        # (B, T, 1, H, W) -> OpenSTL's channels-last patches (B, T, H/p, W/p, p*p)
        ims = patchify(frames, PATCH).permute(0, 1, 3, 4, 2).contiguous()
        # OpenSTL's mask covers steps t >= num_context (standard) or t >= 1 (reverse), one value per pixel
        steps = mask[:, 1:] if reverse else mask[:, NUM_CONTEXT:]
        flag = steps.float()[:, :, None, None, None].expand(-1, -1, *ims.shape[2:]).contiguous().to(device)
        copy_openstl_weights(ref, ours)
        pair["OpenSTL"] = (ref, lambda: ref(ims, flag)[1])
    if compile_mode:
        twin = _recurrent_model(name, cfg, device)
        twin.load_state_dict(ours.state_dict())  # the same weights (OpenSTL's, where copied)
        compiled = torch.compile(loss_of, mode=compile_mode, fullgraph=True)

        def compiled_loss() -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()  # a new training step (CUDA graphs' buffers)
            return compiled(twin)

        pair["vidyn compiled"] = (twin, compiled_loss)
    if direct:
        plain = _recurrent_model(name, cfg, device)
        plain.load_state_dict(ours.state_dict())
        pair["vidyn direct"] = (plain, without_winograd(lambda: loss_of(plain)))
    return pair


def vid_ode_pair(vid_ode_path: Path | None, device: torch.device, direct: bool = False) -> dict:
    """vidyn's vid_ode generator step (and the official VidODE's) at 64x64 RGB, B4, 5 -> 5, dopri5; with
    `direct` also vidyn's with Winograd off (its ConvGRU and ODE function direct, as before session 18)."""
    from bench_vid_ode import smooth_frames  # noqa: PLC0415

    from vidyn.models.vid_ode import vid_ode  # noqa: PLC0415
    from vidyn.models.vid_ode_loss import vid_ode_reconstruction_loss  # noqa: PLC0415

    torch.manual_seed(0)
    ours = vid_ode(decoder_method="dopri5").to(device)
    video, times = smooth_frames(4, 10, device)
    ctx, tgt = video[:, :5], video[:, 5:]

    def our_loss() -> torch.Tensor:
        out = ours.forward_components(ctx, times[:5], times[5:])
        return vid_ode_reconstruction_loss(out["frames"], tgt, out["start_frame"], out["difference"])

    torch.manual_seed(0)
    eager = vid_ode(decoder_method="dopri5").to(device)  # the same weights, run without torch.compile

    def eager_loss() -> torch.Tensor:
        set_compile(False)
        try:
            out = eager.forward_components(ctx, times[:5], times[5:])
        finally:
            set_compile(True)
        return vid_ode_reconstruction_loss(out["frames"], tgt, out["start_frame"], out["difference"])

    pair = {"vidyn": (ours, our_loss), "vidyn eager": (eager, eager_loss)}
    if direct:
        torch.manual_seed(0)
        plain = vid_ode(decoder_method="dopri5").to(device)

        def plain_loss() -> torch.Tensor:
            out = plain.forward_components(ctx, times[:5], times[5:])
            return vid_ode_reconstruction_loss(out["frames"], tgt, out["start_frame"], out["difference"])

        pair["vidyn direct"] = (plain, without_winograd(plain_loss))
    if vid_ode_path is not None:
        ref, batch_dict = load_vid_ode(vid_ode_path, video, times, device)
        pair["official"] = (ref, lambda: ref.compute_all_losses(batch_dict)["loss"])
    return pair


def make_step(model: torch.nn.Module, loss_fn: Step, optimiser: type, lr: float) -> Step:
    opt = optimiser([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def timed(step: Step, device: torch.device) -> float:
    """Seconds of one step: process CPU time with one CPU thread (robust to other load on the machine),
    wall time with several threads (where CPU time would add the threads up) and on CUDA (synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    clock = time.process_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    start = clock()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def clock_name(device: torch.device) -> str:
    one_thread = device.type == "cpu" and torch.get_num_threads() == 1
    return "median process CPU s/step" if one_thread else "median wall s/step"


def interleaved(steps: dict[str, Step], repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each side, the sides alternating (order flipped every round)."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            seconds = timed(steps[name], device)
            if i >= warmup:
                times[name].append(seconds)
    return {n: statistics.median(t) for n, t in times.items()}


def same_function(pair: dict) -> float:
    """|loss_vidyn - loss_reference| at identical weights and inputs (before any optimiser step)."""
    losses = [float(fn().detach()) for _, fn in pair.values()]
    return max(losses) - min(losses)


def count_gflop(pair: dict, side: str = "vidyn") -> float:
    """GFLOP of one forward + backward of `side` (convolutions and matrix products), counted with direct
    convolutions: Winograd's fewer multiplications then show as a higher effective GFLOP/s."""
    model, loss_fn = pair[side]
    with FlopCounterMode(display=False) as counter:
        without_winograd(loss_fn)().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def bench_recurrent(args: argparse.Namespace, device: torch.device) -> None:
    extra = f"{'compiled s':>11}{'speed-up':>9}{'compile s':>10}" if args.compile else ""
    extra += f"{'direct s':>9}{'speed-up':>9}" if args.direct else ""
    for config in args.configs:
        cfg = CONFIGS[config]
        print(f"\n[{config}] {cfg['layers']}x{cfg['hidden']} k{cfg['kernel']}, batch {cfg['batch']}, "
              f"64x64x1, {NUM_CONTEXT} -> {NUM_FRAMES - NUM_CONTEXT}, patch {PATCH}, Adam")  # fmt: skip
        print(f"{'model':<11}{'OpenSTL s':>10}{'vidyn s':>9}{'speed-up':>9}{'|dloss|':>9}{'GFLOP':>7}"
              f"{'GFLOP/s':>8}{extra}")  # fmt: skip
        for name in args.models:
            pair = recurrent_pair(name, cfg, args.openstl, device, args.compile, args.direct)
            start = time.perf_counter()
            diff = same_function(pair) if len(pair) > 1 else float("nan")  # (the compiled side compiles here)
            compile_s = time.perf_counter() - start
            gflop = count_gflop(pair)
            steps = {side: make_step(m, fn, torch.optim.Adam, 5e-4) for side, (m, fn) in pair.items()}
            med = interleaved(steps, args.steps, args.warmup, device)
            ref, ours = med.get("OpenSTL", float("nan")), med["vidyn"]
            line = f"{name:<11}{ref:>10.4f}{ours:>9.4f}{ref / ours:>8.2f}x{diff:>9.1e}{gflop:>7.1f}"
            line += f"{gflop / ours:>8.1f}"
            if args.compile:
                fast = med["vidyn compiled"]
                line += f"{fast:>11.4f}{ref / fast:>8.2f}x{compile_s:>10.1f}"
            if args.direct:
                plain = med["vidyn direct"]
                line += f"{plain:>9.4f}{ref / plain:>8.2f}x"
            print(line, flush=True)


def bench_vid_ode(args: argparse.Namespace, device: torch.device) -> None:
    pair = vid_ode_pair(args.vid_ode, device, args.direct)
    counters = {"vidyn": None}
    if "official" in pair:
        ref = pair["official"][0]
        counters["official"] = (count_calls(ref.encoder_z0.z0_diffeq_solver.ode_func),
                                count_calls(ref.diffeq_solver.ode_func))  # fmt: skip
    gflop = {side: count_gflop(pair, side) for side in pair}
    steps = {side: make_step(m, fn, torch.optim.Adamax, 1e-3) for side, (m, fn) in pair.items()}
    med = interleaved(steps, args.steps, args.warmup, device)
    nfe = {"vidyn": "{encoder}/{decoder}".format(**pair["vidyn"][0].last_nfe)}
    if "official" in pair:
        for c in counters["official"]:
            c[0] = 0
        steps["official"]()
        nfe["official"] = "/".join(str(c[0]) for c in counters["official"])
    ref, ours, eager = med.get("official", float("nan")), med["vidyn"], med["vidyn eager"]
    print("\n[vid_ode] generator step, 64x64 RGB, batch 4, 5 -> 5, dopri5 rtol 1e-3 atol 1e-4, Adamax")
    head = f"{'official s':>10}{'vidyn s':>9}{'speed-up':>9}{'eager s':>9}{'speed-up':>9}"
    direct = med.get("vidyn direct")
    head += f"{'direct s':>9}{'speed-up':>9}" if direct else ""
    print(f"{head}  NFE enc/dec official, vidyn")
    cols = f"{direct:>9.3f}{ref / direct:>8.2f}x" if direct else ""
    print(f"{ref:>10.3f}{ours:>9.3f}{ref / ours:>8.2f}x{eager:>9.3f}{ref / eager:>8.2f}x{cols}  "
          f"{nfe.get('official', '-')}, {nfe['vidyn']}")  # fmt: skip
    print("GFLOP/step (GFLOP/s): " + ", ".join(f"{k} {g:.1f} ({g / med[k]:.0f})" for k, g in gflop.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--openstl", type=Path, help="root of an OpenSTL checkout")
    parser.add_argument("--vid-ode", type=Path, help="root of a Vid-ODE checkout")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--models", nargs="*", default=["convlstm", "predrnn", "predrnn_v2"])
    parser.add_argument("--skip-vid-ode", action="store_true", help="time the recurrent predictors only")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per side (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile",
        metavar="MODE",
        help="also time vidyn's recurrent step under torch.compile(mode=MODE): default, "
        "reduce-overhead (CUDA graphs)",
    )
    parser.add_argument("--no-tf32", action="store_true", help="CUDA: fp32 convolutions without TF32")
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (vidyn train keeps freed memory for reuse)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="also time vidyn's steps with Winograd convolutions off (recurrent: as before session 16; "
        "Vid-ODE: its ConvGRU and ODE function direct, as before session 18 but for vidyn.nn.dopri5)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.no_tf32:  # torch's default lets cuDNN run fp32 convolutions in TF32 (10-bit mantissa)
        torch.backends.cudnn.allow_tf32 = False
    checkouts = (("--openstl", args.openstl, "openstl/models"), ("--vid-ode", args.vid_ode, "models"))
    for flag, path, inside in checkouts:
        if path is not None and not (path.expanduser() / inside).is_dir():
            raise VidynError(f"{flag} {path}: no {inside}/ there; pass the root of the repository's checkout")
    # The reference code's own deprecation warnings (uint8 masks, grid_sample defaults), once each.
    warnings.filterwarnings("once", category=UserWarning)
    # as `vidyn train` (vidyn.tasks.engine.prepare_runtime), for both sides of the process
    torch.set_flush_denormal(True)  # without it PredRNN's backward slows down as gradients turn denormal
    keep_mb = None if args.glibc_defaults else TrainerConfig().keep_freed_memory_mb
    kept = keep_mb is not None and keep_freed_memory(keep_mb)
    print(f"host memory: {'freed memory kept for reuse' if kept else 'the C library defaults'}")
    if device.type == "cpu":  # the process's default, measured as `vidyn train` measures it
        print(f"Winograd convolutions: {'on' if winograd_enabled() else 'off'} (product_speedup "
              f"{product_speedup():.2f} now; VIDYN_WINOGRAD overrides)")  # fmt: skip
    for threads in args.threads:
        torch.set_num_threads(threads)
        where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {threads} thread(s)"
        conv = "cuDNN" if device.type == "cuda" else "oneDNN"
        print(f"\n=== torch {torch.__version__}, {where}: fp32 matmul {matmul_gflops(device=device):.0f} "
              f"GFLOP/s, {conv} conv {conv_gflops(device=device):.0f} GFLOP/s (peaks, this run); "
              f"{clock_name(device)}")  # fmt: skip
        bench_recurrent(args, device)
        if not args.skip_vid_ode:
            bench_vid_ode(args, device)


if __name__ == "__main__":
    try:
        main()
    except VidynError as err:
        sys.exit(f"error: {err}")
