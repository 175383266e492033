"""Outputs stay where they belong, results are never lost at the last step, the terminal is never hostile's
(issue 22: 1, 5, 6, 9, 10, 11, 12, 13, 14), attacked as an outsider would: crafted lists and names, full,
read-only and tiny file systems (private tmpfs mounts in a user namespace: `unshare -rm`), a tiny /dev/shm.

Videos are uint8 frame arrays (.npy: no decoder needed), the model the bundled `vivit_demo` (8 frames of 32x32).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vivit import files
from vivit.cli.options import ModelChoice
from vivit.features import read_features

MODEL = ["--model", "vivit_demo", "--workers", "0"]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or sys.platform != "linux":
        return False
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (private tmpfs mounts)")


def in_private_mounts(
    mounts: list[tuple[Path | str, str]],
    argv: list[object],
    env: dict[str, str],
    timeout: float = 240,
    setup: str = "true",
    command: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m vivit ARGV` (or `command`) with a private tmpfs at each `(folder, options)` (`size=16k`,
    `size=1m,ro`), after the shell commands `setup` (e.g. filling a mount)."""
    script = " && ".join(f"mount -t tmpfs -o {opts} tmpfs {shlex.quote(str(folder))}" for folder, opts in mounts)
    script += f" && {setup}"
    command = shlex.join(command or [sys.executable, "-m", "vivit", *map(str, argv)])
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{script} && exec {command}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _clip(path: Path, frames: int = 10, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.default_rng(seed).integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8))
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("vivit: error:")]


# ---------------------------------------------------------------- 22.1 path traversal, shared outputs
def test_list_entries_that_climb_out_are_written_inside_out(tmp_path, run_cli, one_thread):
    """`../../escaped/v.npy` in a list made features write outside --out; now every output lands inside."""
    _clip(tmp_path / "escaped" / "v.npy")
    _clip(tmp_path / "data" / "x.npy", seed=1)
    listing = tmp_path / "data" / "lists" / "list.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text(f"../../escaped/v.npy\n../x.npy\n{tmp_path / 'escaped' / 'v.npy'}\n", encoding="utf-8")
    out = tmp_path / "a" / "out"
    before = _tree(tmp_path)
    code, _, err = run_cli("features", listing, *MODEL, "--out", out)
    assert code == 0, err
    created = _tree(tmp_path) - before
    assert created and all(name.startswith("a/out") or name == "a" for name in created), created
    assert sorted(_tree(out)) == ["data", "data/x.npy.safetensors", "escaped", "escaped/v.npy.safetensors"]
    assert "is the same file as" in err  # the absolute entry: the same file as the first, computed once


def test_two_inputs_never_share_an_output(tmp_path, run_cli, monkeypatch, one_thread):
    """`sub/../b.npy` in a list and `b.npy` in a folder: one output path spelled two ways; the second
    video overwrote the first's output. Letter case on a case-insensitive file system: the same."""
    first = _clip(tmp_path / "folder" / "b.npy")
    _clip(tmp_path / "other" / "b.npy", seed=1)
    (tmp_path / "other" / "sub").mkdir()
    listing = tmp_path / "other" / "list.txt"
    listing.write_text("sub/../b.npy\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run_cli("features", tmp_path / "folder", listing, *MODEL, "--out", out)
    assert code == 1
    assert "is already that of" in err and "sub/../b.npy" in err.replace(str(tmp_path / "other") + "/", "")
    assert read_features(out / "b.npy.safetensors")[1]["source_path"] == str(first)  # the first kept its output

    import vivit.features

    monkeypatch.setattr(vivit.features, "case_insensitive", lambda folder: True)  # as on macOS or a FAT drive
    _clip(tmp_path / "cases" / "Clip.npy")
    _clip(tmp_path / "cases" / "clip.npy", seed=2)
    code, _, err = run_cli("features", tmp_path / "cases", *MODEL, "--out", tmp_path / "out_cases")
    assert code == 1 and "differ only in letter case" in err
    assert len(list((tmp_path / "out_cases").glob("*.safetensors"))) == 1


def test_a_symbolic_link_inside_out_does_not_lead_writes_elsewhere(tmp_path, run_cli):
    _clip(tmp_path / "videos" / "sub" / "c.npy")
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    (out / "sub").symlink_to(tmp_path / "elsewhere")
    code, _, err = run_cli("features", tmp_path / "videos", *MODEL, "--out", out)
    assert code == 1 and "would be written outside" in err
    assert not list((tmp_path / "elsewhere").iterdir())


def test_a_file_where_a_folder_is_needed_is_found_before_the_work(tmp_path, run_cli, monkeypatch):
    """`a.npy` gives `a.npy.safetensors`; `a.npy.safetensors/b.npy` needs that name as a folder."""
    _clip(tmp_path / "videos" / "a.npy")
    _clip(tmp_path / "videos" / "a.npy.safetensors" / "b.npy", seed=1)
    loads: list[int] = []
    real = ModelChoice.load
    monkeypatch.setattr(ModelChoice, "load", lambda self, *a: loads.append(1) or real(self, *a))
    code, _, err = run_cli("features", tmp_path / "videos", *MODEL, "--out", tmp_path / "out", "-q")
    assert code == 1
    assert "needs a folder" in err and "where the output of" in err and "a.npy.safetensors/b.npy" in err
    assert loads == [1]  # a.npy was still computed, b.npy never was (it failed in the plan)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.npy.safetensors"]


def test_a_symbolic_link_loop_is_called_one(tmp_path, run_cli, one_error_line):
    (tmp_path / "loop.npy").symlink_to("loop.npy")
    code, _, err = run_cli("features", tmp_path / "loop.npy", *MODEL, "--out", tmp_path / "out")
    assert code == 1 and "loop.npy: is a symbolic link loop" in err
    code, _, err = run_cli("predict", tmp_path / "loop.npy")
    assert code == 1
    one_error_line(err, "is a symbolic link loop")  # was "does not exist"


# ---------------------------------------------------------------- 22.5 results lost at the last step
def test_out_folders_that_take_no_files_are_refused_before_the_work(tmp_path, run_cli, monkeypatch, one_error_line):
    monkeypatch.setattr(ModelChoice, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    _clip(tmp_path / "x.npy")
    listing = tmp_path / "val.csv"
    listing.write_text("x.npy,left\n", encoding="utf-8")
    (tmp_path / "taken").write_text("a file", encoding="utf-8")
    for out, message in [
        ("/proc/vivit_out", "does not take new files"),
        ("", "is empty"),
        (tmp_path / "taken", "is an existing file, not a folder"),
        (tmp_path / "taken" / "sub", "is a file, not a folder"),
    ]:
        for command in (["features", tmp_path / "x.npy"], ["evaluate", listing]):
            code, stdout, err = run_cli(*command, *MODEL, "--out", out)
            assert code == 2 and stdout == "", (command, out)
            one_error_line(err, message)


@needs_mounts
@pytest.mark.slow
def test_evaluate_prints_its_metrics_even_when_the_out_folder_fills_up(tmp_path, cli_env):
    _clip(tmp_path / "x.npy")
    listing = tmp_path / "val.csv"
    listing.write_text("x.npy,left\n" * 40, encoding="utf-8")  # predictions.jsonl: about 12 KB
    disk = tmp_path / "disk"
    disk.mkdir()
    argv = ["evaluate", listing, *MODEL, "--out", disk / "eval"]
    done = in_private_mounts([(disk, "size=8k")], argv, cli_env)  # room for the probe, not for the results
    assert done.returncode == 1
    assert "top-1 " in done.stdout and "(40 videos, 1x1 views, 0 failed to decode)" in done.stdout
    assert _error_lines(done.stderr) == [
        f"vivit: error: cannot write {disk}/eval/predictions.jsonl: No space left on device"
    ]
    done = in_private_mounts([(disk, "size=1m,ro")], argv, cli_env)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = _error_lines(done.stderr)
    assert "does not take new files: Read-only file system" in line


@needs_mounts
@pytest.mark.slow
def test_features_stops_when_its_folder_fills_up_and_says_what_was_not_computed(tmp_path, cli_env):
    for i in range(6):
        _clip(tmp_path / "videos" / f"v{i}.npy", frames=64, seed=i)
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_private_mounts(
        [(disk, "size=12k")], ["features", tmp_path / "videos", *MODEL, "--out", disk / "f", "-q"], cli_env
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("vivit: features:"))
    written, failed = (int(n) for n in re.findall(r"(\d+) (?:written|failed)", lines[index]))
    assert written >= 1 and written + failed == 6, lines[index]  # 4 KiB pages: three files fit
    reasons = lines[index + 1 :]
    assert len(reasons) == failed and reasons[0].endswith(".safetensors: No space left on device")
    assert all("not computed: the run stopped when a write failed" in line for line in reasons[1:]), reasons
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- 22.6 terminal escapes
HOSTILE = "\x1b]0;pwned\x07\x1b[2J"


def test_file_names_with_escape_sequences_never_reach_the_terminal_raw(tmp_path, run_cli, one_thread):
    short = _clip(tmp_path / f"short{HOSTILE}.npy", frames=5)  # a warning names it
    listing = tmp_path / "list.txt"
    listing.write_text(f"{short.name}\nmissing{HOSTILE}.npy\n", encoding="utf-8")
    labelled = tmp_path / "val.csv"
    labelled.write_text(f'"{short.name}",left\n"missing{HOSTILE}.npy",up\n', encoding="utf-8")
    for argv in (
        ["features", listing, *MODEL, "--out", tmp_path / "f"],
        ["evaluate", labelled, *MODEL],
        ["predict", short, tmp_path / f"missing{HOSTILE}.npy"],
        ["features", listing, *MODEL, "--out", tmp_path / f"out{HOSTILE}" / "x.safetensors"],
    ):
        _, out, err = run_cli(*argv)
        for text in (out, err):
            assert "\x1b" not in text and "\x07" not in text, (argv, text)
        assert "\\x1b]0;pwned\\x07\\x1b[2J" in out + err, (argv, out, err)


def test_labels_and_names_with_escape_sequences_are_drawn_as_text_in_pictures(tmp_path, run_cli, one_thread):
    # Found by attack 22b: the terminal got escaped text, but pictures drew the raw control characters
    # (missing-glyph boxes, one matplotlib warning per character, U+202E reordering the title).
    pytest.importorskip("matplotlib")
    import vivit
    from vivit.render import text_lines
    from vivit.weights.saving import save_pretrained

    assert text_lines(f"a{HOSTILE}\u202eb\rc", 20) == ["a\\x1b]0;pwned\\x07\\x1b[2J\\u202eb\\rc"]
    model = vivit.create_model("vivit_demo", num_classes=3)
    labels = [f"right{HOSTILE}", "le\u202eft", "down\r\b"]
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=labels, num_classes=3)
    save_pretrained(model, tmp_path / "hostile")
    video = _clip(tmp_path / f"v{HOSTILE}.npy", frames=16)
    for argv in (
        ["explain", video, "--model", f"local-dir:{tmp_path / 'hostile'}", "--out", tmp_path / "x.png"],
        ["predict", video, "--model", f"local-dir:{tmp_path / 'hostile'}", "--timeline", "--plot", tmp_path / "t.png"],
    ):
        code, out, err = run_cli(*argv)
        assert code == 0, (argv, err)
        assert "Glyph" not in err and "\x1b" not in out + err, (argv, err)


# ---------------------------------------------------------------- 22.9 /dev/shm tiny or full
FILL_SHM = "head -c 4096 /dev/zero > /dev/shm/full"


@needs_mounts
@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "setup"), [("4k", FILL_SHM), ("64k", "true"), ("600k", "true")], ids=["full", "tiny", "full-mid-run"]
)
@pytest.mark.parametrize("command", ["features", "evaluate"])
def test_no_room_in_shared_memory_is_one_line_naming_it(tmp_path, cli_env, size, setup, command):
    for i in range(12):
        _clip(tmp_path / "videos" / f"v{i}.npy", frames=40, seed=i)
    listing = tmp_path / "val.csv"
    listing.write_text("".join(f"videos/v{i}.npy,left\n" for i in range(12)) * 3, encoding="utf-8")
    source = tmp_path / "videos" if command == "features" else listing
    argv = [command, source, "--model", "vivit_demo", "--workers", "2"]
    argv += ["--out", tmp_path / "f"] if command == "features" else []
    done = in_private_mounts([("/dev/shm", f"size={size}")], argv, cli_env, timeout=180, setup=setup)
    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = _error_lines(done.stderr)
    assert "shared memory (/dev/shm)" in line and "--workers 0" in line and "--shm-size" in line, line
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]


_START_LOADER = """
import torch
from torch.utils.data import DataLoader, Dataset
from vivit.workers import loader_items

class Zeros(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(10)

try:
    list(loader_items(DataLoader(Zeros(), num_workers=2)))
except OSError as err:
    print(err)
"""


@needs_mounts
@pytest.mark.slow
def test_a_loader_that_cannot_start_in_a_full_shared_memory_is_one_error_without_traceback(tmp_path, cli_env):
    """torch's queues need /dev/shm: their `[Errno 28]` came with "Exception ignored ... AttributeError"."""
    done = in_private_mounts(
        [("/dev/shm", "size=4k")], [], cli_env, setup=FILL_SHM, command=[sys.executable, "-c", _START_LOADER]
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(
        "a DataLoader worker cannot pass decoded clips to the main process through shared memory"
    )


# ---------------------------------------------------------------- 22.10 long names
def test_a_legal_long_video_name_gets_its_output_and_a_too_long_one_fails_before_the_work(tmp_path, run_cli):
    fits = _clip(tmp_path / "videos" / ("v" * 236 + ".npy"))  # 240 bytes: its output name is 252
    too_long = _clip(tmp_path / "videos" / ("w" * 246 + ".npy"), seed=1)  # its output would be 262 bytes
    out = tmp_path / "out"
    code, _, err = run_cli("features", fits.parent, *MODEL, "--out", out)
    assert code == 1
    assert (out / f"{fits.name}.safetensors").is_file()  # the temporary name was shortened, not the output's
    assert f"{too_long.name[:20]}" in err and "is 262 bytes, longer than the 255 bytes" in err and "NAME_MAX" in err
    assert not list(out.glob(".*.part"))
    code, _, err = run_cli("features", fits, *MODEL, "--out", out)
    assert code == 0 and "1 of 1 videos already done" in err  # a re-run finds it done


def test_an_out_name_too_long_for_the_file_system_is_one_line_before_the_work(tmp_path, run_cli, monkeypatch):
    # Found by attack 22b: a 300-byte --out name made `stat` itself fail, a raw `[Errno 36] File name too
    # long` with the whole name, in every job (the output checks only knew the temporary name's limit).
    monkeypatch.setattr(ModelChoice, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    video = _clip(tmp_path / "x.npy")
    listing = tmp_path / "val.csv"
    listing.write_text("x.npy,left\n", encoding="utf-8")
    long = tmp_path / ("a" * 300)
    deep = tmp_path.joinpath(*["d" * 250] * 17)  # every name fits, the path does not (PATH_MAX)
    for stem, message in [(long, "longer than the 255 bytes"), (deep, "longer than the 4066 bytes")]:
        for argv in [
            ["features", video, *MODEL, "--out", stem],
            ["evaluate", listing, *MODEL, "--out", stem],
            ["explain", video, "--model", "vivit_demo", "--out", f"{stem}.png"],
            ["convert", "vivit_demo", "--out", f"{stem}.safetensors"],
            ["convert", "vivit_demo", "--out", stem],
            ["predict", video, "--model", "vivit_demo", "--timeline", "--plot", f"{stem}.png"],
        ]:
            code, stdout, err = run_cli(*argv)
            lines = err.strip().splitlines()
            assert code != 0 and stdout == "", argv
            assert len(lines) == 1 and lines[0].startswith("vivit: error:"), (argv, err)
            assert message in lines[0] and "Errno" not in lines[0] and len(lines[0]) < 400, (argv, lines[0])


def test_temporary_names_of_long_files_fit_and_are_still_cleaned(tmp_path):
    dest = tmp_path / ("é" * 126)  # 252 bytes of UTF-8
    tmp = files.temp_path(dest)
    assert len(os.fsencode(tmp.name)) <= 255
    tmp.write_bytes(b"x")
    with files.atomic_write(dest) as part:
        part.write_bytes(b"done")
    assert dest.read_bytes() == b"done" and tmp.exists()  # a live writer's (this process's) file is kept
    assert files.clean_stale_temp_files(tmp_path, dest.name) == [tmp]  # under the lock: cleaned by its name


# ---------------------------------------------------------------- 22.11 full or read-only disk: convert, export, pictures
@needs_mounts
@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "vivit_demo", "--out", "{disk}/c.safetensors"],
        ["convert", "vivit_demo", "--out", "{disk}/folder"],
        ["convert", "vivit_demo", "--to", "transformers", "--out", "{disk}/hf"],
        ["explain", "--out", "{disk}/e.png"],
        ["explain", "--out", "{disk}/sub/e.gif"],
        ["predict", "{video}", "--timeline", "--plot", "{disk}/p.png", "-q"],
    ],
    ids=["convert-file", "convert-folder", "convert-transformers", "explain-png", "explain-gif", "plot"],
)
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing(tmp_path, cli_env, argv):
    pytest.importorskip("matplotlib")
    if "transformers" in argv:
        pytest.importorskip("transformers")
    disk = tmp_path / "disk"
    disk.mkdir()
    video = _clip(tmp_path / "v.npy", frames=24)
    argv = [a.format(disk=disk, video=video) for a in argv]
    target = next(a for a in argv if a.startswith(str(disk)))
    done = in_private_mounts([(disk, "size=12k")], argv, cli_env)
    assert done.returncode == 1, done.stderr
    (line,) = _error_lines(done.stderr)
    assert line.startswith(f"vivit: error: cannot write {target}") and line.endswith("No space left on device"), line
    assert "Traceback" not in done.stderr and "SafetensorError" not in done.stderr


@needs_mounts
@pytest.mark.slow
@pytest.mark.onnx
def test_export_to_a_full_disk_names_the_path_and_leaves_nothing(tmp_path, cli_env):
    pytest.importorskip("onnxscript")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(disk))} && "
        f"{shlex.join([sys.executable, '-m', 'vivit', 'export', 'onnx', 'vivit_demo', '--out', str(disk / 'sub' / 'm.onnx'), '-q'])}; "
        f"echo rc=$?; find {shlex.quote(str(disk))} -mindepth 1"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=cli_env, timeout=600, check=False
    )
    assert done.stdout.strip() == "rc=1", done.stdout  # nothing left on the disk, not even the new folder
    (line,) = _error_lines(done.stderr)
    assert line == f"vivit: error: cannot write {disk / 'sub' / 'm.onnx'}: No space left on device"


@pytest.mark.skipif(sys.platform != "linux", reason="names file descriptors through /proc")
def test_a_file_is_on_the_disk_before_its_name_is(tmp_path, monkeypatch):
    # Found by attack 22b: atomic_write renamed without fsync, so a power loss could leave the final name
    # on an empty or zero-filled file (a features output then "not overwritten" on every re-run).
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}"), real_fsync(fd))[1]
    )
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {a}"), real_replace(a, b))[1])
    with files.atomic_write(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"data")
    assert events == [f"fsync {tmp}", f"replace {tmp}", f"fsync {tmp_path}"]
    assert (tmp_path / "out.bin").read_bytes() == b"data"


@needs_mounts
@pytest.mark.slow
def test_save_pretrained_and_to_transformers_on_a_full_or_read_only_disk(tmp_path, cli_env):
    # Found by attack 22b: the library functions (not the CLI) raised a raw SafetensorError without the path
    # and left the folder they had made.
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        "import os, sys, vivit\n"
        "from vivit.files import WriteError\n"
        "from vivit.weights.hf_transformers import to_transformers\n"
        "from vivit.weights.saving import save_pretrained\n"
        "model = vivit.create_model('vivit_demo', pretrained=True)\n"
        "for save in (save_pretrained, to_transformers):\n"
        "    for folder in sys.argv[1:]:\n"
        "        try:\n"
        "            save(model, folder)\n"
        "        except WriteError as err:\n"
        "            print(err)\n"
        "        parent = os.path.dirname(folder)\n"
        "        print(sorted(os.listdir(parent)) if os.path.exists(parent) else 'gone')\n"
    )
    done = in_private_mounts(
        [(disk, "size=64k")],
        [],
        cli_env,
        setup=f"mkdir {shlex.quote(str(disk / 'ro'))} && mount -t tmpfs -o size=1m,ro tmpfs {shlex.quote(str(disk / 'ro'))}",
        command=[sys.executable, "-c", script, str(disk / "new" / "m"), str(disk / "ro" / "m")],
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    full, ro = disk / "new" / "m", disk / "ro" / "m"
    assert (
        lines
        == [
            f"cannot write {full / 'model.safetensors'}: No space left on device",
            "gone",  # no empty folder new/ left on the disk
            f"cannot write {ro}: Read-only file system",
            "[]",
        ]
        * 2
    ), done.stdout


# ---------------------------------------------------------------- 22.12 a NUL byte in a list
def test_a_nul_byte_in_a_list_fails_that_line_only(tmp_path, run_cli, one_thread):
    _clip(tmp_path / "good.npy")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"good.npy\nbad\x00name.npy\n")
    code, _, err = run_cli("features", listing, *MODEL, "--out", tmp_path / "out")
    assert code == 1  # was: "embedded null byte", nothing processed
    assert "1 written, 0 already done, 1 failed" in err and "list.txt:2" in err and "\x00" not in err
    assert (tmp_path / "out" / "good.npy.safetensors").is_file()
    labelled = tmp_path / "val.csv"
    labelled.write_bytes(b"good.npy,left\nbad\x00name.npy,up\n")
    code, out, err = run_cli("evaluate", labelled, *MODEL)
    assert code == 1 and "(1 videos, 1x1 views, 1 failed to decode)" in out
    assert "\x00" not in err and "bad\\x00name.npy" in err and "val.csv:2" in err


def test_a_huge_line_fails_alone_with_a_short_message(tmp_path, run_cli, one_thread):
    # Found by attack 22b: a 1 MB line was a path, and the summary repeated all of it ("File name too long").
    _clip(tmp_path / "good.npy")
    for name, line in [("list.txt", "x" * 1_000_000 + ".npy"), ("val.csv", "y" * 1_000_000 + ".npy,left")]:
        listing = tmp_path / name
        listing.write_text(f"{line}\ngood.npy{',left' if name.endswith('csv') else ''}\n", encoding="utf-8")
        command = "features" if name.endswith("txt") else "evaluate"
        code, _, err = run_cli(command, listing, *MODEL, *(["--out", tmp_path / "f"] if command == "features" else []))
        assert code == 1, err
        assert f"{name}:1: a line of 1,000,0" in err and "more than any path with its labels" in err, err
        assert len(err) < 2000, err[:300]  # the line is not repeated
        if command == "features":
            assert (tmp_path / "f" / "good.npy.safetensors").is_file()


@pytest.mark.slow
def test_a_list_too_large_to_be_a_list_is_refused_without_reading_it(tmp_path, run_cli_process):
    # Found by attack 22b: a list file was read whole (`truncate -s 3G list.txt`: 3 GB of memory).
    from vivit.data.datasets import MAX_LIST_BYTES

    listing = tmp_path / "list.txt"
    with open(listing, "wb") as f:
        f.truncate(MAX_LIST_BYTES * 8)  # 2 GiB, sparse
    # Python's own allocations while reading (tracemalloc): a measure that the process's import-time
    # peak (which varies with the environment) cannot blur.
    probe = (
        "import sys, tracemalloc; from vivit.data.datasets import read_video_list\n"
        "tracemalloc.start()\n"
        "try:\n    read_video_list(sys.argv[1])\nexcept ValueError as err:\n    print(err)\n"
        "print(tracemalloc.get_traced_memory()[1] // 2**20)"
    )
    done = subprocess.run([sys.executable, "-c", probe, listing], capture_output=True, text=True, timeout=300)
    message, peak_mib = done.stdout.strip().splitlines()
    assert "is larger than 256 MiB" in message and "MAX_LIST_BYTES" in message, done.stdout + done.stderr
    assert int(peak_mib) <= MAX_LIST_BYTES * 2 // 2**20, peak_mib  # was the whole file, 2 GiB
    code = run_cli_process("features", listing, *MODEL, "--out", tmp_path / "f")
    assert code.returncode == 1 and "is larger than 256 MiB" in code.stderr, code.stderr


# ---------------------------------------------------------------- 22.13 two runs on one --out
def test_a_run_keeps_the_temporary_files_of_a_live_writer(tmp_path, run_cli, one_thread):
    """Cleaning `.part` files by name pattern deleted another process's file in flight."""
    video = _clip(tmp_path / "v.npy")
    out = tmp_path / "out"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    try:
        live = out / f".v.npy.safetensors.{writer.pid}.0123456789ab.part"
        stale = out / f".v.npy.safetensors.{int(dead.stdout)}.ba9876543210.part"
        for part in (live, stale):
            part.write_bytes(b"half a file")
        code, _, err = run_cli("features", video, *MODEL, "--out", out)
        assert code == 0, err
        assert live.exists() and not stale.exists()
    finally:
        writer.kill()
        writer.wait()
