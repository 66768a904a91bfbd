"""Short learning probe of `sde_video` variants on `shapes` (32x32 grayscale, one object, 16 frames at
0.1 s): trains for `--steps` Adam steps outside Lightning, then prints one RESULT line.

Figures (on 64 validation clips, or the first 32 for the sampled ones):
- post_mse: per-pixel MSE of the posterior reconstruction: does the latent path carry the motion at all;
- best10_mse / mean10_mse: best- and mean-of-10 prior samples from `--ctx` frames and the clip's law,
  against the truth over the predicted frames (copy32_mse: the last context frame held);
- best10_ssim / mean10_ssim: SSIM over the predicted frames of the best / mean of 10 samples from the
  `--ctx` frames alone (no law: issue 13's SSIM target), best chosen per clip;
- frame_change: mean |x(t+1) - x(t)| of those samples (real_fc: of the real clips);
- prompt_acc: the shapes judge's motion-law accuracy on 2 samples per clip (chance 1/7).

    .venv/bin/python benchmarks/probe_sde_video.py --steps 400 --args '{"dt": 0.1}' --tag NAME

`--args` is JSON overriding the builder arguments below; `--diagnose N` adds the modes of
`benchmarks/diagnose_sde_prompt.py` (per-law judge accuracy, posterior vs prior, law vs no law) on N
test clips. The results of these probes are in docs/generation.md; they are learning-speed comparisons
at one short budget, not final figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader

import vidyn.data.synthetic  # noqa: F401  (registers shapes)
import vidyn.models  # noqa: F401  (registers sde_video)
from vidyn.evaluation.futures import future_scores
from vidyn.metrics.judge import motion_law_judge
from vidyn.models.interface import Condition
from vidyn.models.motion_classifier import MotionClassifier
from vidyn.registry import DATASETS, MODELS
from vidyn.tasks.prompt_consistency import class_consistency

LAWS = ["bounce", "orbit", "pendulum", "spring", "spin", "pulse", "gravity"]
BASE = dict(in_channels=1, image_size=32, latent_size=8, latent_channels=8, hidden_channels=32,
            drift_channels=32, num_classes=7, base_channels=16, sde_type="ito", method="euler", dt=0.05,
            consistency=True)  # fmt: skip
DATA = dict(size=32, channels=1, num_frames=16, frame_interval=0.1, max_objects=1, textured=False)


def train(model: torch.nn.Module, args: argparse.Namespace) -> float:
    data = DATASETS.build("shapes", split="train", num_samples=100000, **DATA)
    loader = iter(DataLoader(data, batch_size=args.batch, shuffle=True, num_workers=1))
    classifier = MotionClassifier(in_channels=1, image_size=32, num_classes=7) if args.class_weight else None
    params = [*model.parameters(), *(classifier.parameters() if classifier else [])]
    opt = torch.optim.Adam(params, lr=args.lr)
    start = time.time()
    for step in range(args.steps):
        batch = next(loader)
        beta = args.kl_max * (min(1.0, (step + 1) / args.anneal) if args.anneal else 1.0)
        path = beta if args.kl_path_anneal else args.kl_max  # latent_sde's kl_path_anneal
        out = model.elbo(batch["frames"], batch["times"][0], num_context=args.ctx, labels=batch["label"],
                         kl_weight=beta, drop_condition=0.1, kl_path_weight=path)  # fmt: skip
        loss = out["loss"]
        if classifier is not None:  # vidyn.tasks.prompt_consistency, as latent_sde's class_weight
            real, prior, _ = class_consistency(
                model, classifier, batch["frames"], batch["times"], batch["label"], args.ctx
            )
            loss = loss + real + args.class_weight * prior
            out |= {"class_real": real, "class_prior": prior}
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            terms = {k: round(float(v.detach()), 3) for k, v in out.items()}
            print(args.tag, step, f"{time.time() - start:.0f}s", terms, flush=True)
    return time.time() - start


@torch.no_grad()
def score(model: torch.nn.Module, ctx: int) -> dict[str, float]:
    val = DATASETS.build("shapes", split="val", num_samples=64, **DATA)
    batch = next(iter(DataLoader(val, batch_size=64)))
    x, t, y = batch["frames"], batch["times"][0], batch["label"]
    out = model.elbo(x, t, num_context=ctx, labels=y, generator=torch.Generator().manual_seed(0))
    post = float(out["recon_mse"])
    best, mean, change, judged, ssims = [], [], [], [], []
    for i in range(32):
        cond = Condition(frames=x[i : i + 1, :ctx], times=t[:ctx], labels=y[i : i + 1])
        samples = model.sample(10, t, condition=cond, generator=torch.Generator().manual_seed(i))
        err = (samples[:, ctx:] - x[i : i + 1, ctx:]).square().mean((1, 2, 3, 4))
        best.append(float(err.min()))
        mean.append(float(err.mean()))
        change.append(float(samples.diff(dim=1).abs().mean()))
        judged.append(samples[:2])
        unprompted = Condition(frames=x[i : i + 1, :ctx], times=t[:ctx])  # issue 13's SSIM target: no law
        samples = model.sample(10, t[ctx:], condition=unprompted, generator=torch.Generator().manual_seed(i))
        ssims.append(future_scores(samples.clamp(0, 1), x[i, ctx:])["ssim"].mean(1))  # (10,)
    acc = motion_law_judge(torch.cat(judged), y[:32].repeat_interleave(2), LAWS)["value"]
    copy = (x[:32, ctx:] - x[:32, ctx - 1 : ctx]).square().mean()
    ssims = torch.stack(ssims)  # (32, 10)
    return dict(post_mse=post, best10_mse=sum(best) / 32, mean10_mse=sum(mean) / 32,
                copy32_mse=float(copy), frame_change=sum(change) / 32,
                real_fc=float(x.diff(dim=1).abs().mean()), prompt_acc=acc,
                best10_ssim=float(ssims.max(1).values.mean()), mean10_ssim=float(ssims.mean()))  # fmt: skip


@torch.no_grad()
def diagnosis(model: torch.nn.Module, clips: int) -> dict[str, float]:
    """benchmarks/diagnose_sde_prompt.py's modes on `clips` test clips (2 samples per clip and mode)."""
    from diagnose_sde_prompt import diagnose, report, test_clips

    results = diagnose(model, test_clips(DATA, clips), 2, LAWS)
    report(results, LAWS)
    return {f"diag_{mode}": r["acc"] for mode, r in results.items() if "acc" in r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--args", default="{}", help="JSON overrides of the sde_video builder arguments")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--anneal", type=int, default=300, help="KL warm-up steps")
    p.add_argument("--kl-max", type=float, default=1.0, help="the KL weight after the warm-up")
    p.add_argument("--ctx", type=int, default=1, help="context frames of the prior")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--class-weight", type=float, default=0.0, help="latent_sde's class_weight (0 = off)")
    p.add_argument("--kl-path-anneal", type=int, default=1, help="0: the path KL at --kl-max from step 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="", help="write the trained model's builder args and weights here (.pt)")
    p.add_argument("--tag", default="probe")
    p.add_argument("--diagnose", type=int, default=0, help="also run diagnose_sde_prompt on N test clips")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_args = BASE | json.loads(args.args)
    model = MODELS.build("sde_video", **model_args)
    seconds = train(model, args)
    if args.save:  # for offline diagnosis: MODELS.build("sde_video", **args) then load_state_dict(state)
        torch.save({"args": model_args, "state": model.state_dict()}, args.save)
    figures = {k: round(v, 5) for k, v in score(model.eval(), args.ctx).items()}
    if args.diagnose:
        figures |= diagnosis(model, args.diagnose)
    print(
        "RESULT",
        json.dumps(dict(tag=args.tag, steps=args.steps, train_s=round(seconds)) | figures | model_args),
    )


if __name__ == "__main__":
    main()
