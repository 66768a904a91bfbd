"""A class-consistency term for conditional generators trained by likelihood (`latent_sde`'s
`class_weight`): prompted samples should show the class they were asked for.

The ELBO trains the prior only to cover the posterior; nothing in it asks a sample drawn from (first
frame, law) to follow the law, and on `shapes` such samples mostly do not (docs/generation.md, "Why
prompted samples miss the law"). This term adds that ask, as AC-GAN's auxiliary classifier does for GANs
(Odena et al., ICML 2017) and with the same division of labour as the `gan` task's separate classifier: a
`MotionClassifier` learns the classes of REAL clips only (cross-entropy), and the generator is charged the
cross-entropy of that classifier, its weights frozen, on prior samples from the clips' first frames and
their labels, back-propagated through the sampler (reparameterised z0, the SDE's Brownian increments).
It is a deviation from the ELBO: a weighted extra objective, off by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidyn.models.interface import Condition


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Gradients pass through `module` to its inputs but do not reach its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class ClassTerms(NamedTuple):
    """real: the classifier's cross-entropy on real clips; prior: the frozen classifier's cross-entropy on
    the prompted prior samples (the generator's term); fake: with a fake class, the classifier's
    cross-entropy on the same samples, detached, against that class (0 without)."""

    real: Tensor
    prior: Tensor
    fake: Tensor


def class_consistency(
    model: nn.Module, classifier: nn.Module, frames: Tensor, times: Tensor, labels: Tensor, num_context: int,
    *, with_prior: bool = True, fake_class: int | None = None,
) -> ClassTerms:  # fmt: skip
    """The class terms on real clips `(B, T, C, H, W)` at `times` `(B, T)`: one prior sample per clip from
    its first `num_context` frames and its label, at the same times (none unless `with_prior`). Clips with
    label -1 are left out of all terms.

    `fake_class` (a classifier with one output more than the model has classes): the classifier also
    learns to put the generator's samples in that extra class, as the discriminator of a semi-supervised
    GAN does (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016), so the generator
    cannot satisfy it with cues that only separate real clips of one law from another."""
    keep = labels >= 0
    zero = frames.new_zeros(())
    if not bool(keep.any()):  # no labelled clip in the batch: nothing to ask
        return ClassTerms(zero, zero, zero)
    frames, times, labels = frames[keep], times[keep], labels[keep]
    real = F.cross_entropy(classifier(frames, times), labels)
    if not with_prior:
        return ClassTerms(real, zero, zero)
    context = (frames[:, :num_context], times[0, :num_context]) if num_context else (None, None)
    cond = Condition(frames=context[0], times=context[1], labels=labels)
    samples = model.sample(frames.shape[0], times[0], condition=cond)  # (B, T, C, H, W), differentiable
    with frozen(classifier):
        prior = F.cross_entropy(classifier(samples, times), labels)
    fake = zero
    if fake_class is not None:
        fake = F.cross_entropy(classifier(samples.detach(), times), torch.full_like(labels, fake_class))
    return ClassTerms(real, prior, fake)
