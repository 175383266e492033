"""Running a model over the sliding windows of one video, at the cost of the new frames for Model 2.

Dense windows (a 64-frame window every 8 frames, as action localisation and anomaly detection
read them) see every frame many times. Model 2 (`FactorizedEncoderViViT`, the factorised encoder
of the paper's Sec. 3.3) runs its spatial encoder on each tubelet slice (`t` frames, one crop) on
its own; only its small temporal encoder sees the whole clip. Two windows whose clips hold the
same slice (the same source frames, the same crop of the same deterministic eval transform) give
it the same spatial embedding. `WindowRunner` therefore encodes each slice once per video and
crop (`FactorizedEncoderViViT.forward_slices`), keeps the embeddings while a later window may
still need them, and runs only the temporal encoder per window (`forward_temporal`). For
ViViT-B/16x2 at 32x224^2 one clip costs 283 GMACs, one new slice about 17.7 and the temporal
encoder about 0.5 (DESIGN.md Sec. 10), so windows every 8 frames (2 new slices at frame stride 2)
cost about an eighth of computing each from its pixels.

Models 1, 3 and 4 attend across time in every block: no part of one window's computation is
valid in another, so they (and Model 2 when no slice is shared, or with `reuse=False`) run each
window's clips through the whole model, exactly as `vivit.predict_timeline` always did.

Which frames a window reads is the jobs' rule (`vivit.data.sampling`): window `[first, last)` is
treated as a video of its own, its `clips` test clips placed by `view_frame_indices` (`num_frames`
frames `frame_stride` apart; looping when the window is shorter than a clip) and each clip cut
into `crops` crops (`crop_test_views`). A slice is identified by its crop and its `t` source frame
indices, so reuse happens exactly where the pixels are the same, whatever the stride (windows
share slices when the stride is a multiple of `frame_stride x t` frames; `shares_slices` says).

This module sits between the data path and the jobs: `vivit.predict.predict_timeline` (and so
`vivit predict --timeline`), `vivit.features.extract_features` (`vivit features`, pooled and
per-frame) and `vivit.live.predict_stream` (`vivit predict --live`) run their windows through it;
it calls `vivit.data` and the models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .data.sampling import view_frame_indices
from .data.transforms import as_thwc, crop_test_views, resolve_data_config
from .data.video import VideoReader
from .models.vivit import FactorizedEncoderViViT

__all__ = [
    "ClipRows",
    "FrameGetter",
    "Output",
    "WindowRunner",
    "clip_function",
    "shares_slices",
    "window_outputs",
]

#: What `WindowRunner` computes per window (each averaged over the window's views, float32):
#: `"logits"` `(num_classes,)`; `"features"` `(D,)` pooled pre-logits features
#: (`forward_head(forward_features(x), pre_logits=True)`); `"frame_features"` `(nt, D)` one
#: embedding per temporal token (Model 2: its spatial encoder's per-slice output,
#: `forward_frame_features`; other models: the last block's normed tokens averaged over space).
Output = Literal["logits", "features", "frame_features"]
_OUTPUTS = ("logits", "features", "frame_features")

#: Which source frames a window's clips read: `(first, last)` -> int `(clips, num_frames)` frame
#: indices inside `[first, last)`. The default is `view_frame_indices` (DMVR's index sampling, as
#: `predict_timeline` and `vivit features` place clips); a time-based rule (`sample_fps`) fits as well:
#: slices are matched by the frames they hold, whatever rule chose them.
ClipRows = Callable[[int, int], np.ndarray]

#: Frames of a video by index: called with sorted, distinct int64 frame indices, returns uint8
#: frames `(n, H, W, C)` in that order (numpy or torch), e.g. `VideoReader.get_frames_at`.
FrameGetter = Callable[[np.ndarray], Any]

# Decoded frames held at once while the new slices of a group of windows are read (a 720p RGB
# frame is 2.8 MB, so about 90 frames): decoding many frames per call amortises the seek to the
# key frame before them, which `VideoReader.get_frames_at` makes on every call.
_DECODE_BUDGET_BYTES = 256 * 1024**2

_SliceKey = tuple[int, tuple[int, ...]]  # (crop, source frame indices of the slice)


def clip_function(model: nn.Module, output: Output) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as a function of a batch of clips `(B, C, T, H, W)` for one kind of output.

    Args:
        model: A vivit model (for `"logits"` any classifier returning `(B, num_classes)`).
        output: `"logits"` -> `(B, num_classes)`; `"features"` -> `(B, D)`; `"frame_features"` ->
            `(B, nt, D)` (see `Output`).

    Returns:
        A function of float clips; it does not change the model (run it under inference mode).

    Raises:
        ValueError: For an unknown `output`, or features asked of a model without the feature API.
    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
    runner: Any = model
    if output == "logits":
        return runner
    if not (hasattr(runner, "forward_features") and hasattr(runner, "forward_head")):
        raise ValueError(f"{output} need a vivit model (forward_features/forward_head), got {type(model).__name__}")
    if output == "features":
        return lambda x: runner.forward_head(runner.forward_features(x), pre_logits=True)
    if isinstance(runner, FactorizedEncoderViViT):
        return runner.forward_frame_features

    def frames(x: torch.Tensor) -> torch.Tensor:
        (grid,) = runner.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        return grid.mean(dim=(3, 4)).transpose(1, 2)  # (B, D, nt, nh, nw) -> (B, nt, D)

    return frames


def _check_windows(windows: Any) -> np.ndarray:
    """`windows` as an int64 `(n, 2)` array of `[first, last)` frames with non-decreasing starts."""
    try:
        array = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ValueError(f"windows must be [first, last) frame pairs (n, 2), got {windows!r:.80}") from None
    if len(array) and (
        (array[:, 0] < 0).any() or (array[:, 1] <= array[:, 0]).any() or (np.diff(array[:, 0]) < 0).any()
    ):
        raise ValueError("windows must be non-empty [first, last) frame ranges, first >= 0, in order of their starts")
    return array


def _slice_keys(rows: np.ndarray, crops: int, tubelet: int, slices: int) -> list[list[_SliceKey]]:
    """Per view (clip-major, then crop), the keys of its `slices` tubelet slices in time order."""
    keys = []
    for row in rows.tolist():
        frames = [tuple(row[k * tubelet : (k + 1) * tubelet]) for k in range(slices)]
        keys += [[(crop, f) for f in frames] for crop in range(crops)]
    return keys


class WindowRunner:
    """Runs a model over windows of one video; Model 2 encodes each tubelet slice once.

    For Model 2 with `reuse=True` a window costs the spatial encoding of the slices no earlier
    window had (each slice's pixels are decoded and preprocessed once too) plus the temporal
    encoder on each of its views; every other model, or `reuse=False`, runs each view of each
    window through the whole model. Both give the same numbers up to float rounding (within 1e-5
    in fp32: the same layers on the same pixels, batched differently), with the model as given
    (`vivit.optimize_for_inference` copies included: they keep the class and its methods).

    Memory: the slice cache keeps one embedding `(D,)` per slice, and drops a slice as soon as
    the next window starts after its first frame (windows come in order of their starts, so no
    later window can hold it): at most one window's slices (times its views) are kept. Pixels are
    read in chunks of at most `_DECODE_BUDGET_BYTES` of decoded frames; at most about `batch_size`
    clips' worth of preprocessed pixels exist at a time.

    Example:
        >>> runner = WindowRunner(model.eval(), output="features")
        >>> with vivit.VideoReader("match.mp4") as reader:
        ...     windows = sliding_windows(len(reader), 64, 8)
        ...     features = torch.stack(list(runner.run(windows, reader.get_frames_at)))

    Args:
        model: A vivit model in eval mode (`model.eval()`, or `vivit.predict.inference_model(model)`
            to leave the caller's model as it is); its outputs must not depend on the batch.
        output: What each window yields (see `Output`).
        views: `(clips, crops)` per window, crops 1 (centre) or 3 (left/centre/right); the
            window's output is the mean over its views.
        pretrained_cfg: Preprocessing cfg; default `resolve_data_config(model=model)`.
        batch_size: Clips per forward pass (Model 2's slice path: `batch_size x nt` slices).
        reuse: Encode Model 2's slices once (True) or every window from its pixels (False; no
            effect for Models 1, 3 and 4). Jobs pass `shares_slices(...)`: with no shared slice,
            reuse saves nothing.
        clip_rows: Which frames a window's clips read (see `ClipRows`); default `view_frame_indices`.

    Raises:
        ValueError: For a model in training mode (dropout would make windows differ), an unknown
            `output`, bad views or batch size.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        output: Output = "logits",
        views: tuple[int, int] = (1, 1),
        pretrained_cfg: Mapping[str, Any] | None = None,
        batch_size: int = 4,
        reuse: bool = True,
        clip_rows: ClipRows | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        # The root's flag (what `model.eval()` sets): `optimize_for_inference` copies hold new
        # submodules left in training mode, which have no train-time behaviour.
        if model.training:
            raise ValueError(
                "the model is in training mode (dropout and drop-path would make every window's result random); "
                "pass model.eval() or vivit.predict.inference_model(model)"
            )
        self.fn = clip_function(model, output)
        if not (isinstance(views, (tuple, list)) and len(views) == 2):
            raise ValueError(f"views must be (clips, crops), got {views!r}")
        clips, crops = views
        if isinstance(clips, bool) or not isinstance(clips, (int, np.integer)) or clips < 1:
            raise ValueError(f"clips must be a positive integer, got {clips!r}")
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 (centre) or 3 (left/centre/right), got {crops!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.output: Output = output
        self.views = (int(clips), int(crops))
        self.cfg = (
            resolve_data_config(pretrained_cfg) if pretrained_cfg is not None else resolve_data_config(model=model)
        )
        self.channels, self.num_frames = self.cfg["input_size"][:2]
        self.frame_stride = self.cfg["frame_stride"]
        self.batch_size = int(batch_size)
        self.device, self.dtype = _device_dtype(model)
        self.reuse = bool(reuse) and isinstance(model, FactorizedEncoderViViT)
        self.tubelet = int(model.patch_embed.kernel_size[0]) if isinstance(model, FactorizedEncoderViViT) else 1
        self.slices = self.num_frames // self.tubelet  # a clip's leftover frames are dropped (VALID), as the conv does
        self._rows = clip_rows
        self._cache: dict[_SliceKey, torch.Tensor] = {}
        self._frame_bytes = 0
        self._last_start = 0
        #: Counters since construction: windows and views done, slices encoded and served from
        #: the cache (Model 2 reuse), clips run through the whole model (otherwise).
        self.stats = {"windows": 0, "views": 0, "slices_encoded": 0, "slices_reused": 0, "clips_encoded": 0}

    # ------------------------------------------------------------ geometry
    def clip_rows(self, first: int, last: int) -> np.ndarray:
        """Source frames `(clips, num_frames)` of the test clips of window `[first, last)`.

        Raises:
            ValueError: When a `clip_rows` function returns another shape or frames outside the window.
        """
        return _rows(self._rows, first, last, self.num_frames, self.frame_stride, self.views[0])

    # ------------------------------------------------------------ running
    def run(self, windows: Iterable[Sequence[int]] | np.ndarray, get_frames: FrameGetter) -> Iterator[torch.Tensor]:
        """Yields each window's output in order, float32 on the model's device, averaged over views.

        Windows are pulled from `windows` lazily and computed in groups (Model 2 reuse: until
        about `batch_size` clips' worth of new slices; otherwise `batch_size` views), so a window is
        yielded once its group is done; `step` computes one window at once (live input).

        Args:
            windows: `[first, last)` source frames of each window, starts non-decreasing (e.g.
                `vivit.data.sampling.sliding_windows`).
            get_frames: Reads frames by index (see `FrameGetter`); only frames of the views are asked.

        Yields:
            float32 tensors: `(num_classes,)`, `(D,)` or `(nt, D)` per `output`.

        Raises:
            ValueError: For windows out of order or empty, or frames / model outputs of the wrong shape.
        """
        group: list[tuple[int, int]] = []
        new: set[_SliceKey] = set()  # slices the group will encode (reuse)
        for first, last in _iter_windows(windows):
            if group and first < group[-1][0]:
                raise ValueError("windows must come in order of their starts")
            group.append((first, last))
            if self.reuse:
                new |= {k for view in self._view_keys(first, last) for k in view if k not in self._cache}
                full = len(new) >= self.batch_size * self.slices
            else:
                full = len(group) * self.views[0] * self.views[1] >= self.batch_size
            if full:
                yield from self._run_group(group, get_frames)
                group, new = [], set()
        if group:
            yield from self._run_group(group, get_frames)

    def step(self, first: int, last: int, get_frames: FrameGetter) -> torch.Tensor:
        """The output of one window, computed now (the next window must not start before it)."""
        (out,) = self._run_group([(int(first), int(last))], get_frames)
        return out

    def clear(self) -> None:
        """Forget the cached slices (before running another video)."""
        self._cache.clear()
        self._last_start = 0

    @property
    def cached_slices(self) -> int:
        """Slice embeddings held now (at most one window's slices, times its views, between windows)."""
        return len(self._cache)

    def _view_keys(self, first: int, last: int) -> list[list[_SliceKey]]:
        """The slice keys of each view of window `[first, last)`, clip-major then crop."""
        return _slice_keys(self.clip_rows(first, last), self.views[1], self.tubelet, self.slices)

    def _run_group(self, group: list[tuple[int, int]], get_frames: FrameGetter) -> list[torch.Tensor]:
        if group[0][0] < self._last_start:  # the cache has dropped what an earlier start would need
            raise ValueError(
                f"windows must come in order of their starts: [{group[0][0]}, {group[0][1]}) after a window "
                f"starting at {self._last_start} (call clear() before another video)"
            )
        self._last_start = group[-1][0]
        with torch.inference_mode():
            outs = self._group_slices(group, get_frames) if self.reuse else self._group_clips(group, get_frames)
        self.stats["windows"] += len(group)
        return outs

    # ------------------------------------------------------------ full windows (every model)
    def _group_clips(self, group: list[tuple[int, int]], get_frames: FrameGetter) -> list[torch.Tensor]:
        clips, crops = self.views
        per_window = clips * crops
        views: list[torch.Tensor] = []
        sums: list[torch.Tensor | None] = [None] * len(group)
        owners: list[int] = []

        def flush(count: int) -> None:
            out = self._checked(self.fn(torch.stack(views[:count]).to(self.dtype)), count).float()
            for w, part in _runs(owners[:count], out):
                total = sums[w]
                sums[w] = part.sum(0) if total is None else total + part.sum(0)
            del views[:count], owners[:count]

        for w, (first, last) in enumerate(group):
            rows = self.clip_rows(first, last)
            frames = self._read(get_frames, rows.reshape(-1))  # one read per window, as predict_timeline
            for clip_frames in frames.split(self.num_frames):
                views += crop_test_views(clip_frames, crops, self.cfg)
                owners += [w] * crops
            del frames
            while len(views) >= self.batch_size:
                flush(self.batch_size)
        if views:
            flush(len(views))
        self.stats["views"] += per_window * len(group)
        self.stats["clips_encoded"] += per_window * len(group)
        return [s / per_window for s in sums if s is not None]

    # ------------------------------------------------------------ Model 2: slices once
    def _group_slices(self, group: list[tuple[int, int]], get_frames: FrameGetter) -> list[torch.Tensor]:
        model: Any = self.model
        crops = self.views[1]
        view_keys = [self._view_keys(first, last) for first, last in group]
        wanted = list(dict.fromkeys(k for keys in view_keys for view in keys for k in view))
        missing = [k for k in wanted if k not in self._cache]
        self.stats["slices_reused"] += sum(len(view) for keys in view_keys for view in keys) - len(missing)
        self._encode(missing, get_frames)

        # The temporal encoder (or nothing, for per-frame features) on every view of the group.
        embeddings = torch.stack([torch.stack([self._cache[k] for k in view]) for keys in view_keys for view in keys])
        if self.output == "frame_features":
            out = embeddings
        else:
            tokens = model.forward_temporal(embeddings)
            out = model.forward_head(tokens, pre_logits=self.output == "features")
            if self.output == "logits":
                out = self._checked(out, len(embeddings))
        per_window = self.views[0] * crops
        self.stats["views"] += per_window * len(group)
        # No later window starts before the last one here: slices that begin earlier are done.
        start = group[-1][0]
        for key in [k for k in self._cache if min(k[1]) < start]:
            del self._cache[key]
        return [part.float().sum(0) / per_window for part in out.split(per_window)]

    def _encode(self, missing: list[_SliceKey], get_frames: FrameGetter) -> None:
        """Spatial embeddings of the `missing` slices into the cache.

        Their frames are read in order, a chunk at a time, and preprocessed once each (all crops;
        the eval transform treats every frame on its own, so a frame's crops are the same pixels
        in any clip); a slice is encoded once its frames are in, and a frame's pixels are dropped
        when its last slice is taken.
        """
        crops = self.views[1]
        todo = set(missing)
        slices = sorted(dict.fromkeys(key[1] for key in missing), key=max)  # distinct frame tuples
        uses: dict[int, int] = {}
        for frames in slices:
            for f in frames:
                uses[f] = uses.get(f, 0) + 1
        to_read = sorted(uses)
        pixels: dict[int, list[torch.Tensor]] = {}  # frame -> its normalized crops (C, h, w)
        batch: list[tuple[_SliceKey, torch.Tensor]] = []
        for frames in slices:
            if any(f not in pixels for f in frames):  # frames are read in order: max(frames) comes last
                chunk = np.asarray(to_read[: max(self._chunk_frames(), to_read.index(max(frames)) + 1)])
                del to_read[: len(chunk)]
                decoded = self._read(get_frames, chunk)
                pixels.update(zip(chunk.tolist(), _per_frame(crop_test_views(decoded, crops, self.cfg)), strict=True))
                del decoded
            batch += [
                ((crop, frames), torch.stack([pixels[f][crop] for f in frames], dim=1))  # (C, t, h, w)
                for crop in range(crops)
                if (crop, frames) in todo
            ]
            for f in frames:
                uses[f] -= 1
                if not uses[f]:
                    del pixels[f]
            if len(batch) >= self.batch_size * self.slices:
                self._encode_batch(batch)
                batch = []
        if batch:
            self._encode_batch(batch)

    def _encode_batch(self, batch: list[tuple[_SliceKey, torch.Tensor]]) -> None:
        model: Any = self.model
        x = torch.stack([pix for _, pix in batch]).to(self.dtype)  # (S, C, t, h, w)
        emb = model.forward_slices(x)[:, 0].float()  # (S, D)
        for (key, _), e in zip(batch, emb, strict=True):
            self._cache[key] = e.clone()
        self.stats["slices_encoded"] += len(batch)

    # ------------------------------------------------------------ helpers
    def _chunk_frames(self) -> int:
        """Frames per read: a window's clips at first, then as many as `_DECODE_BUDGET_BYTES` holds."""
        if not self._frame_bytes:
            return self.num_frames * self.views[0]
        return max(self.tubelet, _DECODE_BUDGET_BYTES // self._frame_bytes)

    def _read(self, get_frames: FrameGetter, indices: np.ndarray) -> torch.Tensor:
        frames = as_thwc(get_frames(indices), self.channels)
        if frames.shape[0] != len(indices):
            raise ValueError(f"get_frames returned {frames.shape[0]} frames for {len(indices)} indices")
        self._frame_bytes = int(frames[0].numel())
        return frames.to(self.device) if self.device.type != "cpu" else frames

    def _checked(self, out: Any, batch: int) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != batch:
            got = f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
            raise ValueError(f"expected the model to return ({batch}, ...) outputs; got {got}")
        if self.output == "logits" and out.ndim != 2:
            raise ValueError(
                f"expected the model to return logits of shape ({batch}, num_classes); got {tuple(out.shape)}"
            )
        return out


def _per_frame(crops: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """`crop_test_views` of n frames (each `(C, n, h, w)`) -> per frame, its crops `(C, h, w)`."""
    return [list(frame_crops) for frame_crops in zip(*(c.unbind(1) for c in crops), strict=True)]


def _runs(owners: list[int], out: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Consecutive rows of `out` with the same owner, as `(owner, rows)`."""
    start = 0
    for i in range(1, len(owners) + 1):
        if i == len(owners) or owners[i] != owners[start]:
            yield owners[start], out[start:i]
            start = i


def _iter_windows(windows: Iterable[Sequence[int]] | np.ndarray) -> Iterator[tuple[int, int]]:
    if isinstance(windows, np.ndarray):
        yield from ((int(a), int(b)) for a, b in _check_windows(windows).tolist())
        return
    for window in windows:
        ((first, last),) = _check_windows([window]).tolist()
        yield int(first), int(last)


def _rows(rule: ClipRows | None, first: int, last: int, num_frames: int, frame_stride: int, clips: int) -> np.ndarray:
    """The clips' frames of window `[first, last)` by `rule` (default `view_frame_indices`), checked."""
    if rule is None:
        return view_frame_indices(last, num_frames, frame_stride, clips, first=first, last=last)
    rows = np.asarray(rule(first, last))
    if rows.shape != (clips, num_frames) or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"clip_rows must return ({clips}, {num_frames}) frame indices, got {rows.dtype} {rows.shape}")
    if rows.size and (rows.min() < first or rows.max() >= last):
        raise ValueError(f"clip_rows returned frames outside the window [{first}, {last})")
    return rows.astype(np.int64)


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating parameter (or buffer); CPU/fp32 if none."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def shares_slices(
    model: nn.Module,
    windows: np.ndarray | Sequence[Sequence[int]],
    *,
    views: tuple[int, int] = (1, 1),
    pretrained_cfg: Mapping[str, Any] | None = None,
    clip_rows: ClipRows | None = None,
) -> bool:
    """Whether reusing Model 2's slice encodings saves work on these windows.

    True when the model is a `FactorizedEncoderViViT` and some tubelet slice (crop and source
    frames) appears in more than one view of the windows: for regular windows, when the stride
    is a multiple of `frame_stride x tubelet_size` frames and windows overlap (or a window's
    clips overlap). Always False for Models 1, 3 and 4, which mix time in every block.

    Args:
        model: The model.
        windows: `[first, last)` frames, starts non-decreasing.
        views: `(clips, crops)` per window.
        pretrained_cfg: Preprocessing cfg (frames per clip, frame stride); default the model's.
        clip_rows: Which frames a window's clips read (see `ClipRows`); default `view_frame_indices`.

    Returns:
        Whether any slice would be encoded once and used again.
    """
    if not isinstance(model, FactorizedEncoderViViT):
        return False
    cfg = resolve_data_config(pretrained_cfg) if pretrained_cfg is not None else resolve_data_config(model=model)
    num_frames, frame_stride = cfg["input_size"][1], cfg["frame_stride"]
    tubelet = int(model.patch_embed.kernel_size[0])
    slices = num_frames // tubelet
    seen: set[tuple[int, ...]] = set()
    for first, last in _check_windows(windows).tolist():
        rows = _rows(clip_rows, first, last, num_frames, frame_stride, views[0])
        for view in _slice_keys(rows, 1, tubelet, slices):  # crops come with their frames: one suffices
            for _, frames in view:
                if frames in seen:
                    return True
                seen.add(frames)
        seen = {f for f in seen if min(f) >= first}
    return False


# ---------------------------------------------------------------- a whole video
Video = str | os.PathLike[str] | VideoReader | np.ndarray | torch.Tensor


def window_outputs(
    model: nn.Module,
    video: Video,
    windows: np.ndarray | Sequence[Sequence[int]],
    *,
    output: Output = "logits",
    views: tuple[int, int] = (1, 1),
    pretrained_cfg: Mapping[str, Any] | None = None,
    batch_size: int = 4,
    reuse: bool | None = None,
    clip_rows: ClipRows | None = None,
) -> Iterator[torch.Tensor]:
    """Yields the output of every window of one video, in order (see `WindowRunner`).

    Args:
        model: A vivit model in eval mode.
        video: A file path (opened with `vivit.VideoReader`, closed when the iterator ends), a
            `VideoReader`, or decoded uint8 frames `(T, H, W, C)`.
        windows: `[first, last)` frames, starts non-decreasing (`sliding_windows`).
        output: `"logits"`, `"features"` or `"frame_features"` (see `Output`).
        views: `(clips, crops)` per window.
        pretrained_cfg: Preprocessing cfg; default the model's.
        batch_size: Clips per forward pass.
        reuse: Model 2's slice reuse; None (default): when `shares_slices` says it saves work.
        clip_rows: Which frames a window's clips read (see `ClipRows`); default `view_frame_indices`.

    Yields:
        float32 tensors on the model's device, one per window.

    Raises:
        ValueError, FileNotFoundError: As `WindowRunner` and `vivit.VideoReader`.
    """
    windows = _check_windows(windows)
    if reuse is None:
        reuse = shares_slices(model, windows, views=views, pretrained_cfg=pretrained_cfg, clip_rows=clip_rows)
    runner = WindowRunner(
        model,
        output=output,
        views=views,
        pretrained_cfg=pretrained_cfg,
        batch_size=batch_size,
        reuse=reuse,
        clip_rows=clip_rows,
    )
    stack = ExitStack()
    if isinstance(video, (str, os.PathLike)):
        video = stack.enter_context(VideoReader(video))
    get_frames = video.get_frames_at if isinstance(video, VideoReader) else _array_getter(video, runner.channels)
    return _generate(stack, runner.run(windows, get_frames))


def _array_getter(frames: np.ndarray | torch.Tensor, channels: int) -> FrameGetter:
    array = as_thwc(frames, channels)
    return lambda indices: array[torch.from_numpy(np.asarray(indices)).to(array.device)]


def _generate(stack: ExitStack, outputs: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    with stack:
        yield from outputs
