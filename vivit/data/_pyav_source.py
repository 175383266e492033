"""The video-file source of `vivit.VideoReader`: a packet index over PyAV, seeking, exact frames.

See `vivit.data.video` for the method. Everything here works in the stream's own units: packets by
decode position (their order in the file), frames by presentation index, times as integer pts.

Every read of the file goes through `PyAVSource._demux`, which bounds the time FFmpeg may spend
without finding a packet of the video stream (`Limits.timeout`): PyAV's interrupt callback stops
an FFmpeg read that scans junk for longer (MPEG-PS, AVI, Matroska, FLV scan byte by byte for
their next packet header; MP4 reads from its index and does not), and MPEG-TS, whose demuxer
returns EAGAIN after each failed resync, is read on as FFmpeg's command-line tool reads on,
within the same bound.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._source import Limits, import_av

__all__ = ["PyAVSource"]

_NO_PTS = np.iinfo(np.int64).min  # stands for a missing timestamp in the int64 index arrays
# Packets read past a run's last wanted frame before giving up on a frame the decoder never
# produced (covers the decoder's reordering and frame-threading delay many times over).
_RUN_SLACK_PACKETS = 64
# Decoding on through this many packets is cheaper than a seek, which restarts the decoder.
_SEEK_GAP_PACKETS = 4
# Largest value of FFmpeg's `max_pixels` codec option (an int option bounded by INT_MAX).
_FFMPEG_MAX_PIXELS = 2**31 - 1
# FFmpeg demuxers that read one still image per file (`image2` by suffix, `png_pipe`, `jpeg_pipe`,
# `webp_pipe`, ... by content: every `*_pipe` demuxer is an image reader, libavformat/img2dec.c),
# and animation formats that are a still image when they hold one frame.
_IMAGE_FORMATS = ("image2",)
_ANIMATION_FORMATS = ("gif", "apng", "webp")


# FFmpeg's decoder threads do not survive a fork (DataLoader workers are forked): in a child, freeing
# or using a container opened in the parent joins threads that do not exist there, and hangs or
# crashes. PyAV containers sit in reference cycles, so even closed ones are freed only by the
# garbage collector, which may run in the child. Hence: before a fork, the parent collects the
# containers it no longer uses (only when some were opened since the last fork); after it, the
# child sets aside those still open, never touching them again (their readers reopen the file).
_OPEN_SOURCES: weakref.WeakSet[PyAVSource] = weakref.WeakSet()
_INHERITED: list[Any] = []
_opened_since_fork = 0


def _collect_unused_containers() -> None:
    global _opened_since_fork
    if _opened_since_fork:
        gc.collect()
        _opened_since_fork = 0


def _set_aside_inherited_containers() -> None:
    for source in list(_OPEN_SOURCES):
        if source._container is not None:
            _INHERITED.append((source._container, source._stream))
            source._container = source._stream = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_collect_unused_containers, after_in_child=_set_aside_inherited_containers)


def _reason(err: BaseException) -> str:
    """FFmpeg errors carry "[Errno N] ...: 'path'"; their plain reason reads better after our prefix."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


class PyAVSource:
    """A video file read through PyAV with a packet index (see the module docstring)."""

    def __init__(self, path: Path, av: Any, limits: Limits, num_threads: int) -> None:
        self.path = path
        self._num_threads = num_threads
        self._timeout = limits.timeout
        self._av = av
        self.warning: str | None = None  # set when the file decodes fewer frames than it declares
        self._container: Any = None
        self._closed = False
        self._frame_threads = True
        self._lost = 0  # frames in the index that turned out not to decode (damaged files)
        self._max_pixels = min(limits.max_frame_pixels, _FFMPEG_MAX_PIXELS)
        self._size_unknown = False  # the stream did not declare its frame size (see `_first_frame`)
        self._open()
        try:
            self._build_index(limits)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ container
    def _open(self) -> None:
        av = self._av
        # FFmpeg decodes a frame while opening (to probe the stream) and allocates it at the size
        # the bitstream declares: a 1 kB .mov holding a PNG frame that declares 16000 x 16000 16-bit
        # RGBA made it allocate 2 GB before any check of ours could run. FFmpeg's `max_pixels` refuses
        # such frames before allocating them, while probing and while decoding.
        max_pixels = {"max_pixels": str(self._max_pixels)}
        timeout = self._timeout
        started = time.monotonic()
        try:
            # PyAV's timeout interrupts FFmpeg's reads: (opening and probing, each packet read).
            container = av.open(str(self.path), options=max_pixels, timeout=(timeout, timeout))
        except av.error.ExitError:
            raise ValueError(self._stalled("while opening it")) from None
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as err:
            raise ValueError(f"cannot decode {self.path}: {_reason(err)}") from None
        global _opened_since_fork
        _opened_since_fork += 1
        if timeout is not None and time.monotonic() - started >= timeout:
            # Probing the streams was interrupted (FFmpeg then returns what it found, without an
            # error): it scanned for `timeout` seconds without finding the packets it looked for.
            container.close()
            raise ValueError(self._stalled("while opening it"))
        if container.format.name in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
            codec = container.streams.video[0].codec.name if container.streams.video else container.format.name
            container.close()
            raise ValueError(self._still_image(codec))
        # Cover art (an "attached picture", e.g. in music files) is a one-image video stream, not a video.
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            what = "only a cover image" if container.streams.video else f"it holds {', '.join(kinds)}"
            container.close()
            raise ValueError(f"{self.path} has no video stream ({what})")
        # FFmpeg's own choice among several video streams (av_find_best_stream, as its CLI); an
        # audio stream may come first in the file.
        best = container.streams.best("video")
        stream = best if best in videos else videos[0]
        if stream.codec_context is None:
            container.close()
            raise ValueError(f"cannot decode {self.path}: FFmpeg has no decoder for its {stream.codec.name!r} video")
        # Frame threads (with slice threads: "AUTO") decode healthy streams bit-exactly and faster,
        # but lose the frames in flight when a packet is damaged; damaged files use slice threads
        # only, which yield what FFmpeg's CLI and a plain sequential decode yield.
        stream.thread_type = "AUTO" if self._frame_threads else "SLICE"
        stream.codec_context.thread_count = self._num_threads
        stream.codec_context.options = {**stream.codec_context.options, **max_pixels}
        self._container, self._stream = container, stream
        _OPEN_SOURCES.add(self)

    def _ensure_open(self) -> None:
        if self._container is None:
            if self._closed:
                raise ValueError(f"{self.path}: the reader is closed")
            self._open()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._closed = True

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_container": None, "_stream": None}
        del state["_av"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._av = import_av()  # the pickled reader had PyAV, so the process unpickling it needs it as well

    # ------------------------------------------------------------ index
    def _build_index(self, limits: Limits) -> None:
        av, path, stream = self._av, self.path, self._stream
        limits_checked = False
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:  # before reading a single packet: a hostile header is refused at once
            limits.check_frame(path, height, width)
            limits_checked = True
        else:  # (also what FFmpeg reports when probing refused a frame above `max_pixels`)
            self._size_unknown = True

        pts, dts, key, discard, corrupt, duration = [], [], [], [], [], []
        demux_failed = False
        try:
            for packet in self._demux():
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # the empty packet PyAV yields at the end to flush the decoder
                pts.append(_NO_PTS if packet.pts is None else packet.pts)
                dts.append(_NO_PTS if packet.dts is None else packet.dts)
                key.append(packet.is_keyframe)
                discard.append(packet.is_discard)
                corrupt.append(packet.is_corrupt)
                duration.append(packet.duration or 0)
        except (av.error.FFmpegError, OSError, EOFError):
            demux_failed = True  # a damaged or cut file: keep what was read
        self._pts = np.array(pts, dtype=np.int64)
        self._dts = np.array(dts, dtype=np.int64)
        self._key = np.array(key, dtype=bool)
        discard_arr = np.array(discard, dtype=bool)
        shown = np.flatnonzero(~discard_arr)
        if not len(shown):
            raise ValueError(f"cannot decode {path}: its video stream holds no frames")
        self._time_base = float(stream.time_base) if stream.time_base else 0.0
        self.nominal_fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        declared = int(stream.frames or 0)

        shown_pts = self._pts[shown]
        # Frames are matched to packets by pts; without distinct pts they can only be counted.
        missing_pts = bool((shown_pts == _NO_PTS).any()) or not self._time_base
        self.sequential = missing_pts or len(np.unique(shown_pts)) < len(shown_pts)
        if self.sequential:
            self._count_frames_sequentially()
        else:
            order = np.argsort(shown_pts, kind="stable")
            self._frame_pos = shown[order]  # decode position of frame i's packet
            self._frame_pts = shown_pts[order]
            # Which packets to double-check by decoding: damaged ones, the end of a cut file, and
            # a stream that does not start with a key frame.
            suspects = np.flatnonzero(np.array(corrupt, dtype=bool)).tolist()
            if demux_failed or (declared and len(self._pts) < declared):
                suspects.append(len(self._pts) - 1)
            if not self._key[0]:
                suspects.append(0)
            if suspects:
                self._frame_threads = False
                self._reopen()
                self._verify_from(min(suspects))
            self._last_duration = int(np.array(duration, dtype=np.int64)[self._frame_pos[-1]])

        # The first frame: proves the file decodes and carries the rotation (display matrix).
        rotation, first_height, first_width = self._first_frame()
        self.rotation = _right_angle(rotation)
        self.raw_size = (first_height, first_width)
        if not limits_checked or (first_height, first_width) != (height, width):
            limits.check_frame(path, first_height, first_width)
        self._set_times()
        if self.num_frames == 1 and self._container.format.name in _ANIMATION_FORMATS:
            raise ValueError(self._still_image(self._stream.codec.name))
        self._warn_if_short(declared, len(self._pts), demux_failed)

    def _set_times(self) -> None:
        n = self.num_frames
        if self.sequential:  # no timestamps: the rate the stream headers give (FFmpeg's guess)
            guessed = float(self._stream.guessed_rate or 0)
            rate = guessed or self.nominal_fps or 25.0
            self.timestamps = np.arange(n) / rate
            self.duration_seconds: float | None = n / rate
            return
        tb = self._time_base
        self.timestamps = (self._frame_pts - self._frame_pts[0]) * tb
        last = self._last_duration * tb
        if last <= 0:  # containers that give no packet durations: one nominal frame
            gaps = np.diff(self.timestamps)
            last = float(np.median(gaps)) if len(gaps) else (1.0 / self.nominal_fps if self.nominal_fps else 0.0)
        self.duration_seconds = float(self.timestamps[-1] + last)

    @property
    def num_frames(self) -> int:
        return int(self._num_frames) if self.sequential else len(self._frame_pts)

    def _warn_if_short(self, declared: int, packets: int, demux_failed: bool) -> None:
        n = self.num_frames
        if declared and packets < declared:  # (an edit list hides packets but does not remove them)
            message = f"decoded {n} frames but its container declares {declared}"
        elif demux_failed or self._lost:
            lost = f" ({self._lost} could not be decoded)" if self._lost else ""
            message = f"its data ends early or is damaged{lost}"
        else:
            seconds = self._declared_seconds()
            if seconds is None or self.duration_seconds is None:
                return
            tolerance = max(0.5, 2.0 / self.nominal_fps) if self.nominal_fps else 0.5
            if self.duration_seconds >= seconds - tolerance:
                return
            message = f"its frames cover {self.duration_seconds:.2f} s but its container declares {seconds:.2f} s"
        self.warning = f"{self.path}: {message}; the file looks truncated or damaged, reading the {n} frames that exist"

    def _declared_seconds(self) -> float | None:
        """The video stream's own declared duration (mp4 track duration, Matroska DURATION tag)."""
        stream = self._stream
        if stream.duration and self._time_base:
            return float(stream.duration * self._time_base)
        tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
        match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", str(tag or "").strip())
        if not match:
            return None
        return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])

    # ------------------------------------------------------------ decoding
    def _decode(self, packet: Any) -> list[Any]:
        """Decode one packet, skipping packets the decoder rejects (as FFmpeg's CLI does)."""
        try:
            return self._stream.decode(packet)
        except self._av.error.FFmpegError:
            return []

    def _demux(self) -> Iterator[Any]:
        """Packets of the video stream from the container's current position, each within the timeout.

        PyAV interrupts an FFmpeg read that runs longer than the timeout (`av.error.ExitError`).
        MPEG-TS answers EAGAIN after each stretch in which it finds no sync byte; FFmpeg's CLI reads
        on, and so does this, until the stretch without a packet exceeds the timeout.

        Raises:
            ValueError: If no packet came for `timeout` seconds (the message names the file).
        """
        av, timeout = self._av, self._timeout
        waiting_since: float | None = None
        packets = 0
        while True:
            try:
                for packet in self._container.demux(self._stream):
                    waiting_since = None
                    packets += 1
                    yield packet
                return
            except av.error.ExitError:
                raise ValueError(self._stalled(f"after {packets} video packets")) from None
            except BlockingIOError:  # (PyAV's av.error.BlockingIOError is one)
                now = time.monotonic()
                waiting_since = now if waiting_since is None else waiting_since
                if timeout is not None and now - waiting_since >= timeout:
                    raise ValueError(self._stalled(f"after {packets} video packets")) from None

    def _stalled(self, when: str) -> str:
        return (
            f"{self.path}: gave up after {self._timeout:g} s of reading without finding video data ({when}): the "
            "rest of the file is not video (zeros or junk, as in a download written into a preallocated file, "
            "or damaged data); VideoReader(timeout=...) sets this limit"
        )

    def _still_image(self, codec: str) -> str:
        kind = "jpeg" if codec in ("mjpeg", "jpeg", "image2") else codec.removesuffix("_pipe")
        return (
            f"{self.path} is a still image ({kind}), not a video; to classify one image anyway, save it as a "
            "uint8 (1, H, W, 3) frame array (.npy)"
        )

    def _packets_from(self, start: int) -> Iterator[Any]:
        """Packets of the video stream from decode position `start` on.

        Seeks to the timestamp of the packet at `start` (a key frame). Formats without an index
        (MPEG-TS/PS) seek approximately: if the demuxer lands after `start`, seeking to the
        first packet is tried, then reading from the first byte. Packets known to lie before
        `start` are skipped, not decoded.
        """
        self._ensure_open()
        for target in [start, 0] if start > 0 else [0]:
            if not self._seek(target):
                continue
            packets = self._demux()
            landed, read = self._landing(packets)
            if landed is not None and landed <= start:
                break
        else:
            self._reopen()
            packets = self._demux()
            landed, read = self._landing(packets)
        for packet in itertools.chain(read, packets):
            position = self._position(packet)
            if position is None or position >= start:
                yield packet

    def _seek(self, position: int) -> bool:
        """Seek to the key frame at `position`; False if the container cannot."""
        target = self._pts[position] if self._pts[position] != _NO_PTS else self._dts[position]
        if target == _NO_PTS:
            return False
        try:
            self._container.seek(int(target), stream=self._stream, backward=True, any_frame=False)
        except (self._av.error.FFmpegError, OSError):
            self._reopen()  # the container's state after a failed seek is unknown
            return False
        return True

    def _landing(self, packets: Iterator[Any]) -> tuple[int | None, list[Any]]:
        """Read up to the first packet whose position is known; returns it and the packets read."""
        read = []
        for packet in packets:
            read.append(packet)
            position = self._position(packet)
            if position is not None:
                return position, read
        return None, read

    def _position(self, packet: Any) -> int | None:
        """The decode position of a demuxed packet in the index (None if not identifiable)."""
        if packet.pts is None:
            return None
        positions = self._positions_by_pts
        i = int(np.searchsorted(positions[0], packet.pts))
        if i < len(positions[0]) and positions[0][i] == packet.pts:
            return int(positions[1][i])
        return None

    @property
    def _positions_by_pts(self) -> tuple[np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_by_pts")
        if cached is None:
            order = np.argsort(self._pts, kind="stable")
            cached = self._by_pts = (self._pts[order], order)
        return cached

    def _reopen(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._open()

    def _start_position(self, frame: int, earlier: int = 0) -> int:
        """Decode position of the key frame to start from for frame `frame`.

        The last key frame at or before the frame's packet in decode order, moved back while it
        is shown after the frame (the frame is then a leading picture of an open GOP, which needs
        the previous GOP); `earlier` moves back that many more key frames.
        """
        keys = self._key_positions
        pos, pts = self._frame_pos[frame], self._frame_pts[frame]
        k = int(np.searchsorted(keys, pos, side="right")) - 1
        while k > 0 and self._pts[keys[k]] > pts:
            k -= 1
        k -= earlier
        return int(keys[k]) if k >= 0 else 0

    @property
    def _key_positions(self) -> np.ndarray:
        cached = self.__dict__.get("_keys")
        if cached is None:
            cached = self._keys = np.flatnonzero(self._key)
        return cached

    def read(self, unique: np.ndarray, sink: Callable[[int, np.ndarray], None]) -> list[int]:
        """Decode the frames `unique` (sorted, distinct) and pass each to `sink(index, rgb)`.

        Returns the frames that turned out not to decode (damaged data the index could not
        reveal); each was replaced by the frame a player shows then, the last one decoded
        before it (or the first after it).
        """
        if self.sequential:
            self._read_sequentially(unique, sink)
            return []
        self._ensure_open()
        if self._frame_threads:
            if self._read_runs(unique, sink, replaced=None):
                return []
            # Damage the index could not reveal: frame threads lose frames around it and conceal it
            # differently, so everything is read again as for a damaged file (slice threads).
            self._frame_threads = False
            self._reopen()
        replaced: list[int] = []
        self._read_runs(unique, sink, replaced)
        return replaced

    def _read_runs(
        self, unique: np.ndarray, sink: Callable[[int, np.ndarray], None], replaced: list[int] | None
    ) -> bool:
        """Read every run of `unique`; False if a frame never came out (with `replaced`: raise)."""
        for run in self._runs(unique):
            missing = self._read_run(run, self._start_position(int(run[0])), sink)
            if missing:  # e.g. a key frame flag the decoder does not honour: one key frame earlier
                missing = self._read_run(missing, self._start_position(missing[0], earlier=1), sink, replaced)
            if missing and replaced is None:
                return False
            if missing:
                seconds = (self._frame_pts[missing[0]] - self._frame_pts[0]) * self._time_base
                raise ValueError(
                    f"{self.path}: frame {missing[0]} (at {seconds:.3f} s) could not be decoded, nor any frame "
                    "near it (damaged file)"
                )
        return True

    def _runs(self, unique: np.ndarray) -> list[np.ndarray]:
        """Split sorted frame indices where seeking ahead beats decoding on."""
        runs, current, furthest = [], [int(unique[0])], int(self._frame_pos[unique[0]])
        for frame in unique[1:].tolist():
            if self._start_position(frame) > furthest + _SEEK_GAP_PACKETS:
                runs.append(np.array(current))
                current = [frame]
            else:
                current.append(frame)
            furthest = max(furthest, int(self._frame_pos[frame]))
        runs.append(np.array(current))
        return runs

    def _read_run(
        self,
        run: Sequence[int] | np.ndarray,
        start: int,
        sink: Callable[[int, np.ndarray], None],
        replaced: list[int] | None = None,
    ) -> list[int]:
        """Decode from `start` until every frame of `run` is out; returns the frames never produced.

        With `replaced` (a list to extend), a wanted frame the decoder skipped is filled with the
        frame shown in its place, the last one decoded before it (or the next one), and listed.
        """
        wanted = {int(self._frame_pts[f]): int(f) for f in run}
        order = sorted(wanted)  # wanted pts in presentation order, the order frames come out
        last_pts, last_pos = order[-1], max(int(self._frame_pos[f]) for f in run)
        next_wanted = 0  # frames come out in pts order: everything before order[next_wanted] is settled
        shown: Any = None  # the last frame decoded: what a player shows until the next one

        def settle(upto: float, frame: Any) -> None:
            """Wanted frames shown before `upto` that never came out: filled with `frame` if asked."""
            nonlocal next_wanted
            while next_wanted < len(order) and order[next_wanted] < upto:
                pts = order[next_wanted]
                if pts in wanted and replaced is not None:
                    index = wanted.pop(pts)
                    sink(index, self._rgb(frame))
                    replaced.append(index)
                next_wanted += 1

        for packet in self._packets_from(start):
            for frame in self._decode(packet):
                if frame.pts is None:
                    continue
                settle(frame.pts, shown if shown is not None else frame)
                index = wanted.pop(frame.pts, None)
                if index is not None:
                    sink(index, self._rgb(frame))
                shown = frame
                if not wanted or frame.pts >= last_pts:
                    return sorted(wanted.values())
            position = self._position(packet)
            if position is not None and position > last_pos + _RUN_SLACK_PACKETS:
                break
        if shown is not None:
            settle(float("inf"), shown)
        return sorted(wanted.values())

    def _rgb(self, frame: Any) -> np.ndarray:
        """RGB pixels of a decoded frame, at the stream's size, turned upright."""
        height, width = self.raw_size
        if (frame.height, frame.width) != (height, width):  # a mid-stream resolution change
            image = frame.to_ndarray(format="rgb24", width=width, height=height)
        else:
            image = frame.to_ndarray(format="rgb24")
        return np.rot90(image, self.rotation // 90) if self.rotation else image

    def _first_frame(self) -> tuple[int, int, int]:
        """(rotation, height, width) of the first frame, decoded to prove the file decodes at all."""
        if self.sequential:
            return self._first_sequential
        first_pts = self._frame_pts[0]
        for packet in self._packets_from(self._start_position(0)):
            for frame in self._decode(packet):
                if frame.pts == first_pts:
                    return frame.rotation, frame.height, frame.width
                if frame.pts is not None and frame.pts > first_pts:  # it was skipped: it will not come
                    raise ValueError(self._undecodable("its first frame could not be decoded"))
        raise ValueError(self._undecodable("its first frame could not be decoded"))

    def _undecodable(self, what: str) -> str:
        """The message for a file whose frames do not decode, naming the pixel limit where it may be why."""
        message = f"cannot decode {self.path}: {what}"
        if self._size_unknown:  # FFmpeg refuses frames above max_pixels without saying so to us
            message += (
                f" (damaged, or its frames exceed the limit of {self._max_pixels / 1e6:.1f} MP per frame: "
                f"max_frame_pixels={self._max_pixels}; pass a larger max_frame_pixels to vivit.VideoReader "
                "to read it anyway)"
            )
        return message

    def _verify_from(self, suspect: int) -> None:
        """Decode from before a suspicious packet to the end; drop the frames that never come out.

        This is what a sequential decode (and FFmpeg's CLI) yields for a cut or damaged file.
        """
        keys = self._key_positions
        k = int(np.searchsorted(keys, suspect, side="right")) - 1
        judged_from = int(keys[k]) if k >= 0 else 0
        start = int(keys[k - 1]) if k >= 1 else 0  # one GOP more, for the leading pictures of `judged_from`
        seen = set()
        for packet in self._packets_from(start):
            for frame in self._decode(packet):
                seen.add(frame.pts)
        judged = self._frame_pos >= judged_from
        keep = ~judged | np.isin(self._frame_pts, np.fromiter((p for p in seen if p is not None), dtype=np.int64))
        self._lost = int((~keep).sum())
        self._frame_pos, self._frame_pts = self._frame_pos[keep], self._frame_pts[keep]
        if not len(self._frame_pts):
            raise ValueError(self._undecodable("no frame could be decoded"))

    # ------------------------------------------------------------ files without timestamps
    def _count_frames_sequentially(self) -> None:
        count, first = 0, None
        for frame in self._sequential_frames():
            if first is None:
                first = (frame.rotation, frame.height, frame.width)
            count += 1
        if first is None:
            raise ValueError(self._undecodable("no frame could be decoded"))
        self._num_frames, self._first_sequential = count, first

    def _sequential_frames(self) -> Iterator[Any]:
        self._reopen()
        for packet in self._demux():
            yield from self._decode(packet)

    def _read_sequentially(self, unique: np.ndarray, sink: Callable[[int, np.ndarray], None]) -> None:
        wanted = set(unique.tolist())
        last = max(wanted)
        for index, frame in enumerate(self._sequential_frames()):
            if index in wanted:
                sink(index, self._rgb(frame))
            if index >= last:
                return
        raise ValueError(f"{self.path}: frame {last} could not be decoded (damaged file?)")


def _right_angle(degrees: float | int | None) -> int:
    """A display-matrix rotation as 0/90/180/270 counter-clockwise degrees (others: not applied)."""
    if not degrees:
        return 0
    quarter = round(float(degrees) / 90.0)
    if abs(float(degrees) - 90.0 * quarter) > 1.0:  # FFmpeg's CLI filters those with `rotate`; rare
        return 0
    return int(quarter % 4) * 90
