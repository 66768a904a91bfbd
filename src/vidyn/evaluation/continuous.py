"""Continuous-time evaluation: score predictors at timestamps the data never sampled.

A dataset that renders ground truth at any float time (`render(index, times) -> (T, C, H, W)`, i.e.
`shapes`) lets a continuous-time predictor be scored where frame-based benchmarks cannot look. Every test
clip is observed at its own first `num_context` timestamps (regular, or irregular when the dataset is)
and three protocols ask for frames at other times, each scored against the scene rendered at exactly
those times:

- interpolation: unseen in-between times `t_i + f (t_{i+1} - t_i)` for every gap between consecutive
  observations and every fraction f (default 1/4, 1/2, 3/4); per_offset keys "0.25", "0.5", "0.75", and
  per_gap the same frames grouped by the length of their gap, in frame intervals ("<0.25", "0.25-0.5",
  "0.5-1", "1-2", ">=2"; also for the irregular protocol's in-between frames): where observations are
  dense the pixel blend is nearly exact, where they are sparse motion has to be modelled;
- extrapolation: `t_last + k * frame_interval` beyond the last observation, k in frame intervals (default
  0.5, 1, 1.5, ... num_future); keys "+0.5", "+1", ...;
- irregular: the context is frame 0 plus a random sorted subset of the clip's next `num_context +
  num_future - 1` frames (`num_context` in all, seeded per clip; the span the `irregular` training mode
  draws from), and the targets are the in-between and beyond times of that context, as above (keys of
  both kinds; "between" and "beyond" summarise them).

Every model is scored on the same clips and times. Discrete-time models (`continuous_time = False`, e.g.
convlstm) only predict on their context's grid: they are scored on the integer extrapolation offsets when
the context is regular, and reported as null with a reason elsewhere; so is any model that refuses the
times it is asked for. Metrics follow vidyn's conventions (`vidyn.metrics.frame_metrics`: per frame, then
averaged; docs/metrics.md). Models that count ODE function evaluations (`last_nfe`) also report them per clip
and per predicted frame.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.metrics import frame_metrics
from vidyn.tasks.splits import solver_stats

PROTOCOLS = ("interpolation", "extrapolation", "irregular")
FRACTIONS = (0.25, 0.5, 0.75)
METRICS = ("ssim", "psnr", "mse", "mae")
GAP_EDGES = (0.25, 0.5, 1.0, 2.0)  # per_gap buckets: gap lengths in frame intervals


def _key_gap(gap: float) -> str:
    """The per_gap bucket of a gap `gap` frame intervals long: "<0.25", "0.25-0.5", ..., ">=2"."""
    lower = [e for e in GAP_EDGES if gap >= e]
    if not lower:
        return f"<{GAP_EDGES[0]:g}"
    if lower[-1] == GAP_EDGES[-1]:
        return f">={GAP_EDGES[-1]:g}"
    return f"{lower[-1]:g}-{GAP_EDGES[len(lower)]:g}"


def _key_between(f: float) -> str:
    return f"{f:g}"


def _key_beyond(k: float) -> str:
    return f"+{k:g}"


def targets_between(times: Tensor, fractions: tuple[float, ...]) -> tuple[Tensor, list[str]]:
    """In-between times of sorted observation times `(T,)`: `(T - 1) * len(fractions)` of them, in order."""
    gaps = times.diff().to(torch.float64)  # (T - 1,)
    f = torch.tensor(fractions, dtype=torch.float64)
    out = times[:-1].to(torch.float64).unsqueeze(1) + gaps.unsqueeze(1) * f  # (T - 1, F)
    return out.flatten().float(), [_key_between(x) for x in fractions] * (times.numel() - 1)


def targets_beyond(
    last: float, offsets: tuple[float, ...], frame_interval: float
) -> tuple[Tensor, list[str]]:
    """Times `last + k * frame_interval` for k in `offsets` (frame intervals), in the given order."""
    t = torch.tensor([last + k * frame_interval for k in offsets], dtype=torch.float64)
    return t.float(), [_key_beyond(k) for k in offsets]


def irregular_context(index: int, pool: int, num_context: int, seed: int) -> Tensor:
    """Sorted clip indices of the irregular protocol: frame 0 and `num_context - 1` of frames 1..pool-1."""
    digest = hashlib.blake2b(f"vidyn.continuous/{seed}/{index}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") % 2**63)
    rest = torch.randperm(pool - 1, generator=gen)[: num_context - 1] + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), rest.sort().values])


class _Tracker:
    """Sums of per-frame metrics per offset key, for one model in one protocol."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(METRICS, 0.0))
        self.counts: dict[str, int] = defaultdict(int)
        self.gap_sums: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(METRICS, 0.0))
        self.gap_counts: dict[str, int] = defaultdict(int)
        self.nfe_clip: list[float] = []
        self.nfe_frame: list[float] = []

    def update(self, pred: Tensor, truth: Tensor, keys: list[str], gaps: Tensor | None = None) -> None:
        """Add frames `(B, K, C, H, W)` scored per offset key; `gaps` `(B, K)`: the length of each target's
        gap between observations in frame intervals (NaN beyond the last one), for per_gap."""
        values = frame_metrics(pred, truth, names=METRICS, dtype=torch.float64)  # {name: (B, K)}
        for j, key in enumerate(keys):
            for name in METRICS:
                self.sums[key][name] += float(values[name][:, j].sum())
            self.counts[key] += pred.shape[0]
        if gaps is None:
            return
        for b, row in enumerate(gaps.tolist()):
            for j, gap in enumerate(row):
                if gap == gap:  # not NaN: an in-between target
                    bucket = _key_gap(gap)
                    for name in METRICS:
                        self.gap_sums[bucket][name] += float(values[name][b, j])
                    self.gap_counts[bucket] += 1

    @staticmethod
    def _mean(sums: list[dict[str, float]], counts: list[int]) -> dict[str, float]:
        n = sum(counts)
        return {name: sum(s[name] for s in sums) / n for name in METRICS}

    def result(self, kinds: dict[str, str] | None = None) -> dict[str, Any]:
        keys = list(self.counts)
        out: dict[str, Any] = self._mean([self.sums[k] for k in keys], [self.counts[k] for k in keys])
        out["per_offset"] = {k: self._mean([self.sums[k]], [self.counts[k]]) for k in keys}
        for kind in sorted(set((kinds or {}).values())):
            chosen = [k for k in keys if kinds and kinds.get(k) == kind]
            out[kind] = self._mean([self.sums[k] for k in chosen], [self.counts[k] for k in chosen])
        if self.gap_counts:
            order = [_key_gap(0.0)] + [_key_gap(e) for e in GAP_EDGES]
            out["per_gap"] = {
                k: {**self._mean([self.gap_sums[k]], [self.gap_counts[k]]), "frames": self.gap_counts[k]}
                for k in order
                if k in self.gap_counts
            }
        if self.nfe_clip:
            out["nfe_per_clip"] = sum(self.nfe_clip) / len(self.nfe_clip)
            out["nfe_per_frame"] = sum(self.nfe_frame) / len(self.nfe_frame)
        return out


def _null(reason: str) -> dict[str, Any]:
    return {**dict.fromkeys(METRICS), "per_offset": None, "reason": reason}


def _predict(model: nn.Module, ctx: Tensor, ctx_t: Tensor, tgt_t: Tensor, tracker: _Tracker) -> Tensor:
    pred = model(ctx, ctx_t, tgt_t).clamp(0, 1)
    stats = solver_stats(model, ctx_t, tgt_t)
    if stats is not None:
        tracker.nfe_clip.append(stats["nfe_encoder"] + stats["nfe_decoder"])
        tracker.nfe_frame.append(stats["nfe_per_frame"])
    return pred


@torch.no_grad()
def evaluate_continuous(
    models: dict[str, nn.Module],
    dataset: Any,
    *,
    num_context: int,
    num_future: int,
    fractions: tuple[float, ...] = FRACTIONS,
    extrapolation_offsets: tuple[float, ...] | None = None,
    batch_size: int = 8,
    max_clips: int | None = None,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Score `models` on the three protocols of the module docstring; returns the evaluate JSON's block.

    `dataset` yields `{"frames", "times"}` clips and has `render(index, times)` and `frame_interval`
    (`shapes`). `extrapolation_offsets` are in frame intervals (default 0.5, 1, ..., num_future). Returns
    `{"interpolation" | "extrapolation" | "irregular": {model: {"ssim", "psnr", "mse", "mae",
    "per_offset": {key: {...}}, ...} or nulls with a "reason"}, "protocol": {...}}`.
    """
    if not hasattr(dataset, "render"):
        raise VidynError("continuous-time evaluation needs a dataset that renders any time (shapes)")
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise VidynError(f"fractions must lie strictly between 0 and 1; got {fractions}")
    offsets = extrapolation_offsets or tuple(k / 2 for k in range(1, 2 * num_future + 1))
    dt = float(dataset.frame_interval)
    n = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    num_frames = dataset[0]["frames"].shape[0] if n else 0
    if n == 0 or num_frames < max(2, num_context):
        raise VidynError(
            f"continuous evaluation needs clips of >= {max(2, num_context)} frames and >= 1 clip"
        )
    pool = min(num_frames, num_context + num_future)  # the span the `irregular` training mode draws from
    device = device or torch.device("cpu")
    state = _Run(models, offsets, device)
    for m in models.values():
        m.to(device).eval()
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        plan = _Plan(fractions, offsets, dt, num_context, pool, seed)
        for job in plan.jobs(dataset, idx, state.kinds):
            state.score(job, dataset, idx)
    out = state.results()
    out["protocol"] = _protocol(n, num_context, dt, dataset, fractions, offsets, pool, seed)
    return out


class _Plan:
    """The three protocols' (context, target times) for a batch of clips."""

    def __init__(
        self, fractions: tuple[float, ...], offsets: tuple[float, ...], dt: float, num_context: int,
        pool: int, seed: int,
    ) -> None:  # fmt: skip
        self.fractions, self.offsets, self.dt = fractions, offsets, dt
        self.num_context, self.pool, self.seed = num_context, pool, seed

    def jobs(self, dataset: Any, idx: list[int], kinds: dict[str, str]) -> list[tuple]:
        """(protocol, context (B, Tc, C, H, W), its times (B, Tc), target times (B, K), keys, gaps)."""
        clips = [dataset[i] for i in idx]
        frames = torch.stack([c["frames"] for c in clips])  # (B, T, C, H, W)
        times = torch.stack([c["times"] for c in clips]).float()  # (B, T)
        ctx, ctx_t = frames[:, : self.num_context], times[:, : self.num_context]
        sel = torch.stack([irregular_context(i, self.pool, self.num_context, self.seed) for i in idx])
        irr_ctx = frames.gather(1, sel.view(*sel.shape, 1, 1, 1).expand(-1, -1, *frames.shape[2:]))
        jobs = [
            self._between("interpolation", ctx, ctx_t, kinds),
            ("extrapolation", ctx, ctx_t, *self._beyond(ctx_t), None),
            self._between("irregular", irr_ctx, times.gather(1, sel), kinds),
        ]
        return jobs

    def _beyond(self, ct: Tensor) -> tuple[Tensor, list[str]]:
        beyond = [targets_beyond(float(row[-1]), self.offsets, self.dt) for row in ct]
        return torch.stack([b[0] for b in beyond]), beyond[0][1]

    def _between(self, protocol: str, c: Tensor, ct: Tensor, kinds: dict[str, str]) -> tuple:
        between = [targets_between(row, self.fractions) for row in ct]
        tt, keys = torch.stack([b[0] for b in between]), between[0][1]
        gaps = (ct.diff(dim=1).double() / self.dt).repeat_interleave(len(self.fractions), dim=1)  # (B, K)
        if protocol == "irregular":
            beyond_t, beyond_keys = self._beyond(ct)
            tt = torch.cat([tt, beyond_t], dim=1)
            kinds.update({k: "between" for k in keys} | {k: "beyond" for k in beyond_keys})
            keys = keys + beyond_keys
            gaps = torch.cat([gaps, gaps.new_full((gaps.shape[0], len(self.offsets)), float("nan"))], dim=1)
        return protocol, c, ct, tt, keys, gaps


class _Run:
    """Trackers and reasons per protocol and model, filled batch by batch."""

    def __init__(
        self, models: dict[str, nn.Module], offsets: tuple[float, ...], device: torch.device
    ) -> None:
        self.models, self.device = models, device
        self.grid_keys = {_key_beyond(k) for k in offsets if float(k).is_integer() and k > 0}
        self.trackers = {p: {name: _Tracker() for name in models} for p in PROTOCOLS}
        self.reasons: dict[str, dict[str, str]] = {p: {} for p in PROTOCOLS}
        self.kinds: dict[str, str] = {}

    def score(self, job: tuple, dataset: Any, idx: list[int]) -> None:
        protocol, c, ct, tt, keys, gaps = job
        truth = torch.stack([dataset.render(i, row) for i, row in zip(idx, tt, strict=True)]).to(self.device)
        c, ct, tt = c.to(self.device), ct.to(self.device), tt.to(self.device)
        for name, model in self.models.items():
            if name in self.reasons[protocol]:
                continue
            cols = list(range(len(keys)))
            if not getattr(model, "continuous_time", False):
                if protocol != "extrapolation" or not self.grid_keys:
                    self.reasons[protocol][name] = (
                        "discrete-time model: it predicts only on its context's frame grid, not at "
                        "in-between or irregular times"
                    )
                    continue
                cols = [j for j, k in enumerate(keys) if k in self.grid_keys]
            tracker = self.trackers[protocol][name]
            try:
                pred = _predict(model, c, ct, tt[:, cols], tracker)
            except ValueError as exc:  # the model refuses these times (VidynError is a ValueError)
                self.reasons[protocol][name] = f"the model cannot predict these times: {exc}"
                continue
            tracker.update(
                pred, truth[:, cols], [keys[j] for j in cols], None if gaps is None else gaps[:, cols]
            )

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for protocol in PROTOCOLS:
            kinds = self.kinds if protocol == "irregular" else None
            out[protocol] = {
                name: _null(self.reasons[protocol][name])
                if name in self.reasons[protocol]
                else self.trackers[protocol][name].result(kinds)
                for name in self.models
            }
        for name, model in self.models.items():  # say which offsets a grid-bound model was scored on
            entry = out["extrapolation"][name]
            if not getattr(model, "continuous_time", False) and entry["per_offset"] is not None:
                entry["note"] = (
                    "discrete-time: scored on the frame-grid offsets only (integer frame intervals)"
                )
        return out


def _protocol(
    n: int, num_context: int, dt: float, dataset: Any, fractions: tuple[float, ...],
    offsets: tuple[float, ...], pool: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "num_clips": n,
        "num_context": num_context,
        "frame_interval": dt,
        "irregular_dataset": bool(getattr(dataset, "irregular", False)),
        "context": "each clip's own first num_context frames at its own timestamps",
        "interpolation_fractions": list(fractions),
        "interpolation": "targets t_i + f (t_{i+1} - t_i) for every gap between consecutive context frames",
        "extrapolation_offsets": list(offsets),
        "extrapolation": "targets t_last + k * frame_interval beyond the last context frame (k = offsets)",
        "irregular": f"context = frame 0 + a random sorted subset of frames 1..{pool - 1} ({num_context} "
        f"frames in all, seed {seed} per clip); targets = its in-between ('between', keys f) and beyond "
        "('beyond', keys +k) times as above",
        "ground_truth": "dataset.render(index, target_times): the scene rendered at exactly those times",
        "conventions": "ssim/psnr/mse/mae per frame then averaged (Wang 2004 SSIM, 11x11 Gaussian, valid; "
        "PSNR capped at 100 dB); per_offset = the mean over frames at that offset; per_gap = the mean over "
        "in-between frames by the length of their gap between observations, in frame intervals",
    }
