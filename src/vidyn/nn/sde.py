"""Latent-SDE blocks (Li et al., "Scalable Gradients for Stochastic Differential Equations", AISTATS 2020)
for `vidyn.models.sde_video`: the SDE function object torchsde integrates, a bounded diagonal diffusion,
solver checking, seeded Brownian motion, a solve that lands exactly on the requested times, time-grid
checks and the conv frame encoder/decoder.

- `DiagonalDiffusion`: g_i(z) = lo + (hi - lo) * sigmoid(MLP_i(z_i)), one small MLP per latent dimension
  (the reference example's `g_nets`, vectorised over dimensions), so the noise is truly diagonal: g_i
  depends on z_i only, which Milstein's and SRK's diagonal-noise formulas assume. The floor `lo` is a
  deviation from the reference (which has none): it keeps sampling stochastic if training drives the
  sigmoid towards zero, the known collapse (torchsde issues #2, #113).
- `LatentSDEFunc`: prior drift h(z, cond), posterior drift f(z, ctx_t) = h(z, cond) + u(z, ctx_t) and one
  diffusion g(z) shared by both (required for a finite path KL). The reference's f is a free MLP of
  [z, ctx]; writing it as h plus a correction is the same function class (u can cancel h) and makes the
  KL integrand (f - h) / g = u / g independent of the prior's scale at initialisation.
  Both drifts are autonomous (no time input): the dynamics of a clip do not depend on the clock, so
  samples beyond the trained length use the same law. The posterior sees time only through ctx_t.
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
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torchsde
from torch import Tensor, nn

from vidyn.errors import VidynError

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


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two hidden Softplus layers, as the reference's drift networks."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.Softplus(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.Softplus(),
        nn.Linear(hidden_dim, out_dim),
    )


class DiagonalDiffusion(nn.Module):
    """Bounded diagonal diffusion `(N, d) -> (N, d)` in [min_value, max_value]; see the module docstring."""

    def __init__(self, dim: int, hidden_dim: int, min_value: float, max_value: float) -> None:
        super().__init__()
        if not 0 <= min_value < max_value:
            raise VidynError(f"need 0 <= min_diffusion < max_diffusion; got {min_value}, {max_value}")
        self.min_value, self.max_value = float(min_value), float(max_value)
        # Per-dimension 1 -> hidden -> 1 MLPs with the default nn.Linear(1, hidden) initialisation bounds.
        bound2 = 1 / math.sqrt(hidden_dim)
        self.w1 = nn.Parameter(torch.empty(dim, hidden_dim).uniform_(-1, 1))
        self.b1 = nn.Parameter(torch.empty(dim, hidden_dim).uniform_(-1, 1))
        self.w2 = nn.Parameter(torch.empty(dim, hidden_dim).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(dim).uniform_(-bound2, bound2))

    def forward(self, z: Tensor) -> Tensor:
        hidden = nn.functional.softplus(z.unsqueeze(-1) * self.w1 + self.b1)  # (N, d, hidden)
        logits = (hidden * self.w2).sum(-1) + self.b2  # (N, d)
        return self.min_value + (self.max_value - self.min_value) * torch.sigmoid(logits)


class LatentSDEFunc(nn.Module):
    """The SDE torchsde integrates: `f` (posterior drift), `h` (prior drift), `g` (shared diffusion).

    Per-solve inputs are set with `set_inputs(cond, context)`: cond `(N, cond_dim)` for the prior drift,
    context `(N, context_dim)` for the posterior drift on the current interval (None when only the prior
    is integrated). `nfe` counts calls of f or h ("drift") and of g ("diffusion"), including torchsde's
    own shape checks and the extra f, g, h calls of `logqp`; `solve` adds "steps".
    """

    noise_type = "diagonal"

    def __init__(
        self,
        *,
        latent_dim: int,
        cond_dim: int,
        context_dim: int,
        hidden_dim: int,
        sde_type: str,
        min_diffusion: float,
        max_diffusion: float,
    ) -> None:
        super().__init__()
        self.sde_type = sde_type  # read by torchsde
        self.prior_drift = mlp(latent_dim + cond_dim, hidden_dim, latent_dim)
        self.posterior_correction = mlp(latent_dim + context_dim, hidden_dim, latent_dim)
        self.diffusion = DiagonalDiffusion(latent_dim, hidden_dim, min_diffusion, max_diffusion)
        self._cond: Tensor | None = None
        self._context: Tensor | None = None
        self.nfe = {"drift": 0, "diffusion": 0, "steps": 0}

    def set_inputs(self, cond: Tensor, context: Tensor | None = None) -> None:
        self._cond, self._context = cond, context

    def h(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe["drift"] += 1
        return self._prior(y)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        assert self._context is not None, "the posterior drift needs a context: call set_inputs"
        self.nfe["drift"] += 1
        return self._prior(y) + self.posterior_correction(torch.cat([y, self._context], dim=1))

    def _prior(self, y: Tensor) -> Tensor:
        assert self._cond is not None, "call set_inputs before solving"
        return self.prior_drift(torch.cat([y, self._cond], dim=1))

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe["diffusion"] += 1
        return self.diffusion(y)


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
    method: str,
    dt: float,
    adjoint: bool,
    generator: torch.Generator | None,
    contexts: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Integrate from `z0` at `times[0]`; return (states `(K, N, d)` at `times`, path KL `(N,)` or None).

    `times` strictly increasing (seconds). With `contexts` `(K, N, context_dim)` the posterior (drift f)
    is integrated with `logqp=True` and the summed log-ratio, the path KL to the prior, is returned;
    without, the prior (drift h). Set the condition with `sde.set_inputs(cond)` first. Adds the solver
    steps taken to `sde.nfe["steps"]`.
    """
    n, d = z0.shape
    logqp = contexts is not None
    times = torch.tensor(times, dtype=z0.dtype).tolist()  # the Brownian interval and the spans agree
    bm = brownian(times[0], times[-1], (n, d + 1 if logqp else d), z0, method, generator)
    names = None if logqp else {"drift": "h"}
    states, kl = [z0], z0.new_zeros(n)
    for i in range(len(times) - 1):
        if logqp:
            assert contexts is not None
            sde.set_inputs(sde._cond, contexts[i + 1])  # type: ignore[arg-type]
        gap = times[i + 1] - times[i]
        steps = max(1, math.ceil(gap / dt - 1e-6))
        # A hair over gap / steps: the last step is clamped onto the output time instead of leaving a
        # rounding-sized extra step (float32 times).
        step = gap / steps * (1 + 1e-4)
        sde.nfe["steps"] = sde.nfe.get("steps", 0) + steps
        span = torch.tensor(times[i : i + 2], dtype=z0.dtype, device=z0.device)
        kwargs = dict(bm=bm, method=method, dt=step, logqp=logqp, names=names)
        if adjoint:
            inputs = tuple(t for t in (sde._cond, sde._context) if t is not None and t.requires_grad)
            with warnings.catch_warnings():
                # reversible Heun warns that the steps do not divide the span exactly (by the 1e-4 above)
                warnings.filterwarnings("ignore", message="The spacing between time points")
                out = torchsde.sdeint_adjoint(
                    sde, states[-1], span, adjoint_params=tuple(sde.parameters()) + inputs, **kwargs
                )
        else:
            out = torchsde.sdeint(sde, states[-1], span, **kwargs)
        if logqp:
            ys, log_ratio = out
            kl = kl + log_ratio.sum(0)  # (1, N) increments -> (N,)
        else:
            ys = out
        states.append(ys[-1])
    return torch.stack(states), (kl if logqp else None)


def _levels(image_size: int) -> int:
    """Stride-2 levels between `image_size` and the 4x4 bottleneck; image_size must be 4 * 2**k, k >= 1."""
    levels = int(round(math.log2(image_size / 4))) if image_size >= 8 else 0
    if levels < 1 or 4 * 2**levels != image_size:
        raise VidynError(f"image_size must be a power of two >= 8 (8, 16, 32, 64, ...); got {image_size}")
    return levels


def _norm(channels: int) -> nn.BatchNorm2d:
    # BatchNorm, as the DCGAN-style encoders and decoders of SVG: measured on `shapes` (32 px, one small
    # object), a frame autoencoder of these blocks left the blank mean image within 300 steps with
    # BatchNorm (MSE 0.0057 -> 0.0016) and not at all with GroupNorm or without normalisation.
    return nn.BatchNorm2d(channels)


class FrameEncoder(nn.Module):
    """DCGAN-style conv encoder `(N, C, H, W) -> (N, out_dim)`: 3x3 conv, then stride-2 4x4 convs down to
    4x4 doubling the channels (at most 8x `base_channels`), BatchNorm and SiLU, then a linear layer."""

    def __init__(self, in_channels: int, image_size: int, base_channels: int, out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 3, 1, 1), nn.SiLU()]
        ch = base_channels
        for i in range(_levels(image_size)):
            nxt = base_channels * 2 ** min(i + 1, 3)
            layers += [nn.Conv2d(ch, nxt, 4, 2, 1), _norm(nxt), nn.SiLU()]
            ch = nxt
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(ch * 16, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.net(x).flatten(1))  # (N, ch, 4, 4) -> (N, ch * 16) -> (N, out_dim)


class FrameDecoder(nn.Module):
    """Mirror of `FrameEncoder`: `(N, in_dim) -> (N, out_channels, H, W)` logits (linear to 4x4, then
    stride-2 4x4 transposed convs halving the channels, BatchNorm and SiLU, then a 3x3 conv)."""

    def __init__(self, in_dim: int, out_channels: int, image_size: int, base_channels: int) -> None:
        super().__init__()
        levels = _levels(image_size)
        ch = base_channels * 2 ** min(levels, 3)
        self.top_channels = ch
        self.inp = nn.Linear(in_dim, ch * 16)
        layers: list[nn.Module] = [_norm(ch), nn.SiLU()]
        for i in range(levels, 0, -1):
            nxt = base_channels * 2 ** min(i - 1, 3)
            layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1), _norm(nxt), nn.SiLU()]
            ch = nxt
        layers.append(nn.Conv2d(ch, out_channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, v: Tensor) -> Tensor:
        return self.net(self.inp(v).unflatten(1, (self.top_channels, 4, 4)))  # (N, ch * 16) -> (N, ch, 4, 4)


def check_sde_video_args(
    sizes: dict[str, int], num_classes: int, dt: float, obs_std: float, consistency_weight: float
) -> None:
    """Refuse impossible `sde_video` arguments with a one-line error."""
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise VidynError(f"{name} must be a positive integer; got {value!r}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise VidynError(f"num_classes must be an integer >= 0 (0 = no classes); got {num_classes!r}")
    if not dt > 0 or not obs_std > 0 or not consistency_weight >= 0:
        got = f"{dt}, {obs_std}, {consistency_weight}"
        raise VidynError(f"need dt > 0, obs_std > 0 and consistency_weight >= 0; got {got}")


def randn_like(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like `like`, drawn from `generator` (on its own device) so runs repeat."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def rand_n(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """`n` uniform numbers from `generator`, on `like`'s device."""
    device = generator.device if generator is not None else like.device
    return torch.rand(n, generator=generator, device=device).to(like.device)
