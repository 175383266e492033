"""Fine-tune ViViT on a synthetic motion task, initialized by inflating a tiny image ViT.

A small demonstration of the paper's recipe (Arnab et al. 2021, Sec. 3.4, Tables 1 and 2) that runs on
two CPU threads in a few minutes:

1. `MovingDiscs` draws clips in which a disc moves right, left, down or up (the label) among jittering
   square distractors and pixel noise. Every single frame has the same distribution for every label, so
   the task can only be solved by comparing frames in order.
2. `TinyViT`, a 2D ViT with timm's parameter names and layouts, is pretrained on single frames of the
   same generator to say where the disc is (an image task).
3. `vivit.weights.inflate_vit` turns its weights into each of the four video models (central-frame or
   average tubelet kernels; for Model 3 also the three temporal-attention inits); each is fine-tuned
   with a plain PyTorch loop and evaluated on held-out clips. A single-frame baseline, the image ViT
   fine-tuned on the middle frame, stays at chance.

What to expect (seed 0): every inflated model ends at 97-100% held-out and the single frame near 25%.
Initialization shows in how fast the models learn: after a quarter of the steps, inflated Model 2 is
far ahead of random init (central-frame slightly ahead of average: the order of the paper's Table 1),
and Model 3 with its default temporal init (q/k/v from the image ViT, output projection zero) is
ahead of Scenic's full copy and of the all-zero init. With an endless supply of fresh synthetic clips
the others catch up by the end, which is why the table also reports accuracy at that early point.

    python examples/finetune.py                       # everything: about 5 minutes on 2 idle cores
    python examples/finetune.py --quick               # Model 1 and the single-frame baseline, < 1 minute
    python examples/finetune.py --json results.json   # also save the table
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace

if __name__ == "__main__":
    # With the default (active) OpenMP wait policy, intra-op threads spin while they wait for each other;
    # when another process holds a core, every small op then waits for a time slice, and a training step
    # of these tiny models was measured 30x slower on 2 threads than on 1. Passive waiting avoids that.
    # It must be set before torch is imported; as a module (imported by the tests) nothing is changed.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import vivit
from vivit.models.layers import Block, layer_norm
from vivit.weights import inflate_vit

DIRECTIONS = ("right", "left", "down", "up")
# (dy, dx) unit step for each direction, in image coordinates (y grows downwards)
_STEPS = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])


# ------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class MovingDiscs:
    """Synthetic clips: which way does the disc move? (4 classes: right, left, down, up).

    Each clip shows one disc moving at constant velocity in the labelled direction, `distractors`
    squares that jitter without a preferred direction, and Gaussian pixel noise, on a dark background.
    Colors, sizes, speed and all start positions are random.

    Why a single frame says nothing about the label: the frame is a torus (positions wrap around the
    edges and shapes are drawn wrapped too) and the disc starts at a uniform random point of it. In frame
    k the disc is at `start + k * speed * direction (mod size)`: a uniform point shifted by an amount
    independent of it, hence again uniform, and independent of the label, the disc's color and radius
    and the distractors. Everything else in a frame is drawn without looking at the label, and a disc
    has no heading. So every frame has exactly the same distribution under all four labels and no
    single-frame classifier can beat chance (25%); `finetune_single_frame` checks this empirically.
    Only the order of the disc's positions across frames reveals the direction.
    """

    num_frames: int = 8
    size: int = 32
    speed: tuple[float, float] = (2.0, 3.0)  # pixels per frame
    disc_radius: tuple[float, float] = (2.5, 4.5)
    square_half: tuple[float, float] = (1.5, 3.5)  # half side length
    distractors: int = 2
    jitter: float = 1.0  # max per-frame step of a distractor, per axis
    noise: float = 0.15  # std of the pixel noise, pixels in [-1, 1]

    num_classes = len(DIRECTIONS)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw `n` clips.

        Returns:
            video `(n, 3, T, H, W)` float in about [-1, 1] (Scenic's pixel range), direction labels
            `(n,)` int64, and the disc center per frame `(n, T, 2)` as (y, x) pixel coordinates.
        """
        g = generator

        def uniform(*shape: int, bounds: tuple[float, float]) -> torch.Tensor:
            lo, hi = bounds
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        t, s = self.num_frames, self.size
        frames = torch.arange(t, dtype=torch.float32)
        labels = torch.randint(self.num_classes, (n,), generator=g)

        # disc: uniform start on the torus, constant velocity along the labelled direction
        start = torch.rand(n, 1, 2, generator=g) * s
        velocity = _STEPS[labels] * uniform(n, 1, bounds=self.speed)  # (n, 2)
        disc_center = (start + frames[None, :, None] * velocity[:, None, :]) % s  # (n, T, 2)

        # distractors: uniform start, then a zero-mean random walk (no consistent direction)
        k = self.distractors
        walk = uniform(n, k, t, 2, bounds=(-self.jitter, self.jitter))
        walk[:, :, 0] = 0.0  # the start position itself is the uniform draw below
        square_center = (torch.rand(n, k, 1, 2, generator=g) * s + walk.cumsum(dim=2)) % s  # (n, k, T, 2)

        # paint: background, then distractors, then the disc on top so it is never hidden
        background = uniform(n, 3, 1, 1, 1, bounds=(-1.0, -0.6))
        video = background.expand(n, 3, t, s, s).clone()
        for i in range(k):
            cover = _square_coverage(square_center[:, i], uniform(n, 1, bounds=self.square_half), s)
            video = _paint(video, cover, uniform(n, 3, bounds=(-0.2, 1.0)))
        cover = _disc_coverage(disc_center, uniform(n, 1, bounds=self.disc_radius), s)
        video = _paint(video, cover, uniform(n, 3, bounds=(-0.2, 1.0)))
        video += self.noise * torch.randn(video.shape, generator=g)
        return video, labels, disc_center


def _wrapped_offsets(center: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shortest signed (dy, dx) from `center (n, T, 2)` to every pixel center on the torus: (n, T, H, W) each."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    half = size / 2
    dy = (coords[:, None] - center[..., 0, None, None] + half) % size - half
    dx = (coords[None, :] - center[..., 1, None, None] + half) % size - half
    return dy, dx


def _disc_coverage(center: torch.Tensor, radius: torch.Tensor, size: int) -> torch.Tensor:
    dy, dx = _wrapped_offsets(center, size)
    # a one-pixel linear ramp at the border anti-aliases sub-pixel positions, so motion is smooth
    return (radius[..., None, None] + 0.5 - torch.sqrt(dy**2 + dx**2)).clamp(0.0, 1.0)


def _square_coverage(center: torch.Tensor, half: torch.Tensor, size: int) -> torch.Tensor:
    dy, dx = _wrapped_offsets(center, size)
    return (half[..., None, None] + 0.5 - torch.maximum(dy.abs(), dx.abs())).clamp(0.0, 1.0)


def _paint(video: torch.Tensor, coverage: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Alpha-blend `color (n, 3)` into `video (n, 3, T, H, W)` where `coverage (n, T, H, W)` > 0."""
    # in place: painting is most of the cost of drawing a batch
    return video.lerp_(color[:, :, None, None, None].expand_as(video), coverage[:, None])


def location_labels(center: torch.Tensor, size: int, cells: int) -> torch.Tensor:
    """Index of the `cells x cells` grid cell holding each (y, x) center (row-major)."""
    cell = (center / (size / cells)).long().clamp(0, cells - 1)
    return cell[..., 0] * cells + cell[..., 1]


# ------------------------------------------------------------------------------------------ models
# Scale of every freshly drawn position table. timm and ViViT draw them with std 0.02; at that scale
# position is buried under patch content, and a model trained for only a few hundred steps cannot learn
# where (or when) anything is: measured, the image ViT's disc-location task stays at chance. With std 0.5
# position is visible from the first step.
POS_EMBED_STD = 0.5


class TinyViT(nn.Module):
    """A 2D image ViT with timm's `VisionTransformer` parameter names and layouts.

    `patch_embed.proj` Conv2d `(D, C, h, w)`, `cls_token (1, 1, D)`, `pos_embed (1, 1 + N, D)`,
    `blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, `head`: its
    `state_dict()` is what `vivit.weights.inflate_vit` expects from a timm ViT. The blocks are
    ViViT's own (LayerNorm eps 1e-6, tanh GELU), i.e. the numerics of the ViT that Scenic inflates.
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_dim: int = 128,
        num_classes: int = 16,
    ) -> None:
        super().__init__()
        num_patches = (img_size // patch_size) ** 2
        self.patch_embed = nn.Module()  # a namespace, so the conv is named `patch_embed.proj` as in timm
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + num_patches, embed_dim) * POS_EMBED_STD)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_dim) for _ in range(depth))
        self.norm = layer_norm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh zero-initialized head, as Scenic does for a new task."""
        self.head = nn.Linear(self.head.in_features, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images `(B, C, H, W)` -> logits `(B, num_classes)`, pooled from the class token."""
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


@dataclass(frozen=True)
class Sizes:
    """Architecture shared by the image ViT and the video models, so the weights map one to one."""

    img_size: int = 32
    patch_size: int = 8
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4  # even, as Model 4 needs
    mlp_dim: int = 128
    tubelet_size: int = 2
    temporal_depth: int = 2  # Model 2's temporal encoder (always freshly initialized)


VIDEO_MODELS: dict[str, str] = {
    "model1": "Spatio-temporal (Model 1)",
    "model2": "Factorized encoder (Model 2)",
    "model3": "Factorized self-attention (Model 3)",
    "model4": "Factorized dot-product (Model 4)",
}


def build_video_model(name: str, sizes: Sizes, num_frames: int, num_classes: int) -> nn.Module:
    """One of the four ViViT models (`VIDEO_MODELS` key) at the tiny `sizes`."""
    common = dict(
        img_size=sizes.img_size,
        num_frames=num_frames,
        patch_size=sizes.patch_size,
        tubelet_size=sizes.tubelet_size,
        embed_dim=sizes.embed_dim,
        depth=sizes.depth,
        num_heads=sizes.num_heads,
        mlp_dim=sizes.mlp_dim,
        num_classes=num_classes,
    )
    if name == "model1":
        return vivit.SpatioTemporalViViT(**common)  # pools the class token, which it takes from the image ViT
    if name == "model2":
        # Pooling by averaging (both encoders), not with class tokens: the temporal encoder is fresh, and its
        # fresh class token starts as a plain average of the frames, blind to their order. Escaping that
        # plateau took a few hundred steps in some runs and never happened in others (measured 28-92%
        # held-out after 300-400 steps, by seed); averaging the encoded frames gave 97-99% in every run.
        return vivit.FactorizedEncoderViViT(temporal_depth=sizes.temporal_depth, global_pool="avg", **common)
    # Models 3 and 4 have no class token in the paper and Scenic: they pool by averaging
    if name == "model3":
        return vivit.FactorizedSelfAttentionViViT(global_pool="avg", **common)
    if name == "model4":
        return vivit.FactorizedDotProductViViT(global_pool="avg", **common)
    raise ValueError(f"unknown video model {name!r}; choose from {sorted(VIDEO_MODELS)}")


# `init` names -> inflate_vit settings. Model 3's temporal attention defaults to 'identity' (q/k/v from
# the image ViT, output projection zero); '+copy' is Scenic's default, '+zero' the paper's literal
# all-zero init, which cannot learn (its q/k/v and output weights never get a gradient).
INFLATIONS: dict[str, dict[str, str]] = {
    "central": {"kernel": "central"},
    "average": {"kernel": "average"},
    "central+copy": {"kernel": "central", "temporal_init": "copy"},
    "central+zero": {"kernel": "central", "temporal_init": "zero"},
}


def init_video_model(model: nn.Module, image_vit: TinyViT | None, init: str) -> nn.Module:
    """Initialize `model` in place: `init` is 'random' (fresh) or an `INFLATIONS` key.

    Position tables that do not come from the image ViT (all of them for 'random', Model 2's temporal
    table after inflation) are redrawn at `POS_EMBED_STD`, the scale the image ViT started from, so that
    the comparison is between weights, not between position-table scales.
    """
    if init != "random":
        if image_vit is None:
            raise ValueError(f"init {init!r} inflates an image ViT: pass one")
        model.load_state_dict(inflate_vit(image_vit.state_dict(), model, **INFLATIONS[init]), strict=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "temporal_pos_embed" or (init == "random" and name.endswith("pos_embed")):
                p.normal_(0.0, POS_EMBED_STD)
    return model


# ------------------------------------------------------------------------------------------ training
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per step
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out accuracy %)
    seconds: float = 0.0  # training only, without the evaluations

    def mean_loss(self, first: int | None = None, last: int | None = None) -> float:
        """Average loss over the first `first` or the last `last` steps."""
        values = self.losses[:first] if first is not None else self.losses[-(last or len(self.losses)) :]
        return sum(values) / len(values)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # no decay on biases, norms, position tables and class tokens, as in ViT training recipes
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    model: nn.Module,
    batches: Iterator[Batch],
    steps: int,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup: float = 0.1,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_every: int = 0,
    desc: str = "train",
    progress: bool = True,
) -> TrainResult:
    """AdamW with linear warmup then cosine decay to zero; cross-entropy on `batches`.

    With `eval_fn`, the model is also evaluated every `eval_every` steps and after the last one (into
    `TrainResult.curve`); that time is not counted in `TrainResult.seconds`.
    """
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    warmup_steps = max(1, int(warmup * steps))

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    result = TrainResult()
    model.train()
    eval_seconds = 0.0
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for step in bar:
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # clipping keeps the first steps of a fresh head on inflated features from overshooting
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        result.losses.append(loss.item())
        bar.set_postfix(loss=f"{result.mean_loss(last=20):.3f}", refresh=False)
        if eval_fn is not None and eval_every and (step % eval_every == 0 or step == steps):
            eval_start = time.perf_counter()
            result.curve.append((step, eval_fn(model)))
            model.train()
            eval_seconds += time.perf_counter() - eval_start
    result.seconds = time.perf_counter() - start - eval_seconds
    model.eval()
    return result


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy (in %) of `model` on the held-out tensors."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def clip_batches(data: MovingDiscs, batch_size: int, seed: int) -> Iterator[Batch]:
    """An endless, seeded stream of fresh training clips `(B, C, T, H, W)` and direction labels."""
    g = torch.Generator().manual_seed(seed)
    while True:
        video, labels, _ = data.sample(batch_size, g)
        yield video, labels


def middle_frames(batches: Iterator[Batch], index: int) -> Iterator[Batch]:
    """The same stream with each clip reduced to its frame `index` `(B, C, H, W)`: the single-frame baseline."""
    for video, labels in batches:
        yield video[:, :, index], labels


def image_batches(data: MovingDiscs, batch_size: int, seed: int, cells: int) -> Iterator[Batch]:
    """Single frames of the same generator, labelled with the disc's grid cell (the image pretraining task).

    Every frame of a clip has the same distribution (see `MovingDiscs`), so drawing one-frame clips gives
    exactly the frames of the video task at an eighth of the cost of drawing whole clips.
    """
    g = torch.Generator().manual_seed(seed)
    one_frame = replace(data, num_frames=1)
    while True:
        video, _, centers = one_frame.sample(batch_size, g)
        yield video[:, :, 0], location_labels(centers[:, 0], data.size, cells)


# ------------------------------------------------------------------------------------------ experiments
EXPERIMENTS = ("init", "models", "model3", "quick", "single_frame")


@dataclass
class Settings:
    """Everything a run of the experiments depends on (the flags of `main`)."""

    steps: int = 400  # fine-tuning steps per video model (and for the single-frame baseline)
    pretrain_steps: int = 600  # image ViT
    batch_size: int = 32  # clips per step; the image ViT takes twice as many frames
    lr: float = 1e-3
    pretrain_lr: float = 3e-3
    eval_clips: int = 2000
    location_cells: int = 8  # the image task: which of 8x8 cells (4x4 pixels each) holds the disc
    seed: int = 0
    experiments: tuple[str, ...] = ("init", "models", "model3", "single_frame")  # a subset of EXPERIMENTS
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: object) -> Settings:
        """The smallest run that still shows the point: one inflated video model against one frame."""
        base = dict(steps=120, pretrain_steps=250, eval_clips=1000, experiments=("quick", "single_frame"))
        return cls(**{**base, **overrides})


@dataclass
class Row:
    """One line of the results table."""

    experiment: str
    model: str
    init: str
    accuracy: float  # held-out top-1, %
    train_seconds: float
    first_loss: float  # mean training loss over the first 10 steps (ln 4 = 1.386 with a zero head)
    final_loss: float  # mean training loss over the last 10% of the steps
    curve: list[tuple[int, float]]  # (step, held-out accuracy %) during training; the last is `accuracy`


def _eval_every(settings: Settings) -> int:
    # held-out accuracy at a quarter, half, three quarters and the end of training (the learning curve)
    return max(1, settings.steps // 4)


def _row(experiment: str, model: str, init: str, result: TrainResult) -> Row:
    final_loss = result.mean_loss(last=max(1, len(result.losses) // 10))
    return Row(
        experiment,
        model,
        init,
        result.curve[-1][1],
        result.seconds,
        result.mean_loss(first=10),
        final_loss,
        result.curve,
    )


def pretrain_image_vit(settings: Settings, data: MovingDiscs, sizes: Sizes) -> tuple[TinyViT, float, float]:
    """Train `TinyViT` to locate the disc in single frames.

    Returns:
        the model, its held-out location accuracy (%) and its training time (s).
    """
    torch.manual_seed(settings.seed)
    vit = TinyViT(
        img_size=sizes.img_size,
        patch_size=sizes.patch_size,
        embed_dim=sizes.embed_dim,
        depth=sizes.depth,
        num_heads=sizes.num_heads,
        mlp_dim=sizes.mlp_dim,
        num_classes=settings.location_cells**2,
    )
    stream = image_batches(data, settings.batch_size * 2, settings.seed + 100, settings.location_cells)
    result = train(
        vit,
        stream,
        settings.pretrain_steps,
        lr=settings.pretrain_lr,
        desc="pretrain image ViT",
        progress=settings.progress,
    )
    x, y = next(image_batches(data, settings.eval_clips, settings.seed + 101, settings.location_cells))
    return vit, evaluate(vit, x, y), result.seconds


def finetune(
    name: str,
    init: str,
    image_vit: TinyViT,
    settings: Settings,
    data: MovingDiscs,
    sizes: Sizes,
    held_out: Batch,
    experiment: str,
) -> Row:
    """Build video model `name` (a `VIDEO_MODELS` key), initialize it (`init`), fine-tune and evaluate it."""
    torch.manual_seed(settings.seed)  # the same fresh weights (e.g. Model 2's temporal encoder) for every init
    model = init_video_model(build_video_model(name, sizes, data.num_frames, data.num_classes), image_vit, init)
    # the same training clips, in the same order, for every model
    stream = clip_batches(data, settings.batch_size, settings.seed + 200)
    result = train(
        model,
        stream,
        settings.steps,
        lr=settings.lr,
        eval_fn=lambda m: evaluate(m, *held_out),
        eval_every=_eval_every(settings),
        desc=f"{name} {init}",
        progress=settings.progress,
    )
    return _row(experiment, VIDEO_MODELS[name], init, result)


def finetune_single_frame(
    image_vit: TinyViT, settings: Settings, data: MovingDiscs, held_out: Batch, experiment: str = "single_frame"
) -> Row:
    """The pretrained image ViT fine-tuned on the middle frame of the same clips; should stay at chance."""
    torch.manual_seed(settings.seed)
    vit = copy.deepcopy(image_vit)
    vit.reset_classifier(data.num_classes)
    middle = data.num_frames // 2
    stream = middle_frames(clip_batches(data, settings.batch_size, settings.seed + 200), middle)
    x, y = held_out
    result = train(
        vit,
        stream,
        settings.steps,
        lr=settings.lr,
        eval_fn=lambda m: evaluate(m, x[:, :, middle], y),
        eval_every=_eval_every(settings),
        desc="single frame",
        progress=settings.progress,
    )
    return _row(experiment, f"2D ViT, frame {middle} of 0-{data.num_frames - 1}", "image ViT", result)


def run_experiments(
    settings: Settings,
    data: MovingDiscs | None = None,
    sizes: Sizes | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[Row], dict[str, float]]:
    """Pretrain the image ViT, then run the experiments named in `settings.experiments`.

    - 'init' (cf. the paper's Table 1): Model 2 from central-frame inflation, average inflation, or random.
    - 'models' (cf. Table 2): the four models, all from central-frame inflation.
    - 'model3': Model 3's temporal attention from the image ViT with a zero output projection (the
      default, also in 'models'), copied whole (Scenic's default), or all zero (the paper's wording).
    - 'quick': Model 1 from central-frame inflation only.
    - 'single_frame': the image ViT fine-tuned on one frame per clip; must stay near chance.

    Returns:
        the table rows, and the image ViT's pretraining summary (accuracy, chance, seconds, steps).
    """
    data = data or MovingDiscs()
    sizes = sizes or Sizes()
    unknown = set(settings.experiments) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)}; choose from {EXPERIMENTS}")

    vit, vit_accuracy, vit_seconds = pretrain_image_vit(settings, data, sizes)
    chance = 100 / settings.location_cells**2
    log(
        f"image ViT pretrained in {vit_seconds:.0f} s: disc location {vit_accuracy:.1f}% held-out "
        f"(chance {chance:.1f}%)"
    )
    pretraining = dict(accuracy=vit_accuracy, chance=chance, seconds=vit_seconds, steps=settings.pretrain_steps)

    # one fixed held-out set from its own seed, so it never overlaps the training stream
    video, labels, _ = data.sample(settings.eval_clips, torch.Generator().manual_seed(settings.seed + 300))
    held_out = (video, labels)

    runs: list[tuple[str, str, str]] = []  # (experiment, model, init)
    if "init" in settings.experiments:
        runs += [("init", "model2", init) for init in ("central", "average", "random")]
    if "models" in settings.experiments:
        runs += [("models", name, "central") for name in VIDEO_MODELS]
    if "model3" in settings.experiments:
        runs += [("model3", "model3", init) for init in ("central", "central+copy", "central+zero")]
    if "quick" in settings.experiments:
        runs += [("quick", "model1", "central")]
    rows: list[Row] = []
    done: dict[tuple[str, str], Row] = {}
    for experiment, name, init in runs:
        if (name, init) not in done:  # Model 2 from central-frame inflation is in both tables: train it once
            done[name, init] = finetune(name, init, vit, settings, data, sizes, held_out, experiment)
            log(_describe(done[name, init]))
        rows.append(replace(done[name, init], experiment=experiment))
    if "single_frame" in settings.experiments:
        rows.append(finetune_single_frame(vit, settings, data, held_out))
        log(_describe(rows[-1]))
    return rows, pretraining


def _describe(row: Row) -> str:
    return (
        f"{row.model}, {row.init}: {row.accuracy:.1f}% held-out, training loss {row.first_loss:.2f} -> "
        f"{row.final_loss:.2f}, {row.train_seconds:.0f} s"
    )


def markdown_table(rows: list[Row]) -> str:
    """The rows as a markdown table: held-out accuracy after a quarter of the steps and at the end."""
    early = rows[0].curve[0][0] if rows else 0
    lines = [
        f"| experiment | model | init | held-out acc. after {early} steps (%) | held-out acc. (%) | train time (s) |",
        "|---|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.experiment} | {r.model} | {r.init} | {r.curve[0][1]:.1f} | {r.accuracy:.1f} | {r.train_seconds:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    full, quick = Settings(), Settings.quick()
    p.add_argument("--steps", type=int, help=f"fine-tuning steps per model ({full.steps}; {quick.steps} with --quick)")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        help=f"image ViT pretraining steps ({full.pretrain_steps}; {quick.pretrain_steps} with --quick)",
    )
    p.add_argument("--batch-size", type=int, default=full.batch_size, help="clips per step")
    p.add_argument("--eval-clips", type=int, help=f"held-out clips ({full.eval_clips})")
    p.add_argument("--seed", type=int, default=0, help="seed of the data streams and of every initialization")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--quick", action="store_true", help="only Model 1 (central-frame inflation) and the single frame")
    p.add_argument("--json", metavar="PATH", help="also write settings, pretraining summary and rows to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = dict(steps=args.steps, pretrain_steps=args.pretrain_steps, eval_clips=args.eval_clips)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update(batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress)
    settings = Settings.quick(**overrides) if args.quick else Settings(**overrides)

    start = time.perf_counter()
    rows, pretraining = run_experiments(settings)
    total = time.perf_counter() - start
    print()
    print(markdown_table(rows))
    print(f"\ntotal {total:.0f} s on {torch.get_num_threads()} CPU threads; chance is {100 / len(DIRECTIONS):.0f}%")
    if args.json:
        record = dict(
            settings=asdict(settings),
            data=asdict(MovingDiscs()),
            sizes=asdict(Sizes()),
            pretraining=pretraining,
            rows=[asdict(r) for r in rows],
            total_seconds=total,
            threads=torch.get_num_threads(),
        )
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
