"""Where does `sde_video`'s prompted motion-law accuracy go? Scores a trained model's clips with the shapes
judge in seven modes, on `--clips` test clips of the model's config data (split test):

- real: the clips themselves (the judge's ceiling);
- posterior: the ELBO's reconstructions (posterior path, all frames seen): can the decoder show the laws;
- post_z0_prior / post_z0_null: z0 from the posterior (it has seen the clip), then the PRIOR drift with
  the true law / with the null label: can the prior drift continue a law once z0 holds its phase;
- frame_law: prior samples from the true first frame + the true law (the issue's prompted target);
- law_only: prior samples from the law alone (no frames);
- frame_only: prior samples from the first frame with the null label (no law);
plus the judge's confusion matrix for frame_law and how much the label moves the prior (z0 mean and drift,
relative to the null label), optionally another number of draws for the model's law reader to choose
among (`--select K`; 1 = the first draw), and optionally classifier-free guidance of the prior drift
(`--guidance W`: h_null + W (h_law - h_null), W = 1 is no guidance) and of the z0 prior's mean
(`--z0-guidance W`).

    .venv/bin/python benchmarks/diagnose_sde_prompt.py /tmp/gen/runs/sde4 --clips 64 --samples 4

Prints one line per mode (accuracy, N, per-law accuracy, judge histogram) and one JSON line (RESULT).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.distributions import Normal

import vidyn.data.synthetic  # noqa: F401  (registers shapes)
import vidyn.models  # noqa: F401  (registers sde_video)
from vidyn.export import load_model
from vidyn.metrics.judge import load_judge
from vidyn.models.interface import Condition
from vidyn.nn.sde import randn_like
from vidyn.nn.sde_nets import run_conv_gru
from vidyn.registry import DATASETS


def test_clips(data_args: dict, clips: int) -> dict[str, Tensor]:
    """The first `clips` test clips of `shapes` with `data_args`: frames x, times t `(T,)`, laws y."""
    data = DATASETS.build("shapes", split="test", num_samples=clips, **data_args)
    batch = torch.utils.data.default_collate([data[i] for i in range(clips)])
    return {"x": batch["frames"], "t": batch["times"][0], "y": batch["label"]}


def posterior_paths(model, x: Tensor, t: Tensor, y: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(ELBO reconstructions, posterior z0 then prior drift + law, posterior z0 then prior drift + null)."""
    gen = torch.Generator().manual_seed(seed)
    b, steps = x.shape[:2]
    rel = (t - t[0]).double()
    emb = model.encoder(x.flatten(0, 1)).unflatten(0, (b, steps))  # (B*T, E, S, S) -> (B, T, E, S, S)
    out = run_conv_gru(model.posterior_rnn, emb, torch.cat([rel.diff(), rel.new_zeros(1)]), backwards=True)
    mean, log_std = model.to_posterior_z0(out[:, 0]).chunk(2, dim=1)
    z0 = (mean + log_std.exp() * randn_like(mean, gen)).flatten(1)
    first = (x[:, :1], emb[:, :1], rel[:1])
    cond, null = model._encode_condition(first, y, b), model._encode_condition(first, None, b)
    zs, _ = model._solve(z0, cond.map, rel.tolist(), gen, out.transpose(0, 1))
    recon = model._decode(zs, cond)
    prior_paths = []
    for c in (cond, null):
        prior_paths.append(model._decode(model._solve(z0, c.map, rel.tolist(), gen)[0], c))
    return recon, prior_paths[0], prior_paths[1]


@contextmanager
def guided(model, weight: float) -> Iterator[None]:
    """Classifier-free guidance of the prior drift inside the block: h_null + w (h_cond - h_null), the null
    condition being the same map with the label channels set to the null label's embedding."""
    if weight == 1.0:
        yield
        return
    sde, e = model.sde, model.label_embedding.embedding_dim
    original = sde.prior
    null_label = model.label_embedding.weight[model.num_classes]  # (E,)

    def prior(z: Tensor, cond: Tensor) -> Tensor:
        null = cond.clone()
        null[:, -2 - e : -2] = null_label[None, :, None, None]  # channels [frames, label, x/y]
        h_null = original(z, null)
        return h_null + weight * (original(z, cond) - h_null)

    sde.prior = prior
    try:
        yield
    finally:
        del sde.prior


@contextmanager
def guided_z0(model, weight: float) -> Iterator[None]:
    """Classifier-free guidance of the z0 prior's mean inside the block: mu_null + w (mu_cond - mu_null),
    the std of the conditional prior (the null condition as in `guided`)."""
    if weight == 1.0:
        yield
        return
    e, original = model.label_embedding.embedding_dim, model._prior_z0
    null_label = model.label_embedding.weight[model.num_classes]  # (E,)

    def prior(cond):
        null = cond.map.clone()
        null[:, -2 - e : -2] = null_label[None, :, None, None]  # channels [frames, label, x/y]
        p, p_null = original(cond), original(dataclasses.replace(cond, map=null))
        return Normal(p_null.loc + weight * (p.loc - p_null.loc), p.scale)

    model._prior_z0 = prior
    try:
        yield
    finally:
        del model._prior_z0


def prior_samples(model, data: dict[str, Tensor], samples: int, mode: str) -> tuple[Tensor, Tensor]:
    """`samples` prior samples per clip in `mode` (frame_law, law_only, frame_only) and the asked laws."""
    x, t, y = data["x"], data["t"], data["y"]
    clips = []
    for i in range(x.shape[0]):
        frames = x[i : i + 1, :1] if mode != "law_only" else None
        labels = y[i : i + 1] if mode != "frame_only" else None
        cond = Condition(frames=frames, times=t[:1] if frames is not None else None, labels=labels)
        clips.append(model.sample(samples, t, condition=cond, generator=torch.Generator().manual_seed(i)))
    return torch.cat(clips), y.repeat_interleave(samples)


def judged(judge, clips: Tensor, asked: Tensor, names: list[str]) -> dict:
    """Accuracy, per-law accuracy, the judge's histogram and its confusion (rows: asked, columns: judged)."""
    back = torch.tensor([names.index(c) for c in judge.class_names])  # judge index -> model index
    pred = back[judge.features_and_logits(clips)[1].argmax(1)]
    k = len(names)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((asked, pred), torch.ones_like(pred), accumulate=True)
    per_law = confusion.diag() / confusion.sum(1).clamp_min(1)
    hist = confusion.sum(0) / asked.numel()
    return dict(acc=float((pred == asked).double().mean()), n=int(asked.numel()),
                per_law={n: round(float(a), 2) for n, a in zip(names, per_law, strict=True)},
                hist={n: round(float(c), 2) for n, c in zip(names, hist, strict=True)},
                confusion=confusion.tolist())  # fmt: skip


def label_effect(model, data: dict[str, Tensor]) -> dict[str, float]:
    """How far the law moves the prior: |mean z0(frame, law) - mean z0(frame, null)| / std of z0 (RMS),
    and |h(z, law) - h(z, null)| / |h(z, law)| on prior z0 states."""
    if getattr(model, "z0_components", 1) > 1:
        return {}  # a mixture prior: no single Gaussian whose shift to measure
    x, t, y = data["x"], data["t"], data["y"]
    b = x.shape[0]
    emb = model.encoder(x[:, 0]).unsqueeze(1)  # (B, E, S, S) -> (B, 1, E, S, S)
    first = (x[:, :1], emb, (t[:1] - t[0]).double())
    cond, null = model._encode_condition(first, y, b), model._encode_condition(first, None, b)
    p_law, p_null = model._prior_z0(cond), model._prior_z0(null)
    z = p_law.loc
    h_law = model.sde.prior_drift(torch.cat([z, cond.map], 1))
    h_null = model.sde.prior_drift(torch.cat([z, null.map], 1))
    rms = lambda v: float(v.square().mean().sqrt())  # noqa: E731
    return dict(z0_shift_over_prior_std=rms((p_law.loc - p_null.loc) / p_law.scale),
                z0_prior_std=rms(p_law.scale), z0_mean_rms=rms(p_law.loc),
                drift_change=rms(h_law - h_null) / rms(h_law), drift_rms=rms(h_law))  # fmt: skip


def diagnose(
    model,
    data: dict[str, Tensor],
    samples: int,
    names: list[str],
    guidance: float = 1.0,
    z0_guidance: float = 1.0,
) -> dict:
    judge = load_judge()
    x, y = data["x"], data["y"]
    recon, post_prior, post_null = posterior_paths(model, x, data["t"], y, seed=0)
    results = {"real": judged(judge, x, y, names), "posterior": judged(judge, recon, y, names),
               "post_z0_prior": judged(judge, post_prior, y, names),
               "post_z0_null": judged(judge, post_null, y, names)}  # fmt: skip
    results["posterior"]["mse"] = float((recon - x).square().mean())
    modes: list[tuple[str, Callable]] = [
        ("frame_law", lambda: prior_samples(model, data, samples, "frame_law"))
    ]
    modes += [(m, lambda m=m: prior_samples(model, data, samples, m)) for m in ("law_only", "frame_only")]
    with guided(model, guidance), guided_z0(model, z0_guidance):
        for mode, run in modes:
            clips, asked = run()
            results[mode] = judged(judge, clips, asked, names)
            results[mode]["frame_change"] = float(clips.diff(dim=1).abs().mean())
    results["label_effect"] = label_effect(model, data)
    return results


def report(results: dict, names: list[str]) -> None:
    for mode, r in results.items():
        if mode == "label_effect":
            print(mode, {k: round(v, 4) for k, v in r.items()})
            continue
        extra = {k: round(r[k], 5) for k in ("mse", "frame_change") if k in r}
        print(
            f"{mode:14s} acc {r['acc']:.3f} N {r['n']:4d} {extra} per-law {r['per_law']} judged {r['hist']}"
        )
    print("confusion of frame_law (rows asked, columns judged):", " ".join(f"{n[:5]:>6s}" for n in names))
    for name, row in zip(names, results["frame_law"]["confusion"], strict=True):
        print(f"{name:>10s}", " ".join(f"{v:6d}" for v in row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained sde_video run or exported model folder")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--samples", type=int, default=4, help="prior samples per clip and mode")
    p.add_argument("--guidance", type=float, default=1.0, help="CFG weight of the prior drift (1 = none)")
    p.add_argument("--z0-guidance", type=float, default=1.0, help="CFG weight of the z0 prior's mean")
    p.add_argument("--select", type=int, help="draws the law reader chooses among (the model's z0_select)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_model(args.run).eval()
    if args.select is not None:
        if getattr(model, "z0_reader", None) is None and args.select > 1:
            raise SystemExit("--select needs a model trained with model.args.z0_select > 1 (a law reader)")
        model.z0_select = args.select
    names = list(model.vidyn_meta["class_names"])
    with torch.no_grad():
        data = test_clips(model.vidyn_meta["config"]["data"]["args"], args.clips)
        results = diagnose(model, data, args.samples, names, args.guidance, args.z0_guidance)
    report(results, names)
    guidance = dict(guidance=args.guidance, z0_guidance=args.z0_guidance, select=args.select)
    print("RESULT", json.dumps(dict(run=args.run) | guidance | results))


if __name__ == "__main__":
    main()
