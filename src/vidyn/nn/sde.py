"""Latent-SDE blocks (Li et al., "Scalable Gradients for Stochastic Differential Equations", AISTATS 2020)
for `vidyn.models.sde_video`: the SDE function object torchsde integrates, solver checking, seeded
Brownian motion, a solve that lands exactly on the requested times, time-grid checks, the encoded condition
(`ConditionMaps`) and the consistency module's re-encoding term (`reencoding_loss`; the conv networks are
in `vidyn.nn.sde_nets`).

- `LatentSDEFunc`: on latent maps, prior drift h(z, cond), posterior drift f(z, ctx_t) = h(z, cond) +
  u(z, ctx_t) (small conv nets) and one diagonal diffusion g(z) shared by both (required for a finite
  path KL). The reference's f is a free MLP of [z, ctx]; writing it as h plus a correction is the same
  function class (u can cancel h) and makes the KL integrand (f - h) / g = u / g independent of the
  prior's scale at initialisation. Both drifts are autonomous (no time input): the dynamics of a clip do
  not depend on the clock, so samples beyond the trained length use the same law. The posterior sees
  time only through ctx_t. torchsde integrates `BoundSDE`s: the networks with one interval's inputs.
- `solve`: one `torchsde.sdeint` (or `sdeint_adjoint`) call per interval between consecutive output
  times, each split into equal steps of at most `dt`, so every output is a solver state at exactly that
  time (torchsde alone steps on a grid from the first time and interpolates linearly to the outputs).
  The posterior context for the interval (t_i, t_{i+1}] is the encoding of observation i+1 onwards, the
  reference's piecewise-constant `ctx[searchsorted(ts, t, right=True)]`. Each interval starts its
  solver afresh (reversible Heun re-initialises its auxiliary state there; the other methods keep none),
  which also lets the drift's context change exactly at the observation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torchsde
from torch import Tensor, nn

from vidyn.errors import VidynError
from vidyn.nn.sde_nets import ChannelDiffusion, conv_net

# Methods torchsde implements for diagonal noise, by SDE type (Euler-Maruyama and SRK are Ito-only;
# midpoint, Heun and reversible Heun are Stratonovich-only; Milstein has one variant for each).
SDE_METHODS: dict[str, tuple[str, ...]] = {
    "ito": ("euler", "milstein", "srk"),
    "stratonovich": ("midpoint", "heun", "milstein", "reversible_heun"),
}


def check_solver(sde_type: str, method: str) -> None:
    """Raise VidynError unless torchsde can integrate a diagonal-noise SDE of `sde_type` with `method`."""
    if sde_type not in SDE_METHODS:
        raise VidynError(f"sde_type must be one of {', '.join(SDE_METHODS)}; got {sde_type!r}")
    if method not in SDE_METHODS[sde_type]:
        other = [t for t, ms in SDE_METHODS.items() if method in ms]
        hint = f" ({method!r} needs sde_type={other[0]!r})" if other and other[0] != sde_type else ""
        raise VidynError(
            f"method {method!r} is not valid for sde_type={sde_type!r}{hint}; "
            f"choose one of: {', '.join(SDE_METHODS[sde_type])}"
        )


@dataclass
class ConditionMaps:
    """sde_video's encoded condition (frames and/or label) of N clips: the prior's input and, with the
    consistency module, the decoder's content map and skip frame."""

    map: Tensor  # (N, cond_channels, S, S) for the prior
    content: Tensor | None  # (N, E, S, S) with consistency
    skip: Tensor | None  # (N, C, H, W) last context frame (zeros without one) with consistency


class LatentSDEFunc(nn.Module):
    """sde_video's SDE networks on latent maps `(N, C, S, S)`: the prior drift h(z, cond), the posterior
    correction u(z, ctx) (posterior drift f = h + u) and the diagonal diffusion g(z) shared by both.

    The module holds networks only. What torchsde integrates is `bind(cond, context)`, a `BoundSDE` that
    carries one solve interval's inputs: cond `(N, cond_channels, S, S)` for the prior drift, context
    `(N, context_channels, S, S)` for the posterior drift on that interval (None when only the prior is
    integrated). Binding per interval keeps each interval's inputs with it, so torchsde's adjoint, which
    evaluates the SDE again in the backward pass after later intervals have run, sees the right context,
    and a solved model holds no graph (it deep-copies). `nfe` counts the network evaluations computed:
    "drift" (prior drift or posterior correction) and "diffusion"; `solve` adds "steps".
    """

    noise_type = "diagonal"

    def __init__(
        self,
        *,
        latent_channels: int,
        latent_size: int,
        cond_channels: int,
        context_channels: int,
        hidden_channels: int,
        sde_type: str,
        min_diffusion: float,
        max_diffusion: float,
    ) -> None:
        super().__init__()
        self.sde_type = sde_type
        self.shape = (latent_channels, latent_size, latent_size)
        self.prior_drift = conv_net(latent_channels + cond_channels, hidden_channels, latent_channels)
        self.posterior_correction = conv_net(
            latent_channels + context_channels, hidden_channels, latent_channels, last_scale=0.01
        )
        self.diffusion = ChannelDiffusion(latent_channels, hidden_channels, min_diffusion, max_diffusion)
        self.nfe = {"drift": 0, "diffusion": 0, "steps": 0}

    def prior(self, z: Tensor, cond: Tensor) -> Tensor:
        """h(z, cond) on maps `(N, C, S, S)`."""
        return self.prior_drift(torch.cat([z, cond], dim=1))

    def correction(self, z: Tensor, context: Tensor) -> Tensor:
        """u(z, ctx) on maps `(N, C, S, S)`."""
        return self.posterior_correction(torch.cat([z, context], dim=1))

    def bind(self, cond: Tensor, context: Tensor | None = None) -> BoundSDE:
        return BoundSDE(self, cond, context)


class BoundSDE(nn.Module):
    """`LatentSDEFunc` with one interval's inputs, in torchsde's interface on flat states `(N, C * S * S)`:
    `f` (posterior drift), `h` (prior drift), `g` (diffusion).

    Each network is evaluated once per state (`_memo`): `torchsde.sdeint` evaluates f, g and (with
    `logqp`) h at y0 twice for its shape checks before the first step evaluates them there again, and
    `logqp` needs the prior drift in both f and h. With one solver step per interval (`solve`), the drifts
    ran 4.5 and the diffusion 4 times as often as the step needs. The drifts and the diffusion do not read
    t, so a value depends only on the state tensor (its storage, shape, strides and version), the bound
    inputs and the grad mode.
    """

    noise_type = "diagonal"

    def __init__(self, func: LatentSDEFunc, cond: Tensor, context: Tensor | None) -> None:
        super().__init__()
        self.func, self.sde_type, self.shape = func, func.sde_type, func.shape  # sde_type: read by torchsde
        self.cond, self.context = cond, context
        self._memos: dict[str, tuple[tuple, Tensor, Tensor]] = {}

    def inputs(self) -> tuple[Tensor, ...]:
        """The bound inputs that need gradients (the adjoint's extra parameters)."""
        return tuple(t for t in (self.cond, self.context) if t is not None and t.requires_grad)

    def _map(self, y: Tensor) -> Tensor:
        return y.view(y.shape[0], *self.shape)  # (N, C * S * S) -> (N, C, S, S)

    def _memo(self, name: str, z: Tensor, net: Callable[[Tensor], Tensor], count: str) -> Tensor:
        """`net(z)`, computed once per state `z` (class docstring). The key includes the tensor object z is
        a view of: the adjoint's backward evaluates at detached copies (same storage, a graph of their
        own). The memo holds z, hence that object and its storage."""
        base = z if z._base is None else z._base
        key = (id(base), z.data_ptr(), z.shape, z.stride(), z._version, torch.is_grad_enabled())
        hit = self._memos.get(name)
        if hit is not None and hit[0] == key:
            return hit[2]
        self.func.nfe[count] += 1
        out = net(z)
        self._memos[name] = (key, z, out)
        return out

    def h(self, t: Tensor, y: Tensor) -> Tensor:
        return self._prior(self._map(y)).flatten(1)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        assert self.context is not None, "the posterior drift needs a context: bind(cond, context)"
        z = self._map(y)
        u = self._memo("correction", z, lambda z: self.func.correction(z, self.context), "drift")
        return (self._prior(z) + u).flatten(1)

    def _prior(self, z: Tensor) -> Tensor:
        return self._memo("prior", z, lambda z: self.func.prior(z, self.cond), "drift")

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self._memo("diffusion", self._map(y), self.func.diffusion, "diffusion").flatten(1)

    def release(self) -> None:
        """Drop the memoised values (they hold the last state's graph)."""
        self._memos.clear()


def shared_grid(times: Tensor, batch: int, what: str) -> Tensor:
    """`(T,)` or `(batch, T)` times with identical rows -> `(T,)` float64 on the CPU.

    torchsde integrates one time grid for the whole batch, so batched rows must be equal."""
    if times.dim() == 2 and times.shape[0] in (1, batch):
        if not bool((times == times[:1]).all()):
            raise VidynError(
                f"sde_video solves one time grid per call: the rows of {what} must be identical; "
                "call once per distinct grid"
            )
        times = times[0]
    if times.dim() != 1 or times.numel() < 1:
        raise VidynError(f"{what} must have shape (T,) or ({batch}, T); got {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise VidynError(f"{what} contains NaN or infinite values; pass finite times in seconds")
    return times.detach().to("cpu", torch.float64)


@contextmanager
def running_statistics(module: nn.Module) -> Iterator[None]:
    """Inside the block, BatchNorm layers of `module` use their running statistics and do not update them."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


def reencoding_loss(encoder: nn.Module, head: nn.Module, frames: Tensor, latents: Tensor) -> Tensor:
    """sde_video's re-encoding term: frames `(B, T, C, H, W)` decoded from the latent maps `(T, B, C_z, S,
    S)`, encoded again (`head(encoder(x))`), should land on them: 0.5 * mean (head(enc(x_t)) - sg(z_t))^2
    / var_c, var_c the batch variance of sg(z) per channel, summed over frames, mean over clips."""
    b, t = frames.shape[:2]
    with running_statistics(encoder):  # decoded frames must not shift the real frames' statistics
        z_hat = head(encoder(frames.flatten(0, 1)))  # (B*T, C_z, S, S)
    target = latents.transpose(0, 1).flatten(0, 1).detach()  # (T, B, ...) -> (B*T, C_z, S, S)
    # Standardised per channel: the latent's scale is free (the z0 prior is learned), and an
    # unnormalised error grew with it to dominate the loss (measured: 2e4 nats within 100 steps).
    scale = target.var((0, 2, 3), correction=0, keepdim=True).clamp_min(1e-4)  # (1, C_z, 1, 1)
    err = (z_hat - target).square() / scale
    return 0.5 * err.mean((1, 2, 3)).unflatten(0, (b, t)).sum(1).mean()


def check_increasing(times: Tensor, what: str) -> None:
    if not bool((times.diff() > 0).all()):
        raise VidynError(f"{what} must be strictly increasing; sort the frames by time")


def brownian(
    t0: float, t1: float, size: tuple[int, int], like: Tensor, method: str, generator: torch.Generator | None
) -> torchsde.BrownianInterval:
    """Brownian motion on [t0, t1] whose randomness is drawn from `generator` (the global RNG if None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=device))
    levy = "space-time" if method == "srk" else "none"  # SRK needs space-time Levy area
    return torchsde.BrownianInterval(
        t0=t0,
        t1=t1,
        size=size,
        dtype=like.dtype,
        device=like.device,
        entropy=seed,
        levy_area_approximation=levy,
    )


def solve(
    sde: LatentSDEFunc,
    z0: Tensor,
    times: list[float],
    *,
    cond: Tensor,
    method: str,
    dt: float,
    adjoint: bool,
    generator: torch.Generator | None,
    contexts: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Integrate from `z0` at `times[0]`; return (states `(K, N, d)` at `times`, path KL `(N,)` or None).

    `times` strictly increasing (seconds). With `contexts` `(K, N, E, S, S)` the posterior (drift f)
    is integrated with `logqp=True` and the summed log-ratio, the path KL to the prior, is returned;
    without, the prior (drift h); `cond` `(N, cond_channels, S, S)` conditions the prior drift. Adds the
    solver steps taken to `sde.nfe["steps"]`.
    """
    n, d = z0.shape
    logqp = contexts is not None
    times = torch.tensor(times, dtype=z0.dtype).tolist()  # the Brownian interval and the spans agree
    bm = brownian(times[0], times[-1], (n, d + 1 if logqp else d), z0, method, generator)
    names = None if logqp else {"drift": "h"}
    states, kl = [z0], z0.new_zeros(n)
    for i in range(len(times) - 1):
        bound = sde.bind(cond, contexts[i + 1] if contexts is not None else None)  # this interval's inputs
        gap = times[i + 1] - times[i]
        steps = max(1, math.ceil(gap / dt - 1e-6))
        # A hair over gap / steps: the last step is clamped onto the output time instead of leaving a
        # rounding-sized extra step (float32 times).
        step = gap / steps * (1 + 1e-4)
        sde.nfe["steps"] = sde.nfe.get("steps", 0) + steps
        span = torch.tensor(times[i : i + 2], dtype=z0.dtype, device=z0.device)
        kwargs = dict(bm=bm, method=method, dt=step, logqp=logqp, names=names)
        if adjoint:
            with warnings.catch_warnings():
                # reversible Heun warns that the steps do not divide the span exactly (by the 1e-4 above)
                warnings.filterwarnings("ignore", message="The spacing between time points")
                out = torchsde.sdeint_adjoint(
                    bound, states[-1], span, adjoint_params=tuple(sde.parameters()) + bound.inputs(), **kwargs
                )
        else:
            out = torchsde.sdeint(bound, states[-1], span, **kwargs)
        bound.release()  # the adjoint's backward evaluates afresh (detached states: no memo hit)
        if logqp:
            ys, log_ratio = out
            kl = kl + log_ratio.sum(0)  # (1, N) increments -> (N,)
        else:
            ys = out
        states.append(ys[-1])
    return torch.stack(states), (kl if logqp else None)


class GaussLaplace:
    """Pixel density proportional to exp(-e^2 / (2 std^2) - |e| / b), e = x - mean: a Gaussian's pull on
    large errors plus a Laplace's constant pull on small ones (its optimum is exactly `mean` = x more
    often). Normaliser Z = sqrt(2 pi) std erfcx(u), u = std / (sqrt(2) b)."""

    def __init__(self, mean: Tensor, std: float, scale: float) -> None:
        self.mean, self.std, self.scale = mean, std, scale
        u = torch.tensor(std / (math.sqrt(2) * scale), dtype=torch.float64)
        self.log_z = math.log(math.sqrt(2 * math.pi) * std) + float(torch.special.erfcx(u).log())

    def log_prob(self, x: Tensor) -> Tensor:
        e = x - self.mean
        return -e.square() / (2 * self.std**2) - e.abs() / self.scale - self.log_z


# sde_video's pixel likelihoods of scale `obs_std` (a Laplace of std s has scale s / sqrt(2)).
LIKELIHOODS = {
    "gaussian": lambda mean, std: torch.distributions.Normal(mean, std),
    "laplace": lambda mean, std: torch.distributions.Laplace(mean, std / math.sqrt(2)),
    "gauss_laplace": lambda mean, std: GaussLaplace(mean, std, std / math.sqrt(2)),
}


def check_sde_video_args(
    sizes: dict[str, int],
    num_classes: int,
    dt: float,
    obs_std: float,
    consistency_weight: float,
    likelihood: str = "gaussian",
) -> None:
    """Refuse impossible `sde_video` arguments with a one-line error."""
    if likelihood not in LIKELIHOODS:
        raise VidynError(f"likelihood must be one of {sorted(LIKELIHOODS)}; got {likelihood!r}")
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise VidynError(f"{name} must be a positive integer; got {value!r}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise VidynError(f"num_classes must be an integer >= 0 (0 = no classes); got {num_classes!r}")
    if not dt > 0 or not obs_std > 0 or not consistency_weight >= 0:
        got = f"{dt}, {obs_std}, {consistency_weight}"
        raise VidynError(f"need dt > 0, obs_std > 0 and consistency_weight >= 0; got {got}")


def check_frames(frames: Tensor, channels: int, size: int, what: str) -> None:
    """Refuse anything but `(B, T, channels, size, size)` frames, with a one-line error saying the fix."""
    if frames.dim() != 5 or frames.shape[1] < 1 or tuple(frames.shape[2:]) != (channels, size, size):
        raise VidynError(
            f"{what} must be (B, T, {channels}, {size}, {size}) frames in [0, 1]; got {tuple(frames.shape)} "
            f"(resize to {size}x{size}{', grayscale' if channels == 1 else ''})"
        )


def check_labels(labels: Tensor | None, n: int, num_classes: int, device: torch.device) -> Tensor | None:
    """Class ids (1 or `n` of them; -1 = none) as `(n,)` int64 on `device`, or None."""
    if labels is None:
        return None
    labels = labels.reshape(-1).long()
    if labels.numel() not in (1, n):
        raise VidynError(f"labels must have 1 or {n} entries; got {labels.numel()}")
    bad = labels[(labels < -1) | (labels >= num_classes)]
    if bad.numel():
        valid = f"0..{num_classes - 1} or -1 (none)" if num_classes else "-1 (none)"
        raise VidynError(f"unknown class id {int(bad[0])}; this model takes {valid}")
    return labels.expand(n).to(device)


def check_condition_frames(
    frames: Tensor, times: Tensor | None, n: int, channels: int, size: int
) -> tuple[Tensor, Tensor]:
    """Condition frames `(1 or n, T_c, C, H, W)` and times -> (frames `(n, T_c, ...)`, times `(T_c,)`)."""
    check_frames(frames, channels, size, "condition.frames")
    if frames.shape[0] not in (1, n):
        raise VidynError(f"condition.frames must have batch 1 or num_samples={n}; got {frames.shape[0]}")
    if times is None:
        raise VidynError("condition.times is required with condition.frames (seconds, one per frame)")
    ctx_t = shared_grid(times, frames.shape[0], "condition.times")
    if ctx_t.numel() != frames.shape[1]:
        raise VidynError(f"condition.times has {ctx_t.numel()} times for {frames.shape[1]} frames")
    check_increasing(ctx_t, "condition.times")
    return frames.expand(n, -1, -1, -1, -1), ctx_t


def randn_like(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `like`, drawn from `generator` (on its own device) so runs repeat."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def rand_n(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """`n` uniform numbers from `generator`, on `like`'s device."""
    device = generator.device if generator is not None else like.device
    return torch.rand(n, generator=generator, device=device).to(like.device)
