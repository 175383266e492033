"""Checkpoint files: what a file is, and reading safetensors headers before any tensor.

* `check_regular_file` / `open_regular_file` refuse anything that is not a regular file (a FIFO
  named `x.safetensors` would block `open()` forever; a directory or `/dev/zero` would read without
  end) before it is opened for reading.
* `identify_format` tells safetensors, Flax msgpack, `.npz` and pickle apart by their first bytes,
  and names what a file of another kind is (a CSV, a JPEG, a web page, ...).
* `read_safetensors_header` reads names, shapes, dtypes and metadata through `safetensors.safe_open`
  (which checks the header: JSON, offsets that tile the data, dtypes and shapes that fit them) and
  then vivit's own rules: floating-point dtypes only, at most 8 dimensions.
* `load_safetensors` returns the tensors of a checked file without copying them (the file stays
  memory-mapped, copy-on-write) and refuses non-finite values.
* `parse_json` / `read_json_file` read JSON with size and nesting limits and without NaN/Infinity.

Every failure is a `ValueError` (or `FileNotFoundError`) whose message starts with the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from .validate import all_finite, check_finite, short_list

__all__ = [
    "ACCEPTED",
    "MAX_CHECKPOINT_BYTES",
    "MAX_HEADER_BYTES",
    "SafetensorsHeader",
    "TensorSpec",
    "cast_finite",
    "check_regular_file",
    "describe_text",
    "identify_format",
    "load_safetensors",
    "open_regular_file",
    "parse_json",
    "printable",
    "read_json_file",
    "read_safetensors_header",
]

# The largest checkpoint file read (ViViT-H/14 in float32 is about 2.6 GB; a Scenic train state
# with optimizer moments about three times its parameters).
MAX_CHECKPOINT_BYTES = 64 << 30
# The largest safetensors JSON header (ViViT-H: ~1,000 tensors and a 400-label config, ~200 KB).
# safetensors itself accepts 100 MB, whose parse alone takes more memory than a refusal should.
MAX_HEADER_BYTES = 16 << 20
# JSON nesting allowed in configs (a pretrained_cfg nests 3 levels).
MAX_JSON_DEPTH = 16
_MAX_NDIM = 8
# What pretrained= / --weights take, for messages.
ACCEPTED = (
    "a .safetensors file or a folder written by save_pretrained (vivit, timm, transformers), "
    "a Scenic/big_vision Flax msgpack checkpoint, or a Google .npz ViT"
)

# safetensors dtype codes -> torch dtype; only floating point is accepted as weights.
_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_OTHERS = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
}
_OTHERS |= {"I64": "int64", "U64": "uint64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "C64": "complex64"}
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _check_regular(st: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise ValueError(f"{path} is {kind}, not a regular file; expected a checkpoint file")
    if st.st_size > MAX_CHECKPOINT_BYTES:
        raise ValueError(
            f"{path} is {st.st_size / 2**30:.1f} GiB, more than the {MAX_CHECKPOINT_BYTES >> 30} GiB a checkpoint "
            "may have (vivit.weights.formats.MAX_CHECKPOINT_BYTES)"
        )


def check_regular_file(path: str | os.PathLike[str]) -> Path:
    """Refuse a path that is not a regular file of sane size, without opening it.

    Raises:
        FileNotFoundError: If it does not exist.
        ValueError: If it is a directory, FIFO, socket or device, or larger than `MAX_CHECKPOINT_BYTES`.
    """
    path = Path(path)
    try:
        _check_regular(os.stat(path), path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (PermissionError, NotADirectoryError) as err:
        raise ValueError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    return path


def open_regular_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a checkpoint for binary reading, refusing anything but a regular file of sane size.

    Checked with `stat` first, opened with `O_NONBLOCK` (so that even a FIFO swapped in between
    cannot block), and checked again on the open descriptor.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If it is not a regular file, too large, or cannot be read; the message names it.
    """
    path = check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    try:
        _check_regular(os.fstat(fd), path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# ---------------------------------------------------------------- what a file is
_MAGIC: tuple[tuple[int, bytes, str], ...] = (  # (offset, bytes, what the file is)
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"GIF8", "a GIF image"),
    (4, b"ftyp", "an MP4/MOV video"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (8, b"AVI ", "an AVI video"),
    (8, b"WAVE", "a WAV sound file"),
    (0, b"%PDF", "a PDF document"),
    (0, b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (257, b"ustar", "a tar archive (extract it first)"),
    (0, b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras/TensorFlow weights)"),
    (0, b"GGUF", "a GGUF file (llama.cpp)"),
    (0, b"\x93NUMPY", "one NumPy array (.npy; a ViT's weights come as an .npz archive of arrays)"),
)


def printable(text: str, limit: int = 120) -> str:
    """Text from a file or a server for a one-line message: whitespace collapsed, control characters escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_message(text: str) -> str:
    """The message of a JSON error body (`error`/`message`/`detail`, nested as Google's APIs do), else the text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    for _ in range(3):
        found = (
            next((body[k] for k in ("error", "message", "detail", "Message", "Error") if k in body), None)
            if isinstance(body, dict)
            else None
        )
        if found is None:
            break
        body = found
    return body if isinstance(body, str) else text


def describe_text(head: bytes) -> str | None:
    """What a file or download that starts as text is, quoting it; None for binary data.

    A checkpoint is binary: a safetensors file has NUL bytes within its first 8 (the header length),
    a Flax msgpack file starts with a map byte that is not valid UTF-8. So a first block that decodes
    as UTF-8 without NUL or other control characters is a page or a text file, whatever it starts with.

    Args:
        head: The first bytes (a few hundred).
    """
    if not head or b"\0" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut at the end of the block
            return None
        text = head[: err.start].decode("utf-8")
    if any(not (c.isprintable() or c in "\t\r\n") for c in text.lstrip("\ufeff")):
        return None
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<"):
        return f"an HTML/XML page ({printable(stripped)})"
    if stripped.startswith(("{", "[")):
        return f"a JSON document ({printable(_json_message(stripped))})"
    first = stripped.splitlines()[0] if stripped else ""
    if "," in first or "\t" in first:
        return f"a CSV/TSV text file ({printable(first)})"
    return f"a text file ({printable(stripped)})" if stripped else "a file of blank lines"


def identify_format(path: str | os.PathLike[str]) -> str:
    """What a checkpoint file holds, from its first bytes (never from its name).

    Returns:
        'safetensors' (an 8-byte header length, then a JSON object), 'msgpack' (a msgpack map: Flax
        serialization, Scenic's format), 'npz' (a zip of `.npy` arrays), 'pickle' (a pickle stream, or
        PyTorch's zip of one) or 'unknown' (binary data of no recognised kind).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is empty, not a regular file, or recognisably something else (an image, a
            video, a CSV or other text, a web page, a compressed or HDF5 file): the message names the
            file, what it is, and the formats that are accepted.
    """
    path = Path(path)
    with open_regular_file(path) as handle:
        head = handle.read(512)
    what = None
    # Order matters: safetensors first (its header length is any 8 bytes: 0x80-0x8F would read as a msgpack map,
    # 0x80 0x02-0x05 as a pickle), then the magic numbers of other files (a PNG starts 0x89, a msgpack map byte).
    if len(head) > 8 and head[8:9] == b"{" and head[6:8] == b"\0\0":  # a length below 2**48, then JSON
        return "safetensors"
    magic = next((kind for at, magic, kind in _MAGIC if head[at : at + len(magic)] == magic), None)
    if not head:
        what = "empty"
    elif magic is not None:
        what = magic
    elif head[:4] == b"PK\x03\x04" or (len(head) >= 22 and head[:4] == b"PK\x05\x06"):  # a zip (numpy.savez,
        # torch.save's zip around a pickle): a file's first entry, or the 22-byte record of an empty archive
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "npz"  # a damaged zip: the .npz reader says what is wrong with it
        if any(n.endswith(".npy") for n in names):
            return "npz"
        return "pickle" if any(n.endswith(".pkl") for n in names) else "npz"
    elif head[0] == 0x80 and len(head) > 2 and 2 <= head[1] <= 5:
        return "pickle"  # PROTO opcode: a fixmap of 0 entries would be the whole file
    elif 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):
        return "msgpack"
    else:
        what = describe_text(head)
    if what is None:
        return "unknown"
    raise ValueError(f"{path} is {what}, not a checkpoint; expected {ACCEPTED}")


# ---------------------------------------------------------------- JSON with limits
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (NaN and Infinity are not JSON)")


def _walk(value: Any) -> tuple[int, bool]:
    """Nesting depth of parsed JSON and whether it holds an infinite float (`1e999`), without recursion."""
    deepest, infinite, stack = 0, False, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, float) and not math.isfinite(node):
            infinite = True
    return deepest, infinite


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dupes = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate keys {short_list(sorted(set(dupes)))}")
    return out


def parse_json(
    raw: bytes | str, where: str, what: str = "JSON", max_bytes: int = MAX_HEADER_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Parse JSON read from a file, with limits.

    Refused: more than `max_bytes`, invalid UTF-8 or JSON, `NaN`/`Infinity` literals, numbers
    that overflow to infinity, duplicate keys, and nesting deeper than `max_depth`.

    Raises:
        ValueError: ``"{where}: its {what} is not valid JSON (...)"`` and the like.
    """
    if len(raw) > max_bytes:
        raise ValueError(f"{where}: its {what} is {len(raw):,} bytes, more than the limit of {max_bytes:,}")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError(f"{where}: its {what} is nested too deeply (limit {max_depth})") from None
    except (UnicodeDecodeError, ValueError) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"{where}: its {what} is not valid JSON ({reason}); the file may be corrupted") from None
    depth, infinite = _walk(value)
    if depth > max_depth:
        raise ValueError(f"{where}: its {what} is nested too deeply (limit {max_depth})")
    if infinite:
        raise ValueError(f"{where}: its {what} holds a number too large for a float (it would be infinite)")
    return value


def read_json_file(
    path: str | os.PathLike[str], what: str = "JSON file", max_bytes: int = MAX_HEADER_BYTES
) -> dict[str, Any]:
    """A JSON object from a (config) file: regular file, at most `max_bytes`, parsed by `parse_json`.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a regular file, too large, not JSON, or not a JSON object.
    """
    path = Path(path)
    with open_regular_file(path) as handle:
        raw = handle.read(max_bytes + 1)
    value = parse_json(raw, str(path), what, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise ValueError(
            f"{path}: its {what} is a JSON {type(value).__name__}, expected an object; the file may be corrupted"
        )
    return value


def cast_finite(
    tensors: Mapping[str, torch.Tensor], dtypes: Mapping[str, torch.dtype], where: str
) -> dict[str, torch.Tensor]:
    """Cast tensors to the dtypes of the parameters they will fill, refusing values that do not fit.

    `load_state_dict` would copy a float64 1e300 into a float32 parameter as infinity; here such a
    value is an error instead. Tensors already of the right dtype are returned as they are (no copy).

    Raises:
        ValueError: Naming a few tensors whose values overflow the target dtype.
    """
    out, overflow = {}, []
    for name, tensor in tensors.items():
        dtype = dtypes.get(name, tensor.dtype)
        if tensor.dtype != dtype and tensor.is_floating_point():
            tensor = tensor.to(dtype)
            if not all_finite(tensor):
                overflow.append(name)
        out[name] = tensor
    if overflow:
        raise ValueError(
            f"{where}: {len(overflow)} tensors hold values beyond the range of the model's dtype "
            f"({short_list(overflow)}); they would become infinite. The weights are corrupt"
        )
    return out


# ---------------------------------------------------------------- safetensors
@dataclass(frozen=True)
class TensorSpec:
    """What a checkpoint says about one tensor, before it is read: its torch dtype and shape."""

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The checked header of a `.safetensors` file.

    Attributes:
        path: The file.
        tensors: Name -> `TensorSpec`, sorted by name.
        metadata: The `__metadata__` strings (empty if absent).
    """

    path: Path
    tensors: Mapping[str, TensorSpec]
    metadata: Mapping[str, str]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: spec.shape for name, spec in self.tensors.items()}


def _corrupt(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a readable safetensors file ({why}); it may be truncated or corrupted: "
        "delete it and download or convert it again"
    )


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and check the header of a `.safetensors` file without reading any tensor.

    `safetensors.safe_open` checks the header (valid JSON, known dtypes, offsets that tile the data
    section exactly, `__metadata__` a map of strings); vivit adds a size limit on the header
    (`MAX_HEADER_BYTES`, read from its 8-byte length before safetensors parses it), floating-point
    dtypes only (F16/BF16/F32/F64) and at most 8 dimensions.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For anything else, naming the file and a few offending tensors.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    with open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise _corrupt(path, f"{size} bytes, shorter than the 8-byte header length")
    length = int.from_bytes(prefix, "little")
    if length > MAX_HEADER_BYTES:
        raise _corrupt(path, f"header of {length:,} bytes announced, more than the limit of {MAX_HEADER_BYTES:,}")
    if length > size - 8:
        raise _corrupt(path, f"header of {length:,} bytes announced in a file of {size:,} bytes")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            names = f.keys()  # safe_open is not iterable
            specs = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in names}
    except (SafetensorError, OSError) as err:
        reason = str(err).splitlines()[0].removeprefix("Error while deserializing header: ")[:200]
        raise _corrupt(path, reason or type(err).__name__) from None
    bad_dtype = [
        f"{name} ({code}{f' = {_OTHERS[code]}' if code in _OTHERS else ''})"
        for name, (code, _) in specs.items()
        if code not in _FLOATS
    ]
    if bad_dtype:
        raise ValueError(
            f"{path}: {len(bad_dtype)} tensors are not floating point (float16, bfloat16, float32 or float64): "
            f"{short_list(bad_dtype)}; the file is corrupt or not a model checkpoint"
        )
    deep = [name for name, (_, shape) in specs.items() if len(shape) > _MAX_NDIM]
    if deep:
        raise _corrupt(path, f"{len(deep)} tensors have more than {_MAX_NDIM} dimensions: {short_list(deep)}")
    tensors = {name: TensorSpec(_FLOATS[code], shape) for name, (code, shape) in sorted(specs.items())}
    return SafetensorsHeader(path, tensors, dict(metadata))


def load_safetensors(
    path: str | os.PathLike[str], header: SafetensorsHeader | None = None, names: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a checked `.safetensors` file, refusing non-finite values.

    The tensors are not copied: safetensors maps the file (copy-on-write), so reading a 400 MB
    checkpoint costs page faults, not a second 400 MB.

    Args:
        path: The file.
        header: Its header from `read_safetensors_header` (read now if omitted).
        names: Which tensors to read (default: every tensor of the header).

    Returns:
        Name -> CPU tensor, dtypes as stored (float16/bfloat16/float32/float64).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the header is invalid, the file changed or cannot be read, or a tensor holds
            NaN or infinity (the message names a few of them).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    header = header if header is not None else read_safetensors_header(path)
    wanted = list(header.tensors if names is None else names)
    unknown = [n for n in wanted if n not in header.tensors]
    if unknown:
        raise ValueError(f"{path}: no tensors named {short_list(unknown)}")
    check_regular_file(path)  # refuses a path swapped for a FIFO since the header was read
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in wanted:
                tensor = f.get_tensor(name)
                spec = header.tensors[name]
                if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
                    raise _corrupt(path, f"tensor {name!r} changed while it was read")
                tensors[name] = tensor
    except (SafetensorError, OSError) as err:
        raise _corrupt(path, str(err).splitlines()[0][:200] if str(err) else type(err).__name__) from None
    check_finite(str(path), tensors)
    return tensors
