"""Chapter 07 · neural style transfer: Gram matrices, Gatys optimisation, a fast stylizer.

Gatys et al. 2016 optimise an image's pixels against a frozen ImageNet CNN's features and Gram
matrices; Johnson et al. 2016 train a feed-forward network once with the same losses. Images are
``(B, 3, H, W)`` floats in ``[0, 1]``; :class:`StyleFeatures` applies ImageNet normalisation.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core.train import History, fit, warmup_cosine_scheduler

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Sizes per profile; ``setup_chapter`` picks one. size: image side in px of the Gatys runs; evals:
# forward+backward passes per Gatys run; sweep_size, sweep_evals, sweep: the style-weight sweep (its
# multiples of the backbone's β); color_evals: the luminance-only run; fast_steps, fast_batch,
# fast_crop, fast_lr, fast_width: the fast stylizer's training and width; photo_side: its training
# photos' short side; vgg: VGG19 when its weights can be had (else MobileNetV2).
SIZES = {
    "smoke": dict(size=96, evals=40, sweep_size=64, sweep_evals=12, sweep=(0.01, 1.0),
                  color_evals=12, fast_steps=24, fast_batch=2, fast_crop=64, photo_side=128,
                  fast_width=8, fast_lr=3e-3, vgg=False),
    "cpu": dict(size=224, evals=250, sweep_size=160, sweep_evals=80, sweep=(0.001, 0.01, 0.1, 1.0),
                color_evals=120, fast_steps=300, fast_batch=4, fast_crop=128, photo_side=256,
                fast_width=8, fast_lr=3e-3, vgg=False),
    "gpu": dict(size=384, evals=500, sweep_size=384, sweep_evals=300, sweep=(0.001, 0.01, 0.1, 1.0),
                color_evals=300, fast_steps=2000, fast_batch=8, fast_crop=256, photo_side=512,
                fast_width=16, fast_lr=2e-3, vgg=True),
}
FAST_NET = dict(n_residual=3, n_down=3, end_kernel=5)  # the fast stylizer's shape (width: SIZES)
TIMING_REPEATS = 5  # forward passes timed for the fast stylizer (the fastest counts)


# Which layers of an ImageNet CNN describe style and content
@dataclass(frozen=True)
class Backbone:
    """Which layers of an ImageNet CNN's ``features`` stack serve as style and content layers.

    ``style_layers`` / ``content_layer`` map a name to the index of the module whose *output* is
    tapped; ``style_weight`` balances the two losses for this backbone; ``fast_content_layer`` is
    the fast stylizer's content layer (``None``: ``content_layer``).
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
    # style: the last block of the 112-, 56-, 28- and 14-px stages (at a 224-px input);
    # content: the deepest 14-px block. The fast stylizer reads content there too.
    style_layers={"b1": 1, "b3": 3, "b6": 6, "b10": 10},
    content_layer=("b13", 13),
    style_weight=1e4,
    tv_weight=10.0,
    description="torchvision MobileNetV2, ImageNet-1k weights (IMAGENET1K_V1), offline",
)

VGG19 = Backbone(
    name="vgg19",
    # the ReLU after conv1_1 … conv5_1 (style) and conv4_2 (content), as Gatys et al.
    style_layers={"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29},
    content_layer=("relu4_2", 22),
    style_weight=1e5,
    tv_weight=10.0,
    fast_content_layer=("relu2_2", 8),  # Johnson et al.
    description="torchvision VGG19, ImageNet-1k weights (IMAGENET1K_V1), downloaded",
)


class StyleFeatures(nn.Module):
    """A frozen CNN ``features`` stack, cut after the deepest layer we need: ``forward(x)`` maps
    images in ``[0, 1]`` to ``{layer name: (B, C_l, H_l, W_l)}`` for the style and content layers.
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

    def train(self, mode: bool = True) -> StyleFeatures:
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

    def with_content_layer(self, layer: tuple[str, int] | None) -> StyleFeatures:
        """The same frozen network (shared weights) reading content at ``layer`` instead."""
        if layer is None or layer == self.backbone.content_layer:
            return self
        other = StyleFeatures(self.body, replace(self.backbone, content_layer=layer))
        return other.to(self.mean.device)

    @property
    def content_name(self) -> str:
        return self.backbone.content_layer[0]


def load_style_features(backbone: str = "auto", prefer_vgg: bool = False) -> StyleFeatures:
    """``"mobilenet_v2"`` (offline weights), ``"vgg19"`` (torchvision's weights, downloaded
    once), or ``"auto"``: VGG19 when ``prefer_vgg`` and its weights can be had, else MobileNetV2."""
    from .core import assets

    if backbone not in ("auto", "mobilenet_v2", "vgg19"):
        raise ValueError(f"unknown backbone {backbone!r}: use auto, mobilenet_v2 or vgg19")
    if backbone == "vgg19" or (backbone == "auto" and prefer_vgg):
        try:
            return StyleFeatures(assets.vgg19_imagenet().features, VGG19)
        except assets.AssetMissing:
            if backbone == "vgg19":
                raise
    return StyleFeatures(assets.mobilenet_v2_imagenet().features, MOBILENET_V2)


# Losses
def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix averaged over positions, G = F Fᵀ / M: ``(B, C, H, W) -> (B, C, C)``."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of one layer's features."""
    return F.mse_loss(features, target.expand_as(features))


def style_loss(
    features: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mean squared Gram difference, summed over the style layers; a target Gram of
    batch 1 is broadcast over a batch of images."""
    total = torch.zeros((), device=next(iter(features.values())).device)
    for name, target in target_grams.items():
        g = gram_matrix(features[name])
        total = total + F.mse_loss(g, target.expand_as(g))
    return total


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: mean squared difference of vertical and of horizontal neighbours."""
    dh = image[..., 1:, :] - image[..., :-1, :]
    dw = image[..., :, 1:] - image[..., :, :-1]
    return dh.pow(2).mean() + dw.pow(2).mean()


@dataclass
class StyleTargets:
    """Precomputed targets: the content image's content-layer features and the style Grams."""

    content: torch.Tensor | None
    grams: dict[str, torch.Tensor]


def style_targets(
    features: StyleFeatures, style: torch.Tensor, content: torch.Tensor | None = None
) -> StyleTargets:
    """Gram matrices of ``style`` at every style layer, and ``content``'s content-layer features."""
    with torch.no_grad():
        style_feats = features(style)
        grams = {n: gram_matrix(style_feats[n]) for n in features.backbone.style_layers}
        target = features(content)[features.content_name] if content is not None else None
    return StyleTargets(target, grams)


def perceptual_loss(
    features: StyleFeatures,
    image: torch.Tensor,
    targets: StyleTargets,
    style_weight: float,
    content_weight: float = 1.0,
    tv_weight: float = 0.0,
    content_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""Gatys' objective $\alpha\,\mathcal{L}_\text{content} + \beta\,\mathcal{L}_\text{style}
    + \gamma\,\mathcal{L}_\text{TV}$ and its unweighted parts as floats.

    ``content_features`` overrides ``targets.content`` (the fast stylizer's targets vary per batch).
    """
    feats = features(image)
    target = targets.content if content_features is None else content_features
    lc = content_loss(feats[features.content_name], target)
    ls = style_loss(feats, targets.grams)
    lt = tv_loss(image)
    loss = content_weight * lc + style_weight * ls + tv_weight * lt
    return loss, {"content": lc.item(), "style": ls.item(), "tv": lt.item()}


# Gatys optimisation: the lesson loop (L-BFGS needs a closure, so it is written out here)
def gatys_transfer(
    features: StyleFeatures,
    content: torch.Tensor,
    style: torch.Tensor,
    style_weight: float,
    evaluations: int,
    optimizer: Literal["lbfgs", "adam"] = "lbfgs",
    content_weight: float = 1.0,
    tv_weight: float = 0.0,
    lr: float = 0.02,
) -> tuple[torch.Tensor, History]:
    """Optimise the pixels of a copy of ``content`` for the perceptual loss, for ``evaluations``
    forward+backward passes (an L-BFGS step may spend several in its line search).

    ``history`` holds each pass's losses and elapsed ``seconds``; ``evals`` the final image's.
    """
    start = time.perf_counter()
    targets = style_targets(features, style, content)
    x = content.detach().clone().requires_grad_(True)
    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [x], lr=1.0, max_iter=1, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=1e-12, tolerance_change=1e-15,
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam([x], lr=lr)
    else:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', not {optimizer!r}")
    history = History()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss, parts = perceptual_loss(features, x, targets, style_weight, content_weight, tv_weight)
        loss.backward()
        history.log({"loss": loss.item(), **parts, "seconds": time.perf_counter() - start})
        return loss

    passes = 0
    while passes < evaluations:
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0, 1)  # keep a valid image after every step
        if len(history["loss"]) == passes:  # L-BFGS converged and stopped evaluating
            break
        passes = len(history["loss"])
    with torch.no_grad():
        loss, final = perceptual_loss(features, x, targets, style_weight, content_weight, tv_weight)
    history.log({"step": passes, "loss": loss.item(), **final}, into="evals")
    history.seconds = time.perf_counter() - start
    return x.detach(), history


def style_ratio(history: History) -> float:
    """A Gatys run's final style loss ÷ the style loss of its starting image."""
    return history.evals["style"][-1] / history.curves["style"][0]


# Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer")

_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    r"""RGB → YIQ: $Y$ is luminance, $I, Q$ carry the colour. ``(B, 3, H, W)`` both ways."""
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_yiq`."""
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def luminance_transfer(
    features: StyleFeatures, content: torch.Tensor, style: torch.Tensor, **gatys_kwargs: object
) -> tuple[torch.Tensor, torch.Tensor, History]:
    r"""Colour-preserving style transfer: run Gatys on luminance only, keep the content's colours.

    1. $Y_c, Y_s$ = luminance of content and style; match the style's luminance mean and
       standard deviation to the content's: $Y_s' = \frac{\sigma_c}{\sigma_s}(Y_s - \mu_s) + \mu_c$.
    2. Gatys on the grey images $(Y, Y, Y)$ → stylised luminance $Y_x$.
    3. Recombine $Y_x$ with the content's $I, Q$ channels and convert back to RGB.

    Returns ``(rgb image, grey Gatys image, its history)``.
    """
    yc = rgb_to_yiq(content)
    ys = rgb_to_yiq(style)[:, :1]
    lum_c = yc[:, :1]
    ys = (ys - ys.mean()) / (ys.std() + 1e-8) * lum_c.std() + lum_c.mean()
    grey_c = lum_c.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    grey_s = ys.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    grey, history = gatys_transfer(features, grey_c, grey_s, **gatys_kwargs)  # type: ignore
    y_out = grey.mean(dim=1, keepdim=True)
    rgb = yiq_to_rgb(torch.cat([y_out, yc[:, 1:]], dim=1)).clamp(0, 1)
    return rgb, grey, history


# Fast feed-forward stylizer (Johnson et al. 2016, with instance norm and resize-convolutions)
class _ConvLayer(nn.Sequential):
    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, norm: bool = True,
        relu: bool = True,
    ) -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2)]
        layers.append(nn.Conv2d(c_in, c_out, kernel, stride))
        if norm:
            layers.append(nn.InstanceNorm2d(c_out, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _ConvLayer(channels, channels, 3), _ConvLayer(channels, channels, 3, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    r"""Johnson et al.'s image transformation network, slimmed: ``width`` channels at full size.

    ``k×k conv → n_down stride-2 convs → n_residual residual blocks → n_down (nearest upsample +
    3×3 conv) → k×k conv``, with reflection padding and instance normalisation.

    With ``skip`` the network predicts a *change* of the photo, $f_\theta(c) = c + g_\theta(c)$,
    from a zero-initialised last convolution (untrained: the identity), clamped only in eval mode
    (a clamp would zero the gradient of saturated pixels). Without it: $\sigma(g_\theta(c))$.
    """

    def __init__(
        self, width: int = 16, n_residual: int = 3, n_down: int = 2, end_kernel: int = 9,
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.config = dict(width=width, n_residual=n_residual, n_down=n_down,
                           end_kernel=end_kernel, skip=skip)
        self.skip = skip
        chans = [width * 2**i for i in range(n_down + 1)]
        layers: list[nn.Module] = [_ConvLayer(3, chans[0], end_kernel)]
        layers += [_ConvLayer(chans[i], chans[i + 1], 3, stride=2) for i in range(n_down)]
        layers += [_ResidualBlock(chans[-1]) for _ in range(n_residual)]
        layers += [nn.Sequential(nn.Upsample(scale_factor=2), _ConvLayer(chans[i + 1], chans[i], 3))
                   for i in reversed(range(n_down))]
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
    t = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255)
    t = t.unsqueeze(0)
    if size is not None:
        h, w = t.shape[-2:]
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        t = F.interpolate(t, size=new, mode="bilinear", antialias=True, align_corners=False)
        if square:
            top, left = (new[0] - size) // 2, (new[1] - size) // 2
            t = t[..., top : top + size, left : left + size]
    return t.clamp(0, 1).contiguous()


def random_crops(
    photos: Sequence[torch.Tensor], n: int, size: int, generator: torch.Generator,
    max_scale: float = 2.0,
) -> torch.Tensor:
    """``n`` random ``size×size`` crops: random photo, zoom (side up to ``max_scale·size``,
    resized to ``size``), position and horizontal flip."""
    out = []
    for _ in range(n):
        p = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        h, w = p.shape[-2:]
        side_max = min(h, w, int(size * max_scale))
        side = int(torch.randint(min(size, side_max), side_max + 1, (1,), generator=generator))
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = p[..., top : top + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out).clamp(0, 1)


@dataclass(frozen=True)
class FastConfig:
    """Every setting that changes a fast stylizer's weights (besides the net, style and photos):
    ``steps`` Adam steps on ``batch_size`` random ``crop``-px crops zoomed by up to ``max_scale``,
    ``lr`` cosine-decayed to ``lr_floor`` × ``lr``, and the crop sampler's ``seed``."""

    steps: int
    batch_size: int
    crop: int
    style_weight: float
    content_weight: float = 1.0
    tv_weight: float = 0.0
    lr: float = 2e-3
    lr_floor: float = 0.05
    max_scale: float = 2.0
    seed: int = 0


def train_fast_stylizer(
    net: TransformerNet,
    features: StyleFeatures,
    style: torch.Tensor,
    photos: Sequence[torch.Tensor],
    config: FastConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> History:
    """Fit ``net`` to one style: the perceptual loss of Gatys, minimised over the network's weights
    on random crops of ``photos``; Adam with a cosine-decayed learning rate."""
    c = config
    crops = torch.Generator().manual_seed(c.seed)
    net.to(device).train()
    features.to(device)
    targets = style_targets(features, style.to(device))
    opt = torch.optim.Adam(net.parameters(), lr=c.lr)

    def step(_: int) -> tuple[torch.Tensor, dict[str, float]]:
        batch = random_crops(photos, c.batch_size, c.crop, crops, c.max_scale).to(device)
        with torch.no_grad():
            target = features(batch)[features.content_name]
        return perceptual_loss(
            features, net(batch), targets, c.style_weight, c.content_weight, c.tv_weight, target
        )

    scheduler = warmup_cosine_scheduler(opt, warmup=0, total=c.steps, floor=c.lr_floor)
    history = fit(step, c.steps, opt, scheduler=scheduler, desc="fast stylizer", progress=progress)
    net.eval()
    return history


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short sha256 of tensors' values (so a checkpoint key changes with its training images)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
