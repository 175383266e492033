"""Reader for Flax msgpack checkpoints (the format of the released Scenic ViViT weights).

Flax's ``flax.serialization.msgpack_serialize`` writes a single msgpack map. Arrays are msgpack
extension objects:

* ext code 1 (ndarray): the payload is itself msgpack ``[shape, dtype name, raw C-order bytes]``;
* ext code 2 (native complex): the payload is msgpack ``[real, imag]``;
* ext code 3 (numpy scalar): encoded like an ndarray of shape ``()``.

Arrays larger than 2**30 bytes are split by Flax into a map
``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": flat0, ...}}``
whose flat chunks are concatenated and reshaped on reading.

The file is read in two steps, so that nothing is allocated before it is understood:

1. `open_flax_checkpoint` walks the msgpack structure of the memory-mapped file (the format is
   specified at https://github.com/msgpack/msgpack/blob/master/spec.md) and records, for every
   parameter, its shape, dtype and where its bytes lie, without copying them. The walk is
   bounded: nesting depth `MAX_DEPTH`, `MAX_OBJECTS` objects, container and string lengths
   within the file, and the file must hold exactly one object.
2. `FlaxCheckpoint.read` copies the parameters out (only those asked for), widening bfloat16 to
   float32 exactly, and refuses NaN or infinite values.

Parameters must be float16, bfloat16, float32 or float64; anything else (complex, bool, integers,
unknown dtype names) in the parameter tree is refused. The rest of a train state (optimizer
moments, step counters, RNG keys) is skipped whatever its dtypes. Only numpy is needed: no msgpack
package, jax or flax.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .formats import open_regular_file
from .validate import FLOAT_DTYPES, check_finite, short_list

__all__ = [
    "MAX_DEPTH",
    "MAX_OBJECTS",
    "ArraySpec",
    "FlaxCheckpoint",
    "flatten_params",
    "open_flax_checkpoint",
    "read_flax_checkpoint",
]

_EXT_NDARRAY = 1
_EXT_NATIVE_COMPLEX = 2
_EXT_NPSCALAR = 3
_CHUNKED_MARKER = "__msgpack_chunked_array__"
_NOT_A_CHECKPOINT = "not a Flax msgpack checkpoint"
# A Flax train state nests about 8 levels (state/optimizer/target/encoder/block/module/kernel).
MAX_DEPTH = 32
# Objects (maps, arrays, keys, leaves) in one file; ViViT-H with optimizer moments has ~10,000.
MAX_OBJECTS = 1 << 21
_MAX_KEY_BYTES = 1 << 16
_MAX_NDIM = 8

# numpy storage dtype of each Flax dtype name that can hold weights (bfloat16 as raw uint16 words).
_STORAGE: dict[str, np.dtype[Any]] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}


@dataclass(frozen=True)
class ArraySpec:
    """What a checkpoint says about one array, before its bytes are read.

    Attributes:
        shape: The array's shape.
        dtype: The dtype name written by Flax (``"float32"``, ``"bfloat16"``, ...).
    """

    shape: tuple[int, ...]
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _ArrayRef:
    """An array inside the file: its spec and the byte spans (one per Flax chunk) holding its data."""

    spec: ArraySpec
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Other:
    """A leaf that is not an array Flax would write for weights (complex, bytes, ...)."""

    kind: str


class _Corrupt(ValueError):
    """Raised inside the walk; turned into a message naming the file."""


# ---------------------------------------------------------------- the msgpack walk
class _Walker:
    """A bounded msgpack parser over a buffer that records arrays instead of copying them.

    Args:
        buf: The file contents (mmap, bytes or memoryview).
    """

    def __init__(self, buf: Any, end: int | None = None) -> None:
        self.buf = buf
        self.size = len(buf) if end is None else end  # parse within buf[:end]; positions stay absolute
        self.objects = 0

    def _take(self, pos: int, n: int) -> int:
        """Check that `n` bytes exist at `pos`; return the position after them."""
        end = pos + n
        if n < 0 or end > self.size:
            raise _Corrupt(f"truncated: {n} bytes needed at offset {pos}, the data ends at {self.size}")
        return end

    def _uint(self, pos: int, width: int) -> tuple[int, int]:
        end = self._take(pos, width)
        return int.from_bytes(self.buf[pos:end], "big"), end

    def _count(self, n: int, pos: int, per_item: int) -> None:
        if n * per_item > self.size - pos:
            raise _Corrupt(f"a container of {n:,} items at offset {pos} cannot fit in the remaining data")

    def value(self, pos: int, depth: int) -> tuple[Any, int]:
        """Parse one object at `pos`; return it and the position after it."""
        if depth > MAX_DEPTH:
            raise _Corrupt(f"nested deeper than {MAX_DEPTH} levels")
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise _Corrupt(f"more than {MAX_OBJECTS:,} objects")
        end = self._take(pos, 1)
        tag = self.buf[pos]
        pos = end
        if tag <= 0x7F:
            return tag, pos
        if tag >= 0xE0:
            return tag - 0x100, pos
        if 0x80 <= tag <= 0x8F:
            return self._map(tag & 0x0F, pos, depth)
        if 0x90 <= tag <= 0x9F:
            return self._array(tag & 0x0F, pos, depth)
        if 0xA0 <= tag <= 0xBF:
            return self._str(tag & 0x1F, pos)
        return self._tagged(tag, pos, depth)

    def _tagged(self, tag: int, pos: int, depth: int) -> tuple[Any, int]:
        if tag == 0xC0:
            return None, pos
        if tag in (0xC2, 0xC3):
            return tag == 0xC3, pos
        if tag in (0xC4, 0xC5, 0xC6):  # bin 8/16/32: kept as a span, never copied
            n, pos = self._uint(pos, 1 << (tag - 0xC4))
            return _Other("bytes"), self._take(pos, n)
        if tag in (0xC7, 0xC8, 0xC9):  # ext 8/16/32
            n, pos = self._uint(pos, 1 << (tag - 0xC7))
            return self._ext(n, pos)
        if tag in (0xCA, 0xCB):
            end = self._take(pos, 4 if tag == 0xCA else 8)
            return struct.unpack(">f" if tag == 0xCA else ">d", self.buf[pos:end])[0], end
        if 0xCC <= tag <= 0xCF:
            return self._uint(pos, 1 << (tag - 0xCC))
        if 0xD0 <= tag <= 0xD3:
            width = 1 << (tag - 0xD0)
            end = self._take(pos, width)
            return int.from_bytes(self.buf[pos:end], "big", signed=True), end
        if 0xD4 <= tag <= 0xD8:  # fixext 1/2/4/8/16
            return self._ext(1 << (tag - 0xD4), pos)
        if tag in (0xD9, 0xDA, 0xDB):
            n, pos = self._uint(pos, 1 << (tag - 0xD9))
            return self._str(n, pos)
        if tag in (0xDC, 0xDD):
            n, pos = self._uint(pos, 2 if tag == 0xDC else 4)
            return self._array(n, pos, depth)
        if tag in (0xDE, 0xDF):
            n, pos = self._uint(pos, 2 if tag == 0xDE else 4)
            return self._map(n, pos, depth)
        raise _Corrupt(f"invalid msgpack type byte 0x{tag:02x} at offset {pos - 1}")

    def _str(self, n: int, pos: int) -> tuple[Any, int]:
        end = self._take(pos, n)
        if n > _MAX_KEY_BYTES:
            return _Other("string"), end
        try:
            return bytes(self.buf[pos:end]).decode("utf-8"), end
        except UnicodeDecodeError:
            raise _Corrupt(f"invalid UTF-8 in a string at offset {pos}") from None

    def _array(self, n: int, pos: int, depth: int) -> tuple[list[Any], int]:
        self._count(n, pos, 1)
        items = []
        for _ in range(n):
            item, pos = self.value(pos, depth + 1)
            items.append(item)
        return items, pos

    def _map(self, n: int, pos: int, depth: int) -> tuple[dict[str, Any], int]:
        self._count(n, pos, 2)
        out: dict[str, Any] = {}
        for _ in range(n):
            key_pos = pos
            key, pos = self.value(pos, depth + 1)
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise _Corrupt(f"a map key at offset {key_pos} is a {type(key).__name__}, expected a string")
            key = str(key)
            if key in out:
                raise _Corrupt(f"duplicate map key {key[:40]!r} at offset {key_pos}")
            out[key], pos = self.value(pos, depth + 1)
        return out, pos

    def _ext(self, n: int, pos: int) -> tuple[Any, int]:
        start = self._take(pos, 1)
        code = int.from_bytes(self.buf[pos:start], "big", signed=True)
        end = self._take(start, n)
        if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
            return self._ndarray(start, end), end
        if code == _EXT_NATIVE_COMPLEX:
            return _Other("complex"), end
        raise _Corrupt(f"unknown msgpack extension type {code} at offset {pos}")

    def _ndarray(self, start: int, end: int) -> _ArrayRef:
        """Parse the payload ``[shape, dtype name, bytes]`` of an ndarray extension in place.

        The payload lies at ``buf[start:end]``; it is parsed by a walker bounded to it, without
        slicing (no copy, and no memoryview that would pin the memory map).
        """
        inner = _Walker(self.buf, end)
        if start >= end or self.buf[start] != 0x93:
            raise _Corrupt(f"the array at offset {start} does not start with [shape, dtype, bytes]")
        shape, pos = inner.value(start + 1, MAX_DEPTH - 1)
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise _Corrupt(f"the array at offset {start} has an invalid shape")
        dtype, pos = inner.value(pos, MAX_DEPTH)
        if not isinstance(dtype, str):
            raise _Corrupt(f"the array at offset {start} has an invalid dtype name")
        if pos >= end:
            raise _Corrupt(f"the array at offset {start} has no data")
        tag, pos = self.buf[pos], pos + 1
        widths = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, or str from old writers
        if 0xA0 <= tag <= 0xBF:
            length = tag & 0x1F
        elif tag in widths:
            length, pos = inner._uint(pos, widths[tag])
        else:
            raise _Corrupt(f"the array at offset {start} stores its bytes as msgpack type 0x{tag:02x}")
        if pos + length != end:
            raise _Corrupt(f"the array at offset {start} has {length} data bytes in a payload of {end - start}")
        spec = ArraySpec(tuple(shape), dtype[:32])
        storage = _STORAGE.get(spec.dtype)
        if storage is not None and length != spec.size * storage.itemsize:
            raise _Corrupt(f"an array of shape {spec.shape} and dtype {spec.dtype} holds {length} bytes")
        return _ArrayRef(spec, ((pos, length),))


# ---------------------------------------------------------------- locating the parameters
def _select_params(state: Mapping[str, Any]) -> Any:
    """Find the parameter tree inside a deserialized Flax state.

    The rule, first match wins:

    1. ``state["optimizer"]["target"]``: a ``flax.optim`` train state (the released Scenic
       ViViT checkpoints);
    2. ``state["params"]``: a newer Scenic/optax train state;
    3. otherwise ``state`` itself is taken as a bare parameter tree.

    Then, while the chosen tree is a map with a ``"params"`` sub-map (a Flax variables dict such
    as ``{"params": ..., "batch_stats": ...}``), descend into it.

    Args:
        state: The top-level msgpack map.
    """
    optimizer = state.get("optimizer")
    if isinstance(optimizer, Mapping) and isinstance(optimizer.get("target"), Mapping):
        tree: Any = optimizer["target"]
    elif isinstance(state.get("params"), Mapping):
        tree = state["params"]
    else:
        tree = state
    while isinstance(tree, Mapping) and isinstance(tree.get("params"), Mapping):
        tree = tree["params"]
    return tree


def _iter_leaves(tree: Any, prefix: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Yield ``(joined name, leaf)`` pairs of a nested dict/list tree, depth first.

    Args:
        tree: The (sub)tree to walk.
        prefix: The joined name of ``tree`` itself ('' at the root).
        depth: Nesting so far (a tree deeper than `MAX_DEPTH` is refused, not recursed into).
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"parameter tree nested deeper than {MAX_DEPTH} levels at {prefix[:200]!r}")
    if isinstance(tree, Mapping) and _CHUNKED_MARKER not in tree:
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        # Flax stores sequences as maps keyed "0", "1", ...; name plain lists the same way.
        items = enumerate(tree)
    else:
        yield prefix, tree
        return
    for key, value in items:
        name = f"{prefix}/{key}" if prefix else str(key)
        yield from _iter_leaves(value, name, depth + 1)


def _index_map(node: Any, what: str) -> list[Any]:
    """The values of a Flax ``{"0": a, "1": b, ...}`` map, in index order."""
    if not isinstance(node, Mapping) or set(node) != {str(i) for i in range(len(node))}:
        raise _Corrupt(f"a chunked array's {what} is not a map keyed 0..n-1")
    return [node[str(i)] for i in range(len(node))]


def _unchunk(node: Mapping[str, Any]) -> _ArrayRef:
    """Merge an array that Flax split into flat chunks into one reference (no data is read).

    Args:
        node: The ``__msgpack_chunked_array__`` map.
    """
    dims = _index_map(node.get("shape"), "shape")
    chunks = _index_map(node.get("chunks"), "chunks")
    if len(dims) > _MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise _Corrupt("a chunked array has an invalid shape")
    if not chunks or not all(isinstance(c, _ArrayRef) and c.spec.ndim == 1 for c in chunks):
        raise _Corrupt("a chunked array's chunks are not flat arrays")
    dtypes = {c.spec.dtype for c in chunks}
    if len(dtypes) != 1:
        raise _Corrupt(f"a chunked array mixes dtypes {short_list(sorted(dtypes))}")
    spec = ArraySpec(tuple(dims), dtypes.pop())
    if sum(c.spec.size for c in chunks) != spec.size:
        raise _Corrupt(
            f"a chunked array of shape {spec.shape} has chunks of {sum(c.spec.size for c in chunks)} elements"
        )
    return _ArrayRef(spec, tuple(span for c in chunks for span in c.spans))


def _param_leaf(name: str, leaf: Any, problems: dict[str, list[str]]) -> _ArrayRef | float | None:
    """Classify one leaf of the parameter tree; record why it is unusable in `problems`."""
    if isinstance(leaf, Mapping) and _CHUNKED_MARKER in leaf:
        leaf = _unchunk(leaf)
    if isinstance(leaf, _ArrayRef):
        if leaf.spec.dtype not in FLOAT_DTYPES:
            problems["dtype"].append(f"{name} ({leaf.spec.dtype})")
            return None
        return leaf
    if isinstance(leaf, float):  # a Python float written by Flax as a msgpack float64
        return leaf
    if isinstance(leaf, _Other):
        problems["dtype"].append(f"{name} ({leaf.kind})")
    else:
        problems["leaf"].append(f"{name} (a {type(leaf).__name__})")
    return None


def _describe(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> str:
    """Name a checkpoint source for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes in memory>"
    return f"'{os.fspath(source)}'"


def _check_not_text(head: bytes, where: str) -> None:
    """Reject HTML/XML/JSON pages early: a proxy or a failed download often leaves one behind.

    Args:
        head: The first bytes of the file.
        where: The file description for the error message.
    """
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf").lower()
    if stripped.startswith((b"<", b"{", b"[")) and b"\0" not in head:
        kind = "an HTML/XML page" if stripped.startswith(b"<") else "JSON text"
        raise ValueError(
            f"{_NOT_A_CHECKPOINT}: {where} is {kind}, not msgpack data; "
            "it is probably an error page saved by a failed download. Delete it and download again."
        )


# ---------------------------------------------------------------- public API
class FlaxCheckpoint:
    """An opened Flax checkpoint: parameter names, shapes and dtypes are known, nothing is decoded.

    Use as a context manager (it holds the memory map of the file); see `open_flax_checkpoint`.

    Attributes:
        where: The file (or ``<N bytes in memory>``), as error messages name it.
        specs: ``'/'``-joined Flax parameter name -> `ArraySpec`, in file order.
    """

    def __init__(self, buffer: Any, where: str, handle: Any = None) -> None:
        self.where = where
        self._buffer = buffer
        self._handle = handle
        try:
            self._leaves = self._parse()
        except BaseException:
            self.close()
            raise
        self.specs: dict[str, ArraySpec] = {
            name: (leaf.spec if isinstance(leaf, _ArrayRef) else ArraySpec((), "float64"))
            for name, leaf in self._leaves.items()
        }

    def _parse(self) -> dict[str, _ArrayRef | float]:
        where = self.where
        _check_not_text(bytes(self._buffer[:64]), where)
        walker = _Walker(self._buffer)
        try:
            state, end = walker.value(0, 0)
            if end != walker.size:
                raise _Corrupt(f"{walker.size - end} bytes follow the checkpoint's single msgpack object")
        except _Corrupt as err:
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where} could not be decoded as msgpack ({err}). "
                "The file may be truncated or corrupt: delete it and download it again."
            ) from None
        if not isinstance(state, Mapping):
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where} holds a msgpack {type(state).__name__}, "
                "expected a map (a Flax state dict)."
            )
        tree = _select_params(state)
        problems: dict[str, list[str]] = {"dtype": [], "leaf": []}
        leaves: dict[str, _ArrayRef | float] = {}
        try:
            for name, leaf in _iter_leaves(tree, ""):
                kept = _param_leaf(name, leaf, problems)
                if kept is not None:
                    leaves[name] = kept
        except ValueError as err:
            raise ValueError(f"{_NOT_A_CHECKPOINT}: {where}: {err}") from None
        if problems["leaf"]:
            bad = problems["leaf"]
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where}: {len(bad)} leaves of its parameter tree are not arrays: {short_list(bad)}"
            )
        if problems["dtype"]:
            bad = problems["dtype"]
            raise ValueError(
                f"{where}: parameters must be float16, bfloat16, float32 or float64 arrays; {len(bad)} are not: "
                f"{short_list(bad)}; the file is corrupt or not a model checkpoint"
            )
        if not leaves:
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where} holds no parameter arrays; expected a Flax train state "
                "with params at ['optimizer']['target'] or ['params'], or a bare parameter tree."
            )
        return leaves

    def read(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Copy parameters out of the file.

        Args:
            names: Which parameters (default: all of `specs`).

        Returns:
            Name -> writable C-contiguous numpy array; bfloat16 is widened to float32 exactly,
            other dtypes are kept.

        Raises:
            ValueError: If a name is unknown, or an array holds NaN or infinity (the message names
                a few of them).
        """
        wanted = list(self.specs if names is None else names)
        unknown = [n for n in wanted if n not in self.specs]
        if unknown:
            raise ValueError(f"{self.where}: no parameters named {short_list(unknown)}")
        out = {name: self._materialize(self._leaves[name]) for name in wanted}
        check_finite(self.where, out, "parameters")
        return out

    def _materialize(self, leaf: _ArrayRef | float) -> np.ndarray:
        if isinstance(leaf, float):
            return np.array(leaf, dtype=np.float64)
        storage = _STORAGE[leaf.spec.dtype]
        out = np.empty(leaf.spec.size, dtype=storage)
        position = 0
        for start, length in leaf.spans:
            count = length // storage.itemsize
            out[position : position + count] = np.frombuffer(self._buffer, dtype=storage, count=count, offset=start)
            position += count
        out = out.reshape(leaf.spec.shape)
        if leaf.spec.dtype == "bfloat16":
            # bfloat16 is the top half of a float32, so this widening is exact.
            return (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def close(self) -> None:
        """Release the memory map and the file."""
        buffer, self._buffer = self._buffer, b""
        if isinstance(buffer, mmap.mmap):
            try:
                buffer.close()
            except BufferError:  # an array still views it (a traceback being handled): the GC closes it
                pass
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FlaxCheckpoint:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_flax_checkpoint(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> FlaxCheckpoint:
    """Open a Flax msgpack checkpoint and list its parameters without decoding any array.

    The parameter tree is located as described in ``_select_params``: ``['optimizer']['target']``
    (Scenic's released ViViT checkpoints), else ``['params']``, else the whole file as a bare
    parameter tree; a nested ``'params'`` collection is then unwrapped.

    Args:
        source: A path (the file is memory-mapped; it must be a regular file, see
            `vivit.weights.formats.open_regular_file`) or the contents as bytes.

    Returns:
        A `FlaxCheckpoint` (a context manager) whose `specs` give every parameter's shape and dtype.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If the data is not a Flax msgpack checkpoint (not msgpack, truncated, nested
            too deep, an HTML page, no parameter arrays) or a parameter is not a float array; the
            message names the file.
    """
    where = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return FlaxCheckpoint(bytes(source) if isinstance(source, memoryview) else source, where)
    handle = open_regular_file(Path(source))
    try:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ValueError(f"{_NOT_A_CHECKPOINT}: {where} is empty.")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        handle.close()
        raise
    return FlaxCheckpoint(mapped, where, handle)


def read_flax_checkpoint(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
) -> dict[str, np.ndarray]:
    """Read the model parameters of a Flax msgpack checkpoint.

    Equivalent to ``open_flax_checkpoint(source).read()``; everything else in a train state
    (optimizer moments, step, RNG) is skipped without being decoded.

    Args:
        source: A path to the checkpoint file, or its contents as bytes.

    Returns:
        A flat dict from ``'/'``-joined Flax names (``'Transformer/encoderblock_0/MlpBlock_0/
        Dense_0/kernel'``, ``'cls'``, ``'embedding/kernel'``, ...) to writable numpy arrays.
        ``bfloat16`` arrays are returned as ``float32`` (exactly); float16/32/64 are kept.

    Raises:
        ValueError: If the data is not a Flax msgpack checkpoint, a parameter is not a float
            array, or holds NaN/infinity; the message names the file.
        FileNotFoundError: If the path does not exist.
    """
    with open_flax_checkpoint(source) as checkpoint:
        return checkpoint.read()


def _leaf_to_array(value: Any) -> np.ndarray:
    """Turn one in-memory parameter leaf into a numpy array.

    Args:
        value: A numpy value, a Python number, or any array-like (jax array, CPU torch tensor).
    """
    if isinstance(value, np.ndarray):
        return value
    # Numbers, numpy scalars, and array-likes such as jax arrays or CPU torch tensors.
    if isinstance(value, (np.generic, bool, int, float, complex)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"unsupported leaf of type {type(value).__name__}")


def flatten_params(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flatten a nested in-memory parameter tree into ``'/'``-joined names.

    A dict that is already flat (keys like ``'Transformer/encoder_norm/scale'``) passes through
    unchanged; mixed trees are handled too. Empty sub-dicts (modules without parameters) produce
    no entries. `ArraySpec` leaves (from `FlaxCheckpoint.specs`) are kept as they are, so that
    architecture can be read from shapes alone.

    Args:
        tree: Nested mapping (dict, Flax ``FrozenDict``) of module names to sub-mappings or array
            leaves. Leaves may be numpy arrays or scalars, Python numbers, array-likes (jax arrays,
            CPU torch tensors) or `ArraySpec`s.

    Returns:
        A new dict from joined names to numpy arrays (or `ArraySpec`s), in depth-first order.

    Raises:
        TypeError: If a leaf is not numeric (for example a string).
        ValueError: If the tree is nested deeper than `MAX_DEPTH`.
    """
    flat: dict[str, Any] = {}
    for name, leaf in _iter_leaves(tree, ""):
        if isinstance(leaf, ArraySpec):
            flat[name] = leaf
            continue
        try:
            flat[name] = _leaf_to_array(leaf)
        except TypeError as err:
            raise TypeError(f"parameter {name!r}: {err}") from None
    return flat
