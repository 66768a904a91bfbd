"""Vid-ODE training-step benchmark: vidyn's `vid_ode` beside a re-implementation of the official code's
forward structure, 64x64 RGB, batch 4, 5 -> 5 extrapolation (times 0.0 .. 0.9 as the official loader).

One step = forward + backward + Adamax step of the generator ("G"), or with the adversarial terms
("G+D": an LSGAN step of the image and sequence discriminators, then the generator step with
0.003 x the LSGAN generator losses). Solvers: dopri5 (rtol 1e-3, atol 1e-4) and fixed-step rk4 stepping
on the requested times. Prints the median wall and process-CPU time per step after warm-up, and the
ODE-function evaluations (NFE) of the encoder and decoder; `--profile` prints torch.profiler's top ops.

The "official" rows run the same parameters through the official code's structure: the start frame
encoded a second time, a 0.01 Euler step from the zero state before the first GRU update, the GRU on
`[x, h]` at every step, the unused std half of the initial-state head, the decoder ODE started at the
first target time, the decoder called once per target with upsampling followed by a full 3x3 conv,
per-step tracker copies, and discriminator gradients computed during the generator step.

    python benchmarks/bench_vid_ode.py [--threads 1 2] [--steps 5] [--profile]

Figures on a shared machine drift by ~30% minute to minute: compare rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.models.discriminators import (
    ImageDiscriminator,
    SequenceDiscriminator,
    extrapolation_sequences,
    lsgan_d_loss,
    lsgan_g_loss,
)
from vidyn.models.vid_ode import vid_ode
from vidyn.models.vid_ode_loss import vid_ode_reconstruction_loss
from vidyn.nn.ode import odesolve
from vidyn.nn.warp import warp

ADV_WEIGHT = 0.003


class OfficialStructure(nn.Module):
    """The official Vid-ODE forward structure on a vidyn model's parameters (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model
        hc = model.decoder_func.net[0].in_channels
        self.transform_std = nn.Conv2d(hc, hc, 1)  # the official head also outputs an (unused) std half
        self.last_nfe = {"encoder": 0, "decoder": 0}

    def _decode(self, x: Tensor) -> Tensor:
        for layer in self.m.decoder:
            conv = getattr(layer, "conv", None)
            if conv is not None:  # Upsample then full-resolution conv, as the official Decoder
                x = conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            else:
                x = layer(x)
        return x

    def forward_components(self, context: Tensor, context_times: Tensor, target_times: Tensor) -> dict:
        m = self.m
        b, t, c, h, w = context.shape
        skip = m.encoder(context[:, -1])
        emb = m.encoder(context.reshape(b * t, c, h, w)).view(b, t, *skip.shape[1:])
        func, cell, tracker = m.encoder_rnn.ode_func, m.encoder_rnn.cell, {}
        func.nfe = m.decoder_func.nfe = 0
        state = torch.zeros_like(emb[:, 0])
        prev_t, t_i = context_times[-1] + 0.01, context_times[-1]
        obs_mask = torch.ones(b, 1, 1, 1)
        for i in reversed(range(t)):
            inc = func(prev_t, state) * (t_i - prev_t)
            tracker[f"inc{i}"] = inc.clone()
            new = cell(emb[:, i], state + inc)
            state = obs_mask * new + (1 - obs_mask) * (state + inc)
            prev_t, t_i = context_times[i], context_times[i - 1]
        hidden = m.to_initial_state[1](m.to_initial_state[0](state))
        z0, _std = m.to_initial_state[2](hidden), self.transform_std(hidden).abs()
        sol = odesolve(m.decoder_func, z0, target_times, method=m.decoder_method, rtol=m.rtol, atol=m.atol)
        tracker["sol_y"] = sol.clone()
        self.last_nfe = {"encoder": func.nfe, "decoder": m.decoder_func.nfe}
        outs, prev = [], skip
        for k in range(sol.shape[0]):
            outs.append(self._decode(torch.cat([sol[k], prev], dim=1)))
            prev = sol[k].clone()
        out = torch.stack(outs, dim=1)
        flow, diff, mask = out[:, :, :2], out[:, :, 2 : 2 + c], torch.sigmoid(out[:, :, 2 + c :])
        warped, src = [], context[:, -1]
        for k in range(flow.shape[1]):
            src = warp(src, flow[:, k])
            warped.append(src)
        frames = mask * torch.stack(warped, 1) + (1 - mask) * diff
        return {"frames": frames, "difference": diff, "start_frame": context[:, -1]}


def make_step(gen: nn.Module, adversarial: bool, official: bool, data: dict) -> Callable[[], None]:
    params = list(gen.parameters())
    opt_g = torch.optim.Adamax(params, lr=1e-3)
    d_img = ImageDiscriminator(3)
    d_seq = SequenceDiscriminator(3, num_frames=data["context"].shape[1] + 1)
    d_params = list(d_img.parameters()) + list(d_seq.parameters())
    opt_d = torch.optim.Adamax(d_params, lr=1e-3)
    ctx, tgt, ctx_t, tgt_t = data["context"], data["target"], data["context_times"], data["target_times"]

    def step() -> None:
        out = gen.forward_components(ctx, ctx_t, tgt_t)
        loss = vid_ode_reconstruction_loss(out["frames"], tgt, out["start_frame"], out["difference"])
        if adversarial:
            fake = out["frames"]
            d_img.requires_grad_(True), d_seq.requires_grad_(True)
            real_seq, fake_seq = (
                extrapolation_sequences(ctx, tgt),
                extrapolation_sequences(ctx, fake.detach()),
            )
            d_loss = lsgan_d_loss(d_img(tgt), d_img(fake.detach())) + lsgan_d_loss(
                d_seq(real_seq), d_seq(fake_seq)
            )
            opt_d.zero_grad()
            (ADV_WEIGHT * d_loss).backward()
            opt_d.step()
            if not official:  # vidyn: no discriminator gradients during the generator step
                d_img.requires_grad_(False), d_seq.requires_grad_(False)
            g_adv = lsgan_g_loss(d_img(fake)) + lsgan_g_loss(d_seq(extrapolation_sequences(ctx, fake)))
            loss = loss + ADV_WEIGHT * g_adv
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()

    return step


def measure(step: Callable[[], None], steps: int, warmup: int) -> tuple[float, float]:
    walls, cpus = [], []
    for i in range(warmup + steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        if i >= warmup:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def smooth_frames(batch: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """`(batch, length, 3, 64, 64)` smooth random frames (a blurred noise field, so the flow/warp path
    sees image structure) and their times 0.0, 0.1, ... as the official loader gives them."""
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(batch * length, 3, 64, 64, generator=g)
    video = F.avg_pool2d(noise, 9, 1, 4).view(batch, length, 3, 64, 64)
    return video.to(device), (torch.arange(length, dtype=torch.float32) / length).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="profile one vidyn dopri5 generator step")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    base, times = smooth_frames(4, 10, torch.device("cpu"))
    data = {
        "context": base[:, :5],
        "target": base[:, 5:],
        "context_times": times[:5],
        "target_times": times[5:],
    }
    solvers = {"dopri5": {"decoder_method": "dopri5"}, "rk4": {"decoder_method": "rk4"}}

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        torch.set_num_threads(args.threads[0])
        torch.manual_seed(0)
        step = make_step(vid_ode(), False, False, data)
        measure(step, 1, 1)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
        rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows)
        print(
            f"threads {torch.get_num_threads()}, profiled step {total / 1e6:.3f} s (with profiler overhead)"
        )
        for e in rows[:25]:
            shapes = ", ".join(str(tuple(s)) for s in e.input_shapes if s)[:80]
            print(
                f"{e.self_cpu_time_total / 1e3:8.1f} ms {100 * e.self_cpu_time_total / total:5.1f}%  "
                f"x{e.count:<4} {e.key:28s} {shapes}"
            )
        return

    print(
        f"torch {torch.__version__}, 64x64 RGB, batch 4, 5 -> 5, median of {args.steps} after {args.warmup}"
    )
    print(
        f"{'threads':>7} {'solver':>6} {'step':>4} {'impl':>8} {'wall s':>7} {'cpu s':>7} {'NFE enc/dec':>11}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        threads = torch.get_num_threads()
        print(f"torch.get_num_threads() = {threads}")
        for solver, kwargs in solvers.items():
            for adversarial in (False, True):
                for impl in ("vidyn", "official"):
                    torch.manual_seed(0)
                    model = vid_ode(**kwargs)
                    gen = model if impl == "vidyn" else OfficialStructure(model)
                    wall, cpu = measure(
                        make_step(gen, adversarial, impl == "official", data), args.steps, args.warmup
                    )
                    nfe = gen.last_nfe
                    kind = "G+D" if adversarial else "G"
                    row = f"{threads:>7} {solver:>6} {kind:>4} {impl:>8} {wall:>7.3f} {cpu:>7.3f}"
                    print(f"{row} {nfe['encoder']:>5}/{nfe['decoder']:<5}")


if __name__ == "__main__":
    main()
