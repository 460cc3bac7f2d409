"""Chapter 07 · neural style transfer: CNN features, Gram matrices, Gatys optimisation, a fast stylizer.

Two ways to paint the *content* of one photo in the *style* of another:

* **Gatys et al. 2016** (*Image Style Transfer Using Convolutional Neural Networks*): start from an image
  and optimise its pixels so that a frozen ImageNet CNN sees the content image's deep features and the
  style image's feature *correlations* (Gram matrices). Slow — hundreds of forward/backward passes per
  picture — but needs no training.
* **Johnson et al. 2016** (*Perceptual Losses for Real-Time Style Transfer*): train a feed-forward
  network once, with the same losses, on many content crops; afterwards one forward pass stylises any
  photo. Instance normalisation (Ulyanov et al. 2016) and upsample-then-convolve decoders (Odena et al.
  2016) make small versions of it work; on a CPU budget it also needs an identity skip (the network
  predicts a change of the photo), or it paints the style's texture and loses the content.

Images are ``(B, 3, H, W)`` float tensors in ``[0, 1]``; the extractor applies ImageNet normalisation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------
# Feature extractors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backbone:
    """Which layers of an ImageNet CNN's ``features`` stack serve as style and content layers.

    ``style_layers`` / ``content_layer`` map a readable name to an index into ``features``; the tapped
    tensor is the *output* of that module. ``style_weight`` is the weight that balances the two losses
    for this backbone (the losses' scales differ between networks, so the notebook sweeps multiples of it).
    ``fast_content_layer`` is the content layer for training the fast stylizer (``None``: ``content_layer``).
    """

    name: str
    style_layers: dict[str, int]
    content_layer: tuple[str, int]
    style_weight: float
    tv_weight: float
    fast_content_layer: tuple[str, int] | None = None
    description: str = ""


MOBILENET_V2 = Backbone(
    name="mobilenet_v2",
    # style: the last block of each resolution stage at 224 px (sizes at 224 px)
    # features[1]  112×112×16  (stride 2)  edges, colour
    # features[3]   56×56×24   (stride 4)  small textures
    # features[6]   28×28×32   (stride 8)  motifs
    # features[10]  14×14×64   (stride 16) larger patterns, parts
    # content: features[13], 14×14×96, the deepest block before the 7×7 stage
    style_layers={"b1": 1, "b3": 3, "b6": 6, "b10": 10},
    content_layer=("b13", 13),
    style_weight=1e4,
    tv_weight=10.0,
    # the fast stylizer reads content where Gatys does: with its identity skip it starts from the photo too
    # (without the skip, neither features[13] nor the shallower features[3] kept the cat on the cpu budget)
    fast_content_layer=None,
    description="torchvision MobileNetV2, ImageNet-1k weights (IMAGENET1K_V1), offline",
)

VGG19 = Backbone(
    name="vgg19",
    # the ReLU after conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 (style) and conv4_2 (content): Gatys et al.
    style_layers={"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29},
    content_layer=("relu4_2", 22),
    style_weight=1e5,
    tv_weight=10.0,
    fast_content_layer=("relu2_2", 8),  # Johnson et al.
    description="torchvision VGG19, ImageNet-1k weights (IMAGENET1K_V1), downloaded",
)


class FeatureExtractor(nn.Module):
    """A frozen CNN ``features`` stack, cut after the deepest layer we need, that returns tapped outputs.

    ``forward(x)`` takes images in ``[0, 1]``, applies ImageNet normalisation and returns
    ``{layer name: (B, C_l, H_l, W_l)}`` for every style layer and the content layer.
    """

    def __init__(self, features: nn.Sequential, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps: dict[int, list[str]] = {}
        for name, index in [*backbone.style_layers.items(), backbone.content_layer]:
            self.taps.setdefault(index, []).append(name)
        self.body = nn.Sequential(*list(features.children())[: max(self.taps) + 1]).eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Always stay in eval mode: BatchNorm must use its ImageNet statistics."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.body):
            h = module(h)
            for name in self.taps.get(index, ()):
                out[name] = h
        return out

    def with_content_layer(self, layer: tuple[str, int] | None) -> "FeatureExtractor":
        """The same frozen network (shared weights) reading its content features at ``layer`` instead."""
        if layer is None or layer == self.backbone.content_layer:
            return self
        from dataclasses import replace

        other = FeatureExtractor(self.body, replace(self.backbone, content_layer=layer))
        return other.to(self.mean.device)

    @property
    def style_names(self) -> list[str]:
        return list(self.backbone.style_layers)

    @property
    def content_name(self) -> str:
        return self.backbone.content_layer[0]


def mobilenet_extractor() -> FeatureExtractor:
    """MobileNetV2 (ImageNet weights from the offline asset) cut after ``features[13]``."""
    from . import assets

    return FeatureExtractor(assets.mobilenet_v2_imagenet().features, MOBILENET_V2)


def vgg19_reachable() -> bool:
    """True when torchvision's VGG19 weights can be had: cached in torch hub, or the host is reachable.

    Never true with ``AIGC_OFFLINE=1``.
    """
    from .net import offline, reachable

    if offline():
        return False
    from torchvision.models import VGG19_Weights

    cached = torch.hub.get_dir() + "/checkpoints/" + VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    import os

    return os.path.exists(cached) or reachable("download.pytorch.org")


def vgg19_extractor() -> FeatureExtractor:
    """torchvision VGG19 with ImageNet weights (downloads 548 MB once), cut after ``relu5_1``."""
    from torchvision.models import VGG19_Weights, vgg19

    return FeatureExtractor(vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features, VGG19)


def pick_extractor(choice: str = "auto", prefer_vgg: bool = False) -> FeatureExtractor:
    """``"mobilenet_v2"``, ``"vgg19"``, or ``"auto"``: VGG19 when ``prefer_vgg`` and its weights are reachable."""
    if choice == "vgg19" or (choice == "auto" and prefer_vgg and vgg19_reachable()):
        return vgg19_extractor()
    if choice not in ("auto", "mobilenet_v2", "vgg19"):
        raise ValueError(f"unknown backbone {choice!r}: use auto, mobilenet_v2 or vgg19")
    return mobilenet_extractor()


def layer_table(extractor: FeatureExtractor, size: int = 224) -> list[tuple[str, int, str, int, int, str]]:
    """``(name, index, module type, channels, spatial side, role)`` of every tapped layer at ``size`` px."""
    with torch.no_grad():
        feats = extractor(torch.zeros(1, 3, size, size, device=extractor.mean.device))
    layers = dict(extractor.backbone.style_layers)
    layers.setdefault(*extractor.backbone.content_layer)
    rows = []
    for name, index in sorted(layers.items(), key=lambda item: item[1]):
        roles = [r for r, ok in (("style", name in extractor.backbone.style_layers),
                                 ("content", name == extractor.content_name)) if ok]  # fmt: skip
        f = feats[name]
        rows.append((name, index, type(extractor.body[index]).__name__, f.shape[1], f.shape[2], " + ".join(roles)))
    return rows


# --------------------------------------------------------------------------------------------------
# Losses (Chapter 07)
# --------------------------------------------------------------------------------------------------


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    r"""Gram matrix of a feature map, averaged over positions (Chapter 07, eq. (2)).

    With the feature map of layer $l$ flattened to $F^l \in \mathbb{R}^{N_l \times M_l}$ ($N_l$ channels,
    $M_l = H_l W_l$ positions),

    $$G^l_{ij} = \frac{1}{M_l} \sum_{k=1}^{M_l} F^l_{ik} F^l_{jk},
    \qquad G^l = \tfrac{1}{M_l} F^l (F^l)^\top .$$

    $G^l_{ij}$ is the (uncentred) correlation of channels $i$ and $j$ *averaged over where they occur*:
    the positions are summed away, so $G$ keeps which features co-occur (texture, colour, stroke) and
    forgets where (layout) — that is why it describes style. Gatys et al. use the plain sum
    $F F^\top$; dividing by $M_l$ makes $G$ independent of the image size, so a network trained on
    128-px crops and a 224-px Gatys run see the same style targets. ``(B, C, H, W) -> (B, C, C)``.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Content loss at one layer (Chapter 07, eq. (1)): mean squared feature difference.

    $$\mathcal{L}_\text{content} = \frac{1}{N_l M_l} \sum_{i,k} \big(F^l_{ik}(x) - F^l_{ik}(c)\big)^2,$$

    Gatys et al.'s $\tfrac12 \sum (F - P)^2$ up to the constant $\tfrac{2}{N_l M_l}$.
    """
    return F.mse_loss(features, target.expand_as(features))


def style_loss(
    features: dict[str, torch.Tensor],
    target_grams: dict[str, torch.Tensor],
    layer_weights: dict[str, float] | None = None,
) -> torch.Tensor:
    r"""Style loss summed over the style layers (Chapter 07, eq. (3)).

    $$\mathcal{L}_\text{style} = \sum_l w_l \, \frac{1}{N_l^2} \sum_{i,j} \big(G^l_{ij}(x) - G^l_{ij}(s)\big)^2 .$$

    With Gatys et al.'s unnormalised Gram matrices $\hat G = M_l G$ their layer term is
    $E_l = \frac{1}{4 N_l^2 M_l^2} \sum (\hat G - \hat A)^2 = \frac{1}{4 N_l^2} \sum (G - A)^2$, so each of our
    terms is exactly $4 E_l$. $w_l = 1$ unless ``layer_weights`` says otherwise. A target Gram of batch 1
    is broadcast over a batch of images.
    """
    total = torch.zeros((), device=next(iter(features.values())).device)
    for name, target in target_grams.items():
        g = gram_matrix(features[name])
        w = 1.0 if layer_weights is None else layer_weights.get(name, 1.0)
        total = total + w * F.mse_loss(g, target.expand_as(g))
    return total


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    r"""Total-variation regulariser (Chapter 07, eq. (5)): mean squared difference of neighbouring pixels.

    $$\mathcal{L}_\text{TV} = \frac{1}{|\Omega|}\sum_{c,i,j} (x_{c,i+1,j} - x_{c,i,j})^2 + (x_{c,i,j+1} - x_{c,i,j})^2$$

    It penalises high-frequency noise (and the checkerboard that strided CNNs leave in the gradient).
    """
    dh = image[..., 1:, :] - image[..., :-1, :]
    dw = image[..., :, 1:] - image[..., :, :-1]
    return dh.pow(2).mean() + dw.pow(2).mean()


@dataclass
class StyleTargets:
    """Precomputed targets: the content layer's features of the content image and the style Grams."""

    content: torch.Tensor | None
    grams: dict[str, torch.Tensor]
    layer_weights: dict[str, float] | None = None


def style_targets(
    extractor: FeatureExtractor, style: torch.Tensor, content: torch.Tensor | None = None, normalise: bool = False
) -> StyleTargets:
    r"""Gram matrices of ``style`` at every style layer, and ``content``'s content-layer features.

    With ``normalise`` each layer is weighted by $w_l = 1 / \overline{A_l^2}$ (one over the mean squared
    entry of the target Gram), so every layer's term starts on the same scale whatever its activations.
    """
    with torch.no_grad():
        grams = {n: gram_matrix(f) for n, f in extractor(style).items() if n in extractor.backbone.style_layers}
        feats = extractor(content)[extractor.content_name] if content is not None else None
    weights = {n: 1.0 / g.pow(2).mean().item() for n, g in grams.items()} if normalise else None
    return StyleTargets(feats, grams, weights)


def total_loss(
    extractor: FeatureExtractor,
    image: torch.Tensor,
    targets: StyleTargets,
    style_weight: float,
    content_weight: float = 1.0,
    tv_weight: float = 0.0,
    content_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""Gatys' objective (Chapter 07, eq. (4)):
    $\mathcal{L} = \alpha\,\mathcal{L}_\text{content} + \beta\,\mathcal{L}_\text{style} + \gamma\,\mathcal{L}_\text{TV}$.

    Returns the loss and its unweighted parts ``{"content", "style", "tv", "total"}`` as floats.
    ``content_features`` overrides ``targets.content`` (the fast stylizer's targets change every batch).
    """
    feats = extractor(image)
    target = targets.content if content_features is None else content_features
    lc = content_loss(feats[extractor.content_name], target)
    ls = style_loss(feats, targets.grams, targets.layer_weights)
    lt = tv_loss(image)
    loss = content_weight * lc + style_weight * ls + tv_weight * lt
    return loss, {"content": lc.item(), "style": ls.item(), "tv": lt.item(), "total": loss.item()}


# --------------------------------------------------------------------------------------------------
# Gatys optimisation
# --------------------------------------------------------------------------------------------------


@dataclass
class GatysResult:
    """One Gatys run: the image, per-evaluation loss history, wall time and the style/content losses."""

    image: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    style_initial: float = float("nan")
    style_final: float = float("nan")
    content_final: float = float("nan")

    @property
    def style_ratio(self) -> float:
        """Final ÷ initial style loss."""
        return self.style_final / self.style_initial


def gatys_transfer(
    extractor: FeatureExtractor,
    content: torch.Tensor,
    style: torch.Tensor,
    style_weight: float,
    evaluations: int,
    optimizer: Literal["lbfgs", "adam"] = "lbfgs",
    content_weight: float = 1.0,
    tv_weight: float = 0.0,
    lr: float = 0.02,
    init: torch.Tensor | None = None,
    progress: bool = True,
    desc: str | None = None,
    clamp_every_step: bool = True,
) -> GatysResult:
    r"""Optimise an image's pixels for Gatys' loss (Chapter 07, eq. (4)), starting from the content image.

    Both optimisers get the same budget: ``evaluations`` forward+backward passes through the CNN (an L-BFGS
    iteration may spend several in its strong-Wolfe line search). Pixels are clamped to ``[0, 1]`` after
    every step. ``history`` records ``total``/``style``/``content``/``tv`` at every evaluation and the
    elapsed ``seconds``; ``seconds`` of the result is the whole run's wall time, target features included.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    targets = style_targets(extractor, style, content)
    x = (content if init is None else init).detach().clone().requires_grad_(True)
    history: dict[str, list[float]] = {"total": [], "style": [], "content": [], "tv": [], "seconds": []}

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss, parts = total_loss(extractor, x, targets, style_weight, content_weight, tv_weight)
        loss.backward()
        for k, v in parts.items():
            history[k].append(v)
        history["seconds"].append(time.perf_counter() - start)
        return loss

    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [x], lr=1.0, max_iter=1, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=1e-12, tolerance_change=1e-15,
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr)
    else:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', not {optimizer!r}")

    bar = tqdm(total=evaluations, desc=desc or f"Gatys ({optimizer})", leave=False, disable=not progress)
    while len(history["total"]) < evaluations:
        before = len(history["total"])
        opt.step(closure)
        if clamp_every_step:
            with torch.no_grad():
                x.clamp_(0, 1)
        bar.update(min(len(history["total"]), evaluations) - before)
        if len(history["total"]) == before:  # L-BFGS converged and stopped evaluating
            break
    bar.close()
    with torch.no_grad():
        x.clamp_(0, 1)
        _, final = total_loss(extractor, x, targets, style_weight, content_weight, tv_weight)
    seconds = time.perf_counter() - start
    return GatysResult(
        image=x.detach(),
        history=history,
        seconds=seconds,
        style_initial=history["style"][0],
        style_final=final["style"],
        content_final=final["content"],
    )


# --------------------------------------------------------------------------------------------------
# Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer")
# --------------------------------------------------------------------------------------------------

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    r"""RGB → YIQ: $Y$ is luminance, $I, Q$ carry the colour. ``(B, 3, H, W)`` both ways."""
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_yiq`."""
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def luminance_transfer(
    extractor: FeatureExtractor, content: torch.Tensor, style: torch.Tensor, **gatys_kwargs: object
) -> tuple[torch.Tensor, GatysResult]:
    r"""Colour-preserving style transfer: run Gatys on luminance only, keep the content's colours.

    1. $Y_c, Y_s$ = luminance of content and style; match the style's luminance mean and standard deviation
       to the content's: $Y_s' = \frac{\sigma_c}{\sigma_s}(Y_s - \mu_s) + \mu_c$.
    2. Gatys on the grey images $(Y, Y, Y)$ → stylised luminance $Y_x$.
    3. Recombine $Y_x$ with the content's $I, Q$ channels and convert back to RGB.

    Returns ``(rgb image, the grey Gatys result)``.
    """
    yc = rgb_to_yiq(content)
    ys = rgb_to_yiq(style)[:, :1]
    lum_c = yc[:, :1]
    ys = (ys - ys.mean()) / (ys.std() + 1e-8) * lum_c.std() + lum_c.mean()
    grey_c, grey_s = lum_c.clamp(0, 1).expand(-1, 3, -1, -1), ys.clamp(0, 1).expand(-1, 3, -1, -1)
    result = gatys_transfer(extractor, grey_c.contiguous(), grey_s.contiguous(), **gatys_kwargs)  # type: ignore[arg-type]
    y_out = result.image.mean(dim=1, keepdim=True)
    rgb = yiq_to_rgb(torch.cat([y_out, yc[:, 1:]], dim=1)).clamp(0, 1)
    return rgb, result


# --------------------------------------------------------------------------------------------------
# Fast feed-forward stylizer (Johnson et al. 2016, with instance norm and resize-convolutions)
# --------------------------------------------------------------------------------------------------


class _ConvLayer(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(c_in, c_out, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(c_out, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_ConvLayer(channels, channels, 3), _ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _UpConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), _ConvLayer(c_in, c_out, 3))


class TransformerNet(nn.Module):
    r"""Johnson et al.'s image transformation network, slimmed: ``width`` channels at full resolution.

    ``k×k conv → n_down stride-2 convs → n_residual residual blocks → n_down (nearest upsample + 3×3 conv)
    → k×k conv``. Reflection padding everywhere, instance normalisation instead of batch normalisation
    (Ulyanov et al. 2016), upsample-then-convolve instead of transposed convolutions (no checkerboard).
    Input and output are images in ``[0, 1]`` of any size divisible by $2^{n_\text{down}}$.

    With ``skip`` (Chapter 07, eq. (7)) the network predicts a *change* of the photo,
    $f_\theta(c) = c + g_\theta(c)$, and its last convolution starts at zero, so an untrained net is the
    identity: training starts *from the photo*, as Gatys does, and only has to learn the brush strokes.
    The sum is left unclamped while training (clamping, or a sigmoid, would zero the gradient of every
    saturated pixel, and saturated highlights then never come back) and clamped to ``[0, 1]`` in eval mode.
    Without it (Johnson's original) $f_\theta(c) = \sigma(g_\theta(c))$ starts from grey noise and must
    learn to rebuild the whole photo before the content loss can pull the layout back.
    """

    def __init__(
        self, width: int = 16, n_residual: int = 3, n_down: int = 2, end_kernel: int = 9, skip: bool = False
    ) -> None:
        super().__init__()
        self.config = {"width": width, "n_residual": n_residual, "n_down": n_down, "end_kernel": end_kernel,
                       "skip": skip}  # fmt: skip
        self.skip = skip
        chans = [width * 2**i for i in range(n_down + 1)]
        layers: list[nn.Module] = [_ConvLayer(3, chans[0], end_kernel)]
        layers += [_ConvLayer(chans[i], chans[i + 1], 3, stride=2) for i in range(n_down)]
        layers += [_ResidualBlock(chans[-1]) for _ in range(n_residual)]
        layers += [_UpConv(chans[i + 1], chans[i]) for i in reversed(range(n_down))]
        last = _ConvLayer(chans[0], 3, end_kernel, norm=False, relu=False)
        if skip:
            nn.init.zeros_(last[1].weight)
            nn.init.zeros_(last[1].bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        if not self.skip:
            return torch.sigmoid(h)
        out = x + h
        return out if self.training else out.clamp(0, 1)


def to_tensor_image(img: np.ndarray, size: int | None = None, square: bool = True) -> torch.Tensor:
    """``H×W×3`` uint8 → ``(1, 3, h, w)`` float in ``[0, 1]``; resized so the short side is ``size``
    (and centre-cropped to ``size×size`` when ``square``)."""
    t = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255).unsqueeze(0)
    if size is not None:
        h, w = t.shape[-2:]
        scale = size / min(h, w)
        t = F.interpolate(t, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)  # fmt: skip
        if square:
            h, w = t.shape[-2:]
            top, left = (h - size) // 2, (w - size) // 2
            t = t[..., top : top + size, left : left + size]
    return t.clamp(0, 1).contiguous()


def random_crops(
    photos: Sequence[torch.Tensor], n: int, size: int, generator: torch.Generator, max_scale: float = 2.0
) -> torch.Tensor:
    """``n`` random ``size×size`` crops: a random photo, a random zoom (crop side in ``[size, max_scale·size]``
    pixels of the photo, resized to ``size``), a random position and a random horizontal flip."""
    out = []
    for _ in range(n):
        p = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        h, w = p.shape[-2:]
        side_max = min(h, w, int(size * max_scale))
        side = int(torch.randint(min(size, side_max), side_max + 1, (1,), generator=generator))
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = p[..., top : top + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out).clamp(0, 1)


@dataclass(frozen=True)
class FastConfig:
    r"""Every setting that changes a fast stylizer's trained weights (besides the net, style and photos).

    ``steps`` Adam steps on batches of ``batch_size`` random ``crop``-px crops (zoomed by up to ``max_scale``),
    loss weights $\alpha$ = ``content_weight``, $\beta$ = ``style_weight``, $\gamma$ = ``tv_weight``,
    peak learning rate ``lr`` (cosine-decayed to 5 %), and the ``seed`` of the crop sampler.
    """

    steps: int
    batch_size: int
    crop: int
    style_weight: float
    content_weight: float = 1.0
    tv_weight: float = 0.0
    lr: float = 2e-3
    max_scale: float = 2.0
    seed: int = 0


def train_fast_stylizer(
    net: TransformerNet,
    extractor: FeatureExtractor,
    style: torch.Tensor,
    photos: Sequence[torch.Tensor],
    config: FastConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, list[float]]:
    r"""Train ``net`` for one style with Johnson et al.'s perceptual loss (Chapter 07, eq. (6)):

    $$\min_\theta \; \mathbb{E}_{c}\Big[\alpha\,\mathcal{L}_\text{content}(f_\theta(c), c)
      + \beta\,\mathcal{L}_\text{style}(f_\theta(c), s) + \gamma\,\mathcal{L}_\text{TV}(f_\theta(c))\Big]$$

    over random crops $c$ of ``photos`` — the Gatys loss, but minimised over the *weights* of a network
    shared by all images instead of over one image's pixels. Adam, ``config.steps`` batches, cosine-decayed lr.
    Returns the per-step loss history (``total``/``style``/``content``/``tv``).
    """
    from tqdm.auto import tqdm

    c = config
    device = torch.device(device)
    gen = torch.Generator().manual_seed(c.seed)
    net.to(device).train()
    extractor.to(device)
    targets = style_targets(extractor, style.to(device))
    opt = torch.optim.Adam(net.parameters(), lr=c.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.steps, eta_min=c.lr * 0.05)
    history: dict[str, list[float]] = {"total": [], "style": [], "content": [], "tv": []}
    for _ in tqdm(range(c.steps), desc="fast stylizer", leave=False, disable=not progress):
        batch = random_crops(photos, c.batch_size, c.crop, gen, c.max_scale).to(device)
        with torch.no_grad():
            content_feats = extractor(batch)[extractor.content_name]
        out = net(batch)
        loss, parts = total_loss(extractor, out, targets, c.style_weight, c.content_weight, c.tv_weight, content_feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for k in history:
            history[k].append(parts[k])
    net.eval()
    return history


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short sha256 of tensors' values (so a checkpoint key changes when its training images change)."""
    import hashlib

    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_fast_stylizer(
    name: str,
    net: TransformerNet,
    extractor: FeatureExtractor,
    style: torch.Tensor,
    photos: Sequence[torch.Tensor],
    config: FastConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[TransformerNet, dict[str, list[float]], bool]:
    """Load the stylizer trained with exactly these settings from ``AIGC_CACHE``, else train and cache it.

    The key holds every setting that changes the weights: the architecture, the backbone and its layers,
    digests of the style image and of the training photos, and every field of ``config``.
    Returns ``(net in eval mode, training loss history, loaded_from_cache)``.
    """
    from dataclasses import asdict

    from .checkpoints import cached_module

    key = {
        "net": net.config,
        "backbone": extractor.backbone.name,
        "style_layers": extractor.backbone.style_layers,
        "content_layer": extractor.backbone.content_layer,
        "style": tensor_digest(style),
        "photos": tensor_digest(*photos),
        **asdict(config),
    }

    def train(model: TransformerNet) -> dict[str, list[float]]:
        torch.manual_seed(config.seed)
        return train_fast_stylizer(model, extractor, style, photos, config, device, progress)

    net, extras, hit = cached_module(name, key, net, train)
    return net.to(device).eval(), extras, hit


def time_forward(fn: Callable[[], object], repeats: int = 5, sync: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
