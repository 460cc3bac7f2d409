r"""The GAN objective and the discriminator/generator step, once for the whole book (chapters 02, 03, 08, 09).

Goodfellow et al. (2014) define the two-player game

$$\min_G \max_D V(D, G) = \mathbb{E}_{x\sim p_\text{data}}[\log D(x)] + \mathbb{E}_{z\sim p_z}[\log(1 - D(G(z)))].$$

Every function here takes discriminator *logits* $\ell$ with $D = \sigma(\ell)$, and uses
$-\log\sigma(\ell) = \operatorname{softplus}(-\ell)$ and $-\log(1-\sigma(\ell)) = \operatorname{softplus}(\ell)$,
which stay finite where ``log(sigmoid(.))`` of a probability under- or overflows.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

from .train import optimizer_step


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Plain mean, or a weighted mean $\\sum w v / \\sum w$ (e.g. patches touching a hole)."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(1)


def gan_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""$V(D, G) = \mathbb{E}[\log D(x)] + \mathbb{E}[\log(1 - D(G(z)))]$ estimated from logits."""
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, fake_weight: torch.Tensor | None = None
) -> torch.Tensor:
    r"""What an optimizer *minimises* for $D$: $L_D = -V(D, G)$ (chapter 02, eq. D-loss).

    $$L_D = -\mathbb{E}_x[\log D(x)] - \mathbb{E}_z[\log(1 - D(G(z)))]
          = \operatorname{BCE}(\ell_\text{real}, 1) + \operatorname{BCE}(\ell_\text{fake}, 0).$$

    ``fake_weight`` (shaped like ``fake_logits``) averages the fake term over chosen positions only.
    """
    return F.softplus(-real_logits).mean() + _mean(F.softplus(fake_logits), fake_weight)


def generator_loss(
    fake_logits: torch.Tensor, non_saturating: bool = True, fake_weight: torch.Tensor | None = None
) -> torch.Tensor:
    r"""What an optimizer minimises for $G$; only the fake term of $V$ depends on $G$.

    Saturating (the minimax game): $L_G = \mathbb{E}_z[\log(1 - D(G(z)))]$, with
    $\partial L_G/\partial\ell = -\sigma(\ell) = -D(G(z))$ — it vanishes when $D$ confidently
    rejects the fakes, early in training. Non-saturating (Goodfellow et al. 2014, §3):
    $L_G = -\mathbb{E}_z[\log D(G(z))]$, with $\partial L_G/\partial\ell = -(1 - D(G(z)))$ —
    largest exactly there. Same fixed point.
    """
    if non_saturating:
        return _mean(F.softplus(-fake_logits), fake_weight)
    return -_mean(F.softplus(fake_logits), fake_weight)


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    r"""R1 (Mescheder et al. 2018): $\tfrac12\,\mathbb E_x\lVert\nabla_x\ell(x)\rVert^2$ on real data.

    It keeps $D$ flat around the real images, so that $D$ cannot become a cliff whose gradient tells
    $G$ nothing; ``real`` must have been scored with ``requires_grad``."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


# A discriminator's answer: logits, or (logits, class loss) for one that also classifies (AC-GAN)
Scores = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def _split(scores: Scores) -> tuple[torch.Tensor, torch.Tensor | None]:
    return scores if isinstance(scores, tuple) else (scores, None)


def gan_step(
    discriminate: Callable[[torch.Tensor], Scores],
    real: torch.Tensor,
    fake: torch.Tensor,
    opt_d: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    *,
    non_saturating: bool = True,
    fake_weight: torch.Tensor | None = None,
    g_extra: torch.Tensor | None = None,
    adv_weight: float = 1.0,
    joint: bool = False,
    r1: float = 0.0,
) -> dict[str, float]:
    r"""One discriminator step, then one generator step through the *updated* discriminator.

    1. $D \leftarrow D - \eta\nabla_D L_D$ on ``real`` and ``fake.detach()`` (no gradient to $G$);
    2. $G \leftarrow G - \eta\nabla_G\,(\lambda L_G + L_\text{extra})$, $D$'s weights frozen for
       this backward pass (only the gradient with respect to $D$'s input is needed).

    ``fake`` is $G(z)$ computed by the caller with its graph; ``g_extra`` adds a reconstruction
    loss (chapter 08) and ``adv_weight`` is $\lambda$. ``joint=True`` scores real and fake in one
    forward pass (for a discriminator without batch statistics). ``r1`` $=\gamma$ adds
    $\gamma$ times :func:`r1_penalty` to $L_D$. A discriminator that also classifies (AC-GAN, Odena
    et al. 2017) returns ``(logits, class loss)``: $D$ adds the class loss of the real images to
    $L_D$, $G$ that of its fakes to its own loss. Returns the two adversarial losses and the mean
    $D(x)$, $D(G(z))$.
    """
    real_class = None
    if joint:  # outputs split in the inputs' proportion (a packed D scores several rows at once)
        logits = None if r1 else discriminate(torch.cat([real, fake.detach()]))
        if not isinstance(logits, torch.Tensor):
            raise ValueError("joint scoring takes neither R1 nor a discriminator with a class loss")
        n_real = len(logits) * len(real) // (len(real) + len(fake))
        real_logits, fake_logits = logits[:n_real], logits[n_real:]
    else:
        real = real.detach().requires_grad_(True) if r1 else real
        real_logits, real_class = _split(discriminate(real))
        fake_logits, _ = _split(discriminate(fake.detach()))
    d_loss = discriminator_loss(real_logits, fake_logits, fake_weight)
    d_total = d_loss + (real_class if real_class is not None else 0.0)
    if r1:
        d_total = d_total + r1 * r1_penalty(real_logits, real)
    optimizer_step(opt_d, d_total)
    d_params = [p for group in opt_d.param_groups for p in group["params"]]
    for p in d_params:
        p.requires_grad_(False)
    try:
        fake_scores, fake_class = _split(discriminate(fake))
        adv = generator_loss(fake_scores, non_saturating, fake_weight)
        total = adv_weight * adv + (g_extra if g_extra is not None else 0.0)
        if fake_class is not None:
            total = total + fake_class
        optimizer_step(opt_g, total)
    finally:
        for p in d_params:
            p.requires_grad_(True)
    return {
        "d_loss": d_loss.item(),
        "g_loss": adv.item(),
        "d_real": torch.sigmoid(real_logits.detach()).mean().item(),
        "d_fake": torch.sigmoid(fake_logits.detach()).mean().item(),
    }
