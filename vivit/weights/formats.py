"""Opening checkpoint files safely, and reading safetensors headers before any tensor.

* `open_regular_file` refuses anything that is not a regular file (a FIFO named
  `x.safetensors` would block `open()` forever; a directory or `/dev/zero` would read without
  end) before it is opened for reading, and opens without blocking even if the path is swapped.
* `read_safetensors_header` reads only the JSON header of a `.safetensors` file (8-byte length,
  then JSON: `{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}`, see
  https://github.com/huggingface/safetensors#format) and checks it completely: size caps, dtypes
  from `FLOAT_DTYPES`, shapes, and offsets that tile the data section exactly. Callers can then
  decide the architecture from names and shapes and build on the meta device before anything is
  allocated.
* `load_safetensors` then reads the tensors (through the `safetensors` library) and refuses
  non-finite values.
* `parse_json` reads JSON from a file with size and nesting limits and without NaN/Infinity.

Every failure is a `ValueError` (or `FileNotFoundError`) whose message starts with the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from .validate import all_finite, check_finite, short_list

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_HEADER_BYTES",
    "SafetensorsHeader",
    "TensorSpec",
    "cast_finite",
    "check_regular_file",
    "load_safetensors",
    "open_regular_file",
    "parse_json",
    "read_json_file",
    "read_safetensors_header",
]

# The largest checkpoint file read (ViViT-H/14 in float32 is about 2.6 GB; a Scenic train state
# with optimizer moments about three times its parameters).
MAX_CHECKPOINT_BYTES = 64 << 30
# The largest safetensors JSON header (ViViT-H: ~1,000 tensors and a 400-label config, ~200 KB).
MAX_HEADER_BYTES = 16 << 20
# JSON nesting allowed in headers and configs (a pretrained_cfg nests 3 levels).
MAX_JSON_DEPTH = 16
_MAX_NDIM = 8

# safetensors dtype codes -> (torch dtype, bytes per element); only floating point is accepted.
_SAFETENSORS_FLOATS = {
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
}
_OTHER_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
}
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _kind(mode: int) -> str:
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _check_regular(st: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is {_kind(st.st_mode)}, not a regular file; expected a checkpoint file")
    if st.st_size > MAX_CHECKPOINT_BYTES:
        raise ValueError(
            f"{path} is {st.st_size / 2**30:.1f} GiB, more than the {MAX_CHECKPOINT_BYTES >> 30} GiB a checkpoint "
            "may have (vivit.weights.formats.MAX_CHECKPOINT_BYTES)"
        )


def check_regular_file(path: str | os.PathLike[str]) -> Path:
    """Refuse a path that is not a regular file of sane size, without opening it.

    Args:
        path: The file.

    Returns:
        The path.

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

    The path is checked with `stat` before it is opened, then opened with `O_NONBLOCK` (so that
    even a FIFO swapped in between cannot block) and checked again on the open descriptor.

    Args:
        path: The file.

    Returns:
        A binary file object (blocking reads), to be closed by the caller.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If it is a directory, FIFO, socket or device, larger than
            `MAX_CHECKPOINT_BYTES`, or cannot be read (permissions); the message names it.
    """
    path = Path(path)
    try:
        _check_regular(os.stat(path), path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (PermissionError, IsADirectoryError, NotADirectoryError) as err:
        raise ValueError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    try:
        _check_regular(os.fstat(fd), path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# ---------------------------------------------------------------- JSON with limits
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (NaN and Infinity are not JSON)")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


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

    Args:
        raw: The text (bytes are decoded as UTF-8).
        where: The file, for messages.
        what: What the text is (`"safetensors header"`, `"config"`), for messages.
        max_bytes: Size limit.
        max_depth: Nesting limit (1 = a scalar, 2 = a flat object).

    Raises:
        ValueError: ``"{where}: its {what} is not valid JSON (...)"``.
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
    if _depth(value) > max_depth:
        raise ValueError(f"{where}: its {what} is nested too deeply (limit {max_depth})")
    if _has_infinity(value):
        raise ValueError(f"{where}: its {what} holds a number too large for a float (it would be infinite)")
    return value


def _has_infinity(value: Any) -> bool:
    """Whether parsed JSON holds a float that overflowed (`1e999` parses to inf)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


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
    value is an error instead.

    Args:
        tensors: Name -> tensor (already checked finite in their own dtype).
        dtypes: Name -> the target dtype (names without an entry are kept as they are).
        where: The file, for the message.

    Raises:
        ValueError: Naming a few tensors whose values overflow the target dtype.
    """
    out, overflow = {}, []
    for name, tensor in tensors.items():
        dtype = dtypes.get(name, tensor.dtype)
        if tensor.dtype != dtype and tensor.is_floating_point():
            cast = tensor.to(dtype)
            if not all_finite(cast):
                overflow.append(name)
            tensor = cast
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
    """What a checkpoint says about one tensor, before it is read.

    Attributes:
        dtype: The torch dtype.
        shape: The shape.
        start: Byte offset of its data within the data section.
        end: End offset (exclusive).
    """

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int = 0
    end: int = 0

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
        tensors: Name -> `TensorSpec`, in file order.
        metadata: The `__metadata__` strings (empty if absent).
        ignored: Names of tensors that `ignore` matched (not checked, never loaded).
    """

    path: Path
    tensors: Mapping[str, TensorSpec]
    metadata: Mapping[str, str]
    ignored: tuple[str, ...] = ()

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: spec.shape for name, spec in self.tensors.items()}


def _corrupt(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a readable safetensors file ({why}); it may be truncated or corrupted: "
        "delete it and download or convert it again"
    )


def _shape(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list) or len(value) > _MAX_NDIM:
        return None
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in value):
        return None
    return tuple(value)


def read_safetensors_header(path: str | os.PathLike[str], ignore: Iterable[str] = ()) -> SafetensorsHeader:
    """Read and check the header of a `.safetensors` file without reading any tensor.

    Checked: the file is regular and at most `MAX_CHECKPOINT_BYTES`; the header length is at most
    `MAX_HEADER_BYTES` and fits the file; the header is a JSON object (see `parse_json`); every
    tensor has a dtype from F16/BF16/F32/F64, a shape of at most 8 non-negative dimensions and
    `data_offsets` whose length is exactly its size; the tensors tile the data section with no
    gap, overlap or trailing bytes; `__metadata__` maps strings to strings.

    Args:
        path: The file.
        ignore: Exact tensor names to leave unchecked and unloaded (e.g. integer
            `position_ids` buffers of some transformers checkpoints). Their bytes still count
            towards the tiling check.

    Returns:
        The header.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For anything else, naming the file, a few offending tensors and a count.
    """
    path = Path(path)
    ignore = set(ignore)
    with open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"{size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise _corrupt(path, f"header of {length:,} bytes announced, more than the limit of {MAX_HEADER_BYTES:,}")
        if length > size - 8:
            raise _corrupt(path, f"header of {length:,} bytes announced in a file of {size:,} bytes")
        raw = handle.read(length)
    try:
        header = parse_json(raw, str(path), "safetensors header", max_depth=4)
    except ValueError as err:
        raise _corrupt(path, str(err).removeprefix(f"{path}: its ")) from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, "__metadata__ is not a map of strings")
    return _check_entries(path, header, metadata, size - 8 - length, ignore)


def _check_entries(
    path: Path, header: dict[str, Any], metadata: dict[str, str], data_size: int, ignore: set[str]
) -> SafetensorsHeader:
    tensors: dict[str, TensorSpec] = {}
    bad_dtype, malformed, spans = [], [], []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            malformed.append(name)
            continue
        shape, offsets, code = _shape(info["shape"]), info["data_offsets"], info["dtype"]
        if (
            shape is None
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            malformed.append(name)
            continue
        spans.append((offsets[0], offsets[1], name))
        if name in ignore:
            continue
        if not isinstance(code, str) or code not in _SAFETENSORS_FLOATS:
            known = _OTHER_DTYPES.get(code) if isinstance(code, str) else None
            bad_dtype.append(f"{name} ({str(code)[:16]}{f' = {known}' if known else ''})")
            continue
        dtype, itemsize = _SAFETENSORS_FLOATS[code]
        if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
            malformed.append(name)
            continue
        tensors[name] = TensorSpec(dtype, shape, offsets[0], offsets[1])
    if malformed:
        raise _corrupt(path, f"malformed entries for {len(malformed)} tensors: {short_list(malformed)}")
    if bad_dtype:
        raise ValueError(
            f"{path}: {len(bad_dtype)} tensors are not floating point (float16, bfloat16, float32 or float64): "
            f"{short_list(bad_dtype)}; the file is corrupt or not a model checkpoint"
        )
    spans.sort()
    position = 0
    for start, end, name in spans:
        if start != position:
            raise _corrupt(
                path, f"tensor {name!r} starts at byte {start} of the data, expected {position} (a gap or overlap)"
            )
        position = end
    if position != data_size:
        raise _corrupt(path, f"the tensors cover {position:,} bytes of data, the file holds {data_size:,}")
    return SafetensorsHeader(path, tensors, metadata, tuple(sorted(ignore & set(header))))


def load_safetensors(
    path: str | os.PathLike[str], header: SafetensorsHeader | None = None, names: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Read the tensors of a checked `.safetensors` file and refuse non-finite values.

    Args:
        path: The file.
        header: Its header from `read_safetensors_header` (read now if omitted).
        names: Which tensors to read (default: every tensor of the header).

    Returns:
        Name -> CPU tensor, dtypes as stored (float16/bfloat16/float32/float64).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the header is invalid (see `read_safetensors_header`), the file changed or
            cannot be read, or a tensor holds NaN or infinity (the message names a few of them).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    header = header if header is not None else read_safetensors_header(path)
    wanted = list(header.tensors if names is None else names)
    unknown = [n for n in wanted if n not in header.tensors]
    if unknown:
        raise ValueError(f"{path}: no tensors named {short_list(unknown)}")
    with open_regular_file(path):  # refuses a path swapped for a FIFO since the header was read
        pass
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
