"""Drawing and writing pictures: heat-map overlays on video frames, figures, GIF/MP4 animations.

matplotlib is an optional dependency (`pip install matplotlib`, or the `plot` extra); imported only when a
picture is drawn, and only its object-oriented API is used (a `Figure` on the Agg canvas: no
pyplot state, no GUI backend, safe in threads and on headless machines). GIFs are written with
Pillow (a matplotlib dependency), MP4s with PyAV (`pip install av`). Every file is written to a
temporary name and renamed, so a reader never sees half a picture.

The pieces are generic so that other pictures reuse them: `require_matplotlib`, `new_figure`,
`figure_to_rgb`, `save_figure`, `write_animation`, `prediction_title`. `plot_timeline` draws the
class probabilities of `vivit.predict.predict_timeline` over a long video.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ._install import install_hint
from .files import atomic_write, check_file_destination, writing

__all__ = [
    "ANIMATION_SUFFIXES",
    "PICTURE_SUFFIXES",
    "blend_heat",
    "check_animation_fps",
    "check_output_suffix",
    "figure_to_rgb",
    "new_figure",
    "plot_timeline",
    "prediction_title",
    "require_matplotlib",
    "require_writer",
    "save_figure",
    "text_lines",
    "timeline_classes",
    "token_heat_to_pixels",
    "write_animation",
    "write_heat_overlay",
]

ANIMATION_SUFFIXES = (".gif", ".mp4")
PICTURE_SUFFIXES = (".png", *ANIMATION_SUFFIXES)
DPI = 100
HEAT_CMAP = "turbo"  # bright in the middle of its range: middling relevance stays visible
HEAT_ALPHA = 0.7  # opacity of the heat map where relevance is highest
MAX_SHEET_FRAMES = 16
# A GIF stores each picture's delay as a 16-bit count of centiseconds (GIF89a, Graphic Control Extension),
# and viewers show delays under 2 cs at 10 cs (browsers' rule for "as fast as possible" GIFs).
_GIF_DELAY_CS = (2, 65535)


def require_matplotlib() -> Any:
    """Import matplotlib (Agg canvas), or raise ImportError saying how to install it."""
    try:
        import matplotlib
        from matplotlib.backends import backend_agg  # noqa: F401 - fails early if the install is broken
    except ImportError:
        raise ImportError(f"drawing pictures needs matplotlib: {install_hint('matplotlib', 'plot')}") from None
    return matplotlib


def require_writer(path: str | os.PathLike[str]) -> None:
    """Fail before any work when a picture could not be written: bad suffix or path, matplotlib or PyAV missing.

    Raises:
        ValueError: The suffix is not .png, .gif or .mp4, or `path` is a folder or lies under a file.
        ImportError: matplotlib (any picture) or PyAV (.mp4) is missing; the message says how to install it.
    """
    suffix = check_output_suffix(path)
    check_file_destination(path)
    require_matplotlib()
    if suffix == ".mp4":
        _import_av()


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError(f"writing .mp4 needs PyAV: {install_hint('av', 'video')}; .gif and .png do not") from None
    return av


def check_output_suffix(path: str | os.PathLike[str], allowed: Sequence[str] = PICTURE_SUFFIXES) -> str:
    """The lower-case suffix of `path`, or ValueError when it is not one of `allowed`."""
    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"cannot write {os.fspath(path)!r}: the file name must end in {', '.join(allowed)}")
    return suffix


def check_animation_fps(path: str | os.PathLike[str], fps: float) -> None:
    """Check that an animation at `path` can play at `fps` frames per second.

    Raises:
        ValueError: `fps` is not a positive number, or outside 0.00153-50 for a `.gif`, whose delays are
            whole centiseconds (2 to 65535: shorter delays are shown at 10 fps by viewers).
    """
    if isinstance(fps, bool) or not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if Path(path).suffix.lower() == ".gif" and not _GIF_DELAY_CS[0] <= round(100 / fps) <= _GIF_DELAY_CS[1]:
        low, high = (cs / 100 for cs in _GIF_DELAY_CS)
        raise ValueError(
            f"a .gif shows each picture for {low:g} to {high:g} seconds (fps {1 / high:.3g} to {1 / low:g}), "
            f"got fps {fps:g}; .mp4 takes any fps"
        )


def new_figure(width: float, height: float) -> Any:
    """A matplotlib `Figure` of `width` x `height` inches on its own Agg canvas (no pyplot)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def figure_to_rgb(fig: Any) -> np.ndarray:
    """Render a figure to uint8 RGB `(H, W, 3)` pixels."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save a figure atomically; the format follows the suffix (png, pdf, svg, ...).

    Raises:
        vivit.files.WriteError: It could not be written (full disk, read-only folder), naming `path`.
    """
    path = Path(path)
    with writing(path), atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=DPI)


def write_animation(images: Sequence[np.ndarray], path: str | os.PathLike[str], fps: float) -> None:
    """Write uint8 RGB pictures `(H, W, 3)` (all the same size) as a looping `.gif` or an `.mp4`.

    GIF: Pillow, one adaptive palette per picture. MP4: PyAV, H.264 (MPEG-4 part 2 where the
    FFmpeg build has no H.264 encoder), yuv420p; odd sizes are padded to even ones with white.

    Raises:
        ValueError: No pictures, a bad `fps` (`check_animation_fps`), or a suffix other than .gif / .mp4.
        ImportError: PyAV is missing (for .mp4); the message says how to install it.
    """
    suffix = check_output_suffix(path, ANIMATION_SUFFIXES)
    if not images:
        raise ValueError("no pictures to write")
    check_animation_fps(path, fps)
    if suffix == ".gif":
        _write_gif(images, Path(path), fps)
    else:
        _write_mp4(images, Path(path), fps)


def _write_gif(images: Sequence[np.ndarray], path: Path, fps: float) -> None:
    from PIL import Image

    pictures = [Image.fromarray(np.ascontiguousarray(image)) for image in images]
    with writing(path), atomic_write(path) as tmp:
        pictures[0].save(
            tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0
        )


def _write_mp4(images: Sequence[np.ndarray], path: Path, fps: float) -> None:
    av = _import_av()
    height, width = images[0].shape[:2]
    even_h, even_w = height + height % 2, width + width % 2  # yuv420p halves both sizes
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with writing(path), atomic_write(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "20"}
        for image in images:
            padded = np.full((even_h, even_w, 3), 255, np.uint8)
            padded[:height, :width] = image
            container.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
        container.mux(stream.encode())


def prediction_title(name: str, predictions: Sequence[Mapping[str, Any]], true_label: str | None = None) -> str:
    """`"name: label 97.1%, label 1.2%  (true: label)"` from `vivit.predict.top_predictions` items."""
    parts = []
    for item in predictions:
        split = f"{item['split']} " if item.get("split") else ""
        parts.append(f"{split}{item['label']} {item['probability'] * 100:.1f}%")
    title = f"{name}: {', '.join(parts)}"
    return title + (f"  (true: {true_label})" if true_label is not None else "")


TITLE_FONTSIZE = 9
_LINE_INCHES = 1.25 * TITLE_FONTSIZE / 72  # one line of title text, with matplotlib's line spacing


def text_lines(
    text: str, width_inches: float, fontsize: float = TITLE_FONTSIZE, max_lines: int | None = None
) -> list[str]:
    """`text` broken into lines that each fit `width_inches` when drawn at `fontsize` points.

    Lines break after `, ` and `: ` first (so a title's predictions stay whole, one `label 97.1%`
    per piece), then between words; a word wider than a line is cut with an ellipsis. Widths are
    measured with matplotlib's own text metrics (DejaVu Sans by default), not guessed.

    Args:
        text: One line of text (its own line breaks are kept).
        width_inches: The room for a line.
        fontsize: Points.
        max_lines: At most this many lines; the last one then ends in an ellipsis.

    Returns:
        The lines (at least one).
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(10, 10, DPI)
    prop = FontProperties(size=fontsize)
    room = width_inches * DPI

    def width(line: str) -> float:
        return float(renderer.get_text_width_height_descent(_as_text(line), prop, ismath=False)[0])

    def cut(word: str) -> str:
        while len(word) > 1 and width(word + "…") > room:
            word = word[:-1]
        return word + "…"

    lines: list[str] = []
    for paragraph in _visible(text).split("\n"):
        line = ""
        for piece in re.split(r"(?<=, )|(?<=: )|(?=  \()", paragraph):
            for chunk in [piece] if width(piece) <= room else re.split(r"(?<= )", piece):
                if width(line + chunk) <= room or not line:
                    line += chunk
                else:
                    lines.append(line.rstrip())
                    line = chunk
                if width(line.rstrip()) > room:  # one word wider than the line
                    line = cut(line.rstrip())
        lines.append(line.rstrip())
    if max_lines is not None and len(lines) > max_lines:
        last = lines[max_lines - 1]
        lines = lines[: max_lines - 1] + [last + "…" if width(last + "…") <= room else cut(last)]
    return lines or [""]


def token_heat_to_pixels(
    heat: np.ndarray, num_frames: int, tubelet: Sequence[int], frame_size: Sequence[int]
) -> np.ndarray:
    """A token-grid map `(nt, nh, nw)` -> one value per pixel `(T, H, W)`, each token on its tubelet.

    Token (i, j, k) covers frames `[i*t, (i+1)*t)`, rows `[j*h, (j+1)*h)`, columns `[k*w, (k+1)*w)`
    for a tubelet `(t, h, w)`; pixels no token covers (leftovers a tubelet does not fill, which the
    model drops) get 0.
    """
    nt, nh, nw = heat.shape
    t, h, w = (int(v) for v in tubelet)
    grid = heat.repeat(t, 0).repeat(h, 1).repeat(w, 2)
    out = np.zeros((num_frames, *frame_size), np.float32)
    frames, rows, cols = min(num_frames, nt * t), min(frame_size[0], nh * h), min(frame_size[1], nw * w)
    out[:frames, :rows, :cols] = grid[:frames, :rows, :cols]
    return out


def blend_heat(
    frames: np.ndarray,
    heat: np.ndarray,
    vmin: float,
    vmax: float,
    cmap: str = HEAT_CMAP,
    alpha: float = HEAT_ALPHA,
) -> np.ndarray:
    """Alpha-blend a colour-mapped heat map onto frames, more opaque where the heat is higher.

    The heat is scaled to a level in [0, 1] between `vmin` and `vmax`; the colour is the colour
    map at that level and its opacity `alpha * sqrt(level)`, so cold regions show the frame
    untouched and middling ones are still visible (a linear ramp hides them on dark video).

    Args:
        frames: uint8 RGB `(..., H, W, 3)`.
        heat: float `(..., H, W)`.
        vmin, vmax: Heat shown transparent / at full colour with opacity `alpha` (clipped outside).
        cmap: matplotlib colour map name.
        alpha: Opacity at `vmax`.

    Returns:
        uint8 RGB, same shape as `frames`.
    """
    matplotlib = require_matplotlib()
    span = vmax - vmin
    level = np.clip((heat - vmin) / span, 0.0, 1.0) if span > 0 else np.zeros_like(heat)
    colour = matplotlib.colormaps[cmap](level)[..., :3] * 255.0
    opacity = (alpha * np.sqrt(level))[..., None]
    return np.round(frames * (1.0 - opacity) + colour * opacity).astype(np.uint8)


def _colour_bar(fig: Any, cax: Any, vmin: float, vmax: float, label: str) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(norm=Normalize(vmin, vmax), cmap=HEAT_CMAP), cax=cax)
    bar.formatter.set_useOffset(False)  # "1e-6 + 1.24e-2" ticks read badly
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _panel_inches(frame_size: Sequence[int], width: float) -> tuple[float, float]:
    return width, width * frame_size[0] / frame_size[1]


def _overlay_frame_figure(
    frame: np.ndarray, vmin: float, vmax: float, title: str, caption: str, frame_label: str
) -> np.ndarray:
    """One animation picture: the blended frame, a colour bar, the title (wrapped to the width) and the caption."""
    img_w, img_h = _panel_inches(frame.shape[:2], 3.6)
    width = img_w + 1.6
    lines = text_lines(title, width - 0.2)
    height = img_h + 0.45 + 0.25 + len(lines) * _LINE_INCHES
    fig = new_figure(width, height)
    ax = fig.add_axes((0.2 / width, 0.45 / height, img_w / width, img_h / height))
    ax.imshow(frame, interpolation="nearest")
    ax.set_axis_off()
    ax.text(
        0.01,
        0.99,
        frame_label,
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        color="white",
        bbox=dict(facecolor="black", alpha=0.5, pad=1.5, edgecolor="none"),
    )
    cax = fig.add_axes(((img_w + 0.4) / width, 0.45 / height, 0.15 / width, img_h / height))
    _colour_bar(fig, cax, vmin, vmax, "relevance")
    fig.suptitle(_as_text("\n".join(lines)), fontsize=TITLE_FONTSIZE, y=1 - 0.1 / height, va="top")
    fig.text(0.5, 0.15 / height, _as_text(caption), ha="center", va="bottom", fontsize=8)
    return figure_to_rgb(fig)


def _contact_sheet(
    frames: np.ndarray, indices: Sequence[int], vmin: float, vmax: float, title: str, caption: str
) -> Any:
    """A grid of blended frames with one colour bar."""
    n = len(indices)
    cols = n if n <= 4 else (4 if n <= 8 else 8)
    rows = math.ceil(n / cols)
    panel_w, panel_h = _panel_inches(frames.shape[1:3], 1.7)
    width = cols * panel_w + 1.2
    lines = text_lines(title, width - 0.2)
    height = rows * (panel_h + 0.2) + 0.45 + 0.2 + len(lines) * _LINE_INCHES
    fig = new_figure(width, height)
    for slot, index in enumerate(indices):
        row, col = divmod(slot, cols)
        left = (0.1 + col * panel_w) / width
        bottom = (0.45 + (rows - 1 - row) * (panel_h + 0.2)) / height
        ax = fig.add_axes((left, bottom, (panel_w - 0.06) / width, panel_h / height))
        ax.imshow(frames[index], interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"frame {index + 1}", fontsize=7, pad=2)
    cax = fig.add_axes(
        ((cols * panel_w + 0.3) / width, 0.45 / height, 0.12 / width, (rows * (panel_h + 0.2) - 0.2) / height)
    )
    _colour_bar(fig, cax, vmin, vmax, "relevance")
    fig.suptitle(_as_text("\n".join(lines)), fontsize=TITLE_FONTSIZE, y=1 - 0.08 / height, va="top")
    fig.text(0.5, 0.12 / height, _as_text(caption), ha="center", va="bottom", fontsize=8)
    return fig


def write_heat_overlay(
    out: str | os.PathLike[str],
    frames: np.ndarray,
    heat: np.ndarray,
    *,
    title: str,
    caption: str = "",
    fps: float = 4.0,
    vmin: float | None = None,
    vmax: float | None = None,
) -> int:
    """Draw a per-pixel heat map over video frames and write `.png` (contact sheet), `.gif` or `.mp4`.

    Args:
        out: Output path; the suffix chooses the format.
        frames: uint8 RGB `(T, H, W, 3)`.
        heat: float `(T, H, W)`, non-negative (e.g. `token_heat_to_pixels` of a relevance map).
        title: Figure title (e.g. `prediction_title(...)`).
        caption: A line under the picture (what the map shows).
        fps: Frames per second of an animation.
        vmin, vmax: Ends of the colour scale, shared by all frames so that they compare
            (default: the largest heat, and the smallest or half the largest, whichever is lower).

    Returns:
        The number of frames drawn (the contact sheet shows all up to 16, else 16 evenly spaced).
    """
    suffix = check_output_suffix(out)
    frames = np.asarray(frames)
    heat = np.asarray(heat, dtype=np.float32)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if heat.shape != frames.shape[:3]:
        raise ValueError(f"heat must be (T, H, W) = {frames.shape[:3]}, got {heat.shape}")
    vmax = float(heat.max()) if vmax is None else float(vmax)
    # From the smallest value (a rollout has a floor: every token keeps part of itself), but over at
    # least the top half of [0, vmax], so that a nearly uniform map is not stretched into false contrast.
    vmin = min(float(heat.min()), vmax / 2) if vmin is None else float(vmin)
    blended = blend_heat(frames, heat, vmin, vmax)
    total = len(frames)
    if suffix == ".png":
        indices = (
            list(range(total))
            if total <= MAX_SHEET_FRAMES
            else np.linspace(0, total - 1, MAX_SHEET_FRAMES).round().astype(int).tolist()
        )
        save_figure(_contact_sheet(blended, indices, vmin, vmax, title, caption), out)
        return len(indices)
    pictures = [
        _overlay_frame_figure(frame, vmin, vmax, title, caption, f"frame {i + 1}/{total}")
        for i, frame in enumerate(blended)
    ]
    write_animation(pictures, out, fps)
    return total


TIMELINE_SIZE = (1000, 400)  # pixels of `plot_timeline`'s picture by default


def timeline_classes(probabilities: np.ndarray, classes: int, max_classes: int = 10) -> list[int]:
    """The classes a timeline shows: every class that wins some window, then the highest peaks.

    A class that is the most probable one in some window is always shown (up to `max_classes`,
    those with the highest peaks), so every segment of the band has its line; the rest, up to
    `classes` in all, are the classes whose probability peaks highest in some window. Ranking by
    the peak, not the mean, keeps a short event that a video-level average would drown.

    Args:
        probabilities: float `(num_windows, num_classes)`.
        classes: How many to show at least (fewer only when there are fewer classes).
        max_classes: How many to show at most, when more classes win some window.

    Returns:
        Class indices: the winners by peak, then the others by peak (ties: lower index first).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    peaks = probs.max(axis=0)
    winners = np.zeros(len(peaks), dtype=bool)
    winners[probs.argmax(axis=1)] = True
    order = np.lexsort((np.arange(len(peaks)), -peaks, ~winners))  # last key sorts first
    count = min(max(int(classes), min(int(winners.sum()), int(max_classes))), len(peaks))
    return [int(i) for i in order[:count]]


def plot_timeline(
    out: str | os.PathLike[str],
    spans: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    *,
    classes: int = 5,
    title: str = "",
    unit: str = "s",
    size: tuple[int, int] = TIMELINE_SIZE,
) -> list[int]:
    """Draw class probabilities over time as a `.png`: one line per class, a band of the top class.

    Each window's probabilities are drawn flat over its span (from halfway to its neighbours'
    centres when windows overlap), and the band above the plot shows there the colour of its most
    probable class (grey when that class is not among those drawn), so that the segments of a long
    video read at a glance. Windows are expected in time order.

    Args:
        out: Output path ending in `.png` (written atomically; its folder is created).
        spans: float `(num_windows, 2)`: `[start, end)` of each window, in seconds (`unit="s"`)
            or frames (`unit="frames"`, e.g. when the video has no frame rate).
        probabilities: float `(num_windows, num_classes)`, e.g. `Timeline.probabilities`.
        labels: Name of every class (`num_classes` of them), used in the legend.
        classes: How many classes to draw at least (`timeline_classes`: every class that wins a
            window, up to 10, then the highest peaks).
        title: Figure title.
        unit: `"s"` or `"frames"`: what `spans` count (the x axis label).
        size: `(width, height)` of the picture in pixels.

    Returns:
        The class indices drawn, in legend order.

    Raises:
        ValueError: For shapes that do not match, NaN spans, a suffix other than .png, or a size
            or class count that is not positive.
        ImportError: matplotlib is missing; the message says how to install it.
    """
    check_output_suffix(out, (".png",))
    spans = np.asarray(spans, dtype=np.float64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 1 or spans.shape != (probs.shape[0], 2):
        raise ValueError(
            f"spans must be (num_windows, 2) and probabilities (num_windows, num_classes), got {spans.shape} and {probs.shape}"
        )
    if len(labels) != probs.shape[1]:
        raise ValueError(f"expected {probs.shape[1]} labels (one per class), got {len(labels)}")
    if not np.isfinite(spans).all():
        raise ValueError("spans must be finite (draw frames with unit='frames' when times are unknown)")
    if unit not in ("s", "frames"):
        raise ValueError(f"unit must be 's' or 'frames', got {unit!r}")
    width, height = (int(v) for v in size)
    if width < 200 or height < 150 or isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(
            f"size must be at least (200, 150) pixels and classes a positive integer, got {size!r} and {classes!r}"
        )
    shown = timeline_classes(probs, classes)
    matplotlib = require_matplotlib()
    palette = matplotlib.colormaps["tab10" if len(shown) <= 10 else "tab20"]
    colour = {c: palette(i % palette.N) for i, c in enumerate(shown)}
    fig = new_figure(width / DPI, height / DPI)
    # Inches for the margins (legend on the right, band on top), so that the layout holds at any size.
    # A long title (a file name, the model) wraps to at most two lines, each fitting the width.
    title_lines = text_lines(title, width / DPI - 0.2, max_lines=2) if title else []
    left, right, bottom, top, band = (
        0.7 / (width / DPI),
        2.4 / (width / DPI),
        0.55 / (height / DPI),
        (0.3 + max(len(title_lines), 1) * _LINE_INCHES) / (height / DPI),
        0.18 / (height / DPI),
    )
    plot_h = 1 - bottom - top - band - 0.04 / (height / DPI)
    ax = fig.add_axes((left, bottom, 1 - left - right, plot_h))
    strip = fig.add_axes((left, bottom + plot_h + 0.04 / (height / DPI), 1 - left - right, band), sharex=ax)
    # Each window owns the time from halfway to its neighbours' centres, kept inside their overlap
    # (so windows that do not overlap, a last one cut short included, meet where they meet): its
    # probabilities are drawn flat there, not as ramps between windows, and overlapping windows do
    # not paint over each other in the band. A gap between windows (stride > window) saw no frames:
    # it stays empty (a NaN step, which matplotlib leaves undrawn).
    centres = spans.mean(axis=1)
    meet = np.clip((centres[1:] + centres[:-1]) / 2, spans[1:, 0], np.maximum(spans[:-1, 1], spans[1:, 0]))
    gap = spans[:-1, 1] < spans[1:, 0]
    lefts = np.concatenate([[spans[0, 0]], meet])
    rights = np.concatenate([np.where(gap, spans[:-1, 1], meet), [spans[-1, 1]]])
    edges, steps = [lefts[0]], []
    for w in range(len(probs)):
        edges.append(rights[w])
        steps.append(probs[w])
        if w + 1 < len(probs) and gap[w]:
            edges.append(lefts[w + 1])
            steps.append(np.full(probs.shape[1], np.nan))
    for c in shown:
        ax.stairs(
            np.array(steps)[:, c],
            edges,
            color=colour[c],
            linewidth=1.6,
            baseline=None,
            label=_as_text(text_lines(labels[c], 1.7, fontsize=8, max_lines=1)[0]),  # the legend's room
        )
    for start, end, c in zip(lefts, rights, probs.argmax(axis=1), strict=True):
        strip.axvspan(start, end, color=colour.get(int(c), (0.75, 0.75, 0.75)), linewidth=0)
    strip.set_yticks([])
    strip.tick_params(labelbottom=False, bottom=False)
    strip.set_ylabel("top", rotation=0, ha="right", va="center", fontsize=8)
    ax.set_xlim(float(spans.min()), float(spans.max()))
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability", fontsize=9)
    ax.set_xlabel("time (s)" if unit == "s" else "frame", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(_as_text("\n".join(title_lines)), fontsize=TITLE_FONTSIZE, y=1 - 0.08 / (height / DPI), va="top")
    save_figure(fig, out)
    return shown


def _visible(text: Any) -> str:
    """`text` with every character that is not printable (control characters, escape sequences, bidirectional
    overrides) but the line break written as its Python escape, as the command line prints it: a label or
    file name holding `\\x1b]0;...` is drawn as that text, not as missing-glyph boxes (with one matplotlib
    warning per character) or right-to-left reordered."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in str(text))


def _as_text(text: str) -> str:
    """`text` as drawn: control characters visible (`_visible`), dollar signs escaped: matplotlib reads
    `$...$` as TeX math, which would garble a label or file name holding two dollars and fail to draw one
    that is not valid TeX."""
    return _visible(text).replace("$", r"\$")
