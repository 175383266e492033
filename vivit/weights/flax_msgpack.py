"""Reader for Flax msgpack checkpoints (the format of the released Scenic ViViT weights).

Flax's `flax.serialization.msgpack_serialize` writes one msgpack map; arrays are msgpack extension
objects: code 1 (ndarray) and 3 (numpy scalar) hold msgpack `[shape, dtype name, raw C-order bytes]`,
code 2 a complex number. Arrays over 2**30 bytes are split into
`{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": flat0, ...}}`.

The file is decoded by `msgpack.Unpacker` (the `scenic` extra), streamed from the file with its
length limits (`max_bin_len`, `max_map_len`, ...), a cap on the number of containers and a check
that the file holds exactly one object. Only the parameters are decoded: the rest of a train state
under `optimizer` (its moments, a copy as large as the weights) is skipped unread. Parameters must
be float16, bfloat16, float32 or float64 (bfloat16 is widened to float32 exactly) and finite;
anything else in the parameter tree is refused. Reading needs numpy and msgpack, never jax/flax.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import numpy as np

from .._install import install_hint
from .formats import describe_text, open_regular_file
from .validate import FLOAT_DTYPES, check_finite, short_list

__all__ = [
    "MAX_DEPTH",
    "MAX_OBJECTS",
    "ArraySpec",
    "FlaxCheckpoint",
    "check_flax_file",
    "flatten_params",
    "open_flax_checkpoint",
    "read_flax_checkpoint",
    "require_msgpack",
]

_CHUNKED = "__msgpack_chunked_array__"
_NOT_A_CHECKPOINT = "not a Flax msgpack checkpoint"
# A Flax train state nests about 8 levels (state/optimizer/target/encoder/block/module/kernel).
MAX_DEPTH = 32
# Containers (maps and arrays) in the decoded part of a file; ViViT-H has about 2,000.
MAX_OBJECTS = 1 << 21
_MAX_CONTAINER = 1 << 16  # entries of one map or array (a Flax module has tens)
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
    """What a checkpoint says about one array: its shape and the dtype name Flax wrote."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _Array:
    """A decoded array extension: its spec and its raw bytes (one piece per Flax chunk)."""

    spec: ArraySpec
    data: tuple[bytes, ...]


@dataclass(frozen=True)
class _Other:
    """An extension that cannot hold weights (a complex number)."""

    kind: str


class _Corrupt(ValueError):
    """Raised while decoding; turned into a message naming the file."""


def require_msgpack() -> Any:
    """The `msgpack` module, or an ImportError that says how to install it."""
    try:
        import msgpack
    except ImportError:
        raise ImportError(
            f"reading Scenic (Flax msgpack) checkpoints needs msgpack: {install_hint('msgpack', 'scenic')}"
        ) from None
    return msgpack


# ---------------------------------------------------------------- decoding
def _ext_hook(code: int, payload: bytes) -> _Array | _Other:
    """Flax's extension objects: ndarray (1) and numpy scalar (3) `[shape, dtype, bytes]`, complex (2)."""
    msgpack = require_msgpack()
    if code == 2:
        return _Other("complex")
    if code not in (1, 3):
        raise _Corrupt(f"unknown msgpack extension type {code}")
    # raw=True: old writers stored the bytes as a msgpack str, which is not UTF-8
    value = msgpack.unpackb(payload, raw=True, max_bin_len=len(payload), max_str_len=len(payload), max_array_len=16)
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], bytes)):
        raise _Corrupt("an array extension does not hold [shape, dtype, bytes]")
    shape, dtype, data = value
    if not (
        isinstance(shape, list)
        and len(shape) <= _MAX_NDIM
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _Corrupt(f"an array has an invalid shape {str(shape)[:60]}")
    if not isinstance(dtype, bytes):
        raise _Corrupt("an array has an invalid dtype name")
    spec = ArraySpec(tuple(shape), dtype.decode("utf-8", "replace")[:32])
    storage = _STORAGE.get(spec.dtype)
    if storage is not None and len(data) != spec.size * storage.itemsize:
        raise _Corrupt(f"an array of shape {spec.shape} and dtype {spec.dtype} holds {len(data)} bytes")
    return _Array(spec, (data,))


def _decode(source: IO[bytes], size: int) -> dict[str, Any]:
    """The top-level map of a Flax file; under `optimizer`, only `target` is decoded (the rest skipped)."""
    msgpack = require_msgpack()
    count = [0]

    def container(value: Any) -> Any:
        count[0] += 1
        if count[0] > MAX_OBJECTS:
            raise _Corrupt(f"more than {MAX_OBJECTS:,} maps and arrays")
        return value

    def pairs(items: list[tuple[Any, Any]]) -> dict[str, Any]:
        out = container(dict(items))
        if not all(isinstance(key, str) for key, _ in items):
            raise _Corrupt("a map has a key that is not a string")
        if len(out) != len(items):
            raise _Corrupt("a map has duplicate keys")
        return out

    buffer = min(max(size, 1), (1 << 31) - 1)
    unpacker = msgpack.Unpacker(
        source,
        read_size=min(1 << 20, buffer),
        max_buffer_size=buffer,
        max_bin_len=size,
        max_ext_len=size,
        max_str_len=min(size, 1 << 16),
        max_map_len=_MAX_CONTAINER,
        max_array_len=_MAX_CONTAINER,
        ext_hook=_ext_hook,
        object_pairs_hook=pairs,
        list_hook=container,
    )
    try:
        entries = unpacker.read_map_header()
    except ValueError:  # "Unexpected type header on stream"
        raise _Corrupt("it holds msgpack data that is not a map, expected a map (a Flax state dict)") from None
    state: dict[str, Any] = {}
    for _ in range(entries):
        key = unpacker.unpack()
        if not isinstance(key, str) or key in state:
            raise _Corrupt("the top-level map has a key that is not a string, or a duplicate key")
        if key != "optimizer":
            state[key] = unpacker.unpack()
            continue
        optimizer: dict[str, Any] = {}
        for _ in range(unpacker.read_map_header()):
            name = unpacker.unpack()
            if name == "target":
                optimizer[name] = unpacker.unpack()
            else:
                unpacker.skip()  # optimizer moments and step: as large as the weights, never needed
        state[key] = optimizer
    try:
        unpacker.skip()
    except msgpack.OutOfData:
        return state
    raise _Corrupt("more data follows the checkpoint's single msgpack object")


# ---------------------------------------------------------------- locating the parameters
def _select_params(state: Mapping[str, Any]) -> Any:
    """The parameter tree of a decoded Flax state; first match wins:

    1. `state["optimizer"]["target"]`: a `flax.optim` train state (the released Scenic checkpoints);
    2. `state["params"]`: a newer Scenic/optax train state;
    3. otherwise `state` itself, a bare parameter tree.

    Then, while the tree is a map with a `"params"` sub-map (a Flax variables dict such as
    `{"params": ..., "batch_stats": ...}`), descend into it.
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


def _iter_leaves(tree: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """`('/'-joined name, leaf)` pairs of a nested dict/list tree, depth first (a chunked array is a leaf)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"parameter tree nested deeper than {MAX_DEPTH} levels at {prefix[:200]!r}")
    if isinstance(tree, Mapping) and _CHUNKED not in tree:
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)  # Flax stores sequences as maps keyed "0", "1", ...: named the same way
    else:
        yield prefix, tree
        return
    for key, value in items:
        yield from _iter_leaves(value, f"{prefix}/{key}" if prefix else str(key), depth + 1)


def _index_map(node: Any, what: str) -> list[Any]:
    """The values of a Flax `{"0": a, "1": b, ...}` map, in index order."""
    if not isinstance(node, Mapping) or set(node) != {str(i) for i in range(len(node))}:
        raise _Corrupt(f"a chunked array's {what} is not a map keyed 0..n-1")
    return [node[str(i)] for i in range(len(node))]


def _unchunk(node: Mapping[str, Any]) -> _Array:
    """One array from the flat chunks Flax split it into (no data is copied)."""
    dims, chunks = _index_map(node.get("shape"), "shape"), _index_map(node.get("chunks"), "chunks")
    if len(dims) > _MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise _Corrupt("a chunked array has an invalid shape")
    if not chunks or not all(isinstance(c, _Array) and c.spec.ndim == 1 for c in chunks):
        raise _Corrupt("a chunked array's chunks are not flat arrays")
    dtypes = {c.spec.dtype for c in chunks}
    if len(dtypes) != 1:
        raise _Corrupt(f"a chunked array mixes dtypes {short_list(sorted(dtypes))}")
    spec = ArraySpec(tuple(dims), dtypes.pop())
    if sum(c.spec.size for c in chunks) != spec.size:
        raise _Corrupt(
            f"a chunked array of shape {spec.shape} has chunks of {sum(c.spec.size for c in chunks)} elements"
        )
    return _Array(spec, tuple(piece for c in chunks for piece in c.data))


# ---------------------------------------------------------------- public API
class FlaxCheckpoint:
    """A decoded Flax checkpoint: parameter names, shapes and dtypes, values not yet converted.

    Attributes:
        where: The file (or `<N bytes in memory>`), as error messages name it.
        specs: `'/'`-joined Flax parameter name -> `ArraySpec`, in file order.
    """

    def __init__(self, state: Mapping[str, Any], where: str) -> None:
        self.where = where
        tree = _select_params(state)
        leaves: dict[str, _Array | float] = {}
        bad_dtype, not_arrays = [], []
        try:
            for name, leaf in _iter_leaves(tree):
                if isinstance(leaf, Mapping):  # only a chunked array is a map leaf
                    leaf = _unchunk(leaf)
                if (isinstance(leaf, _Array) and leaf.spec.dtype in FLOAT_DTYPES) or isinstance(leaf, float):
                    leaves[name] = leaf
                elif isinstance(leaf, (_Array, _Other)):
                    bad_dtype.append(f"{name} ({leaf.spec.dtype if isinstance(leaf, _Array) else leaf.kind})")
                else:
                    not_arrays.append(f"{name} (a {type(leaf).__name__})")
        except ValueError as err:
            raise ValueError(f"{_NOT_A_CHECKPOINT}: {where}: {err}") from None
        if not_arrays:
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where}: {len(not_arrays)} leaves of its parameter tree are not arrays: "
                f"{short_list(not_arrays)}"
            )
        if bad_dtype:
            raise ValueError(
                f"{where}: parameters must be float16, bfloat16, float32 or float64 arrays; {len(bad_dtype)} are not: "
                f"{short_list(bad_dtype)}; the file is corrupt or not a model checkpoint"
            )
        if not leaves:
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where} holds no parameter arrays; expected a Flax train state "
                "with params at ['optimizer']['target'] or ['params'], or a bare parameter tree."
            )
        self._leaves = leaves
        self.specs: dict[str, ArraySpec] = {
            name: leaf.spec if isinstance(leaf, _Array) else ArraySpec((), "float64") for name, leaf in leaves.items()
        }

    def read(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Parameters as writable C-contiguous numpy arrays (bfloat16 widened to float32 exactly).

        Args:
            names: Which parameters (default: all of `specs`).

        Raises:
            ValueError: If a name is unknown, or an array holds NaN or infinity (naming a few).
        """
        wanted = list(self.specs if names is None else names)
        unknown = [n for n in wanted if n not in self.specs]
        if unknown:
            raise ValueError(f"{self.where}: no parameters named {short_list(unknown)}")
        out = {name: _materialize(self._leaves[name]) for name in wanted}
        check_finite(self.where, out, "parameters")
        return out

    def close(self) -> None:
        """Drop the decoded data."""
        self._leaves = {}

    def __enter__(self) -> FlaxCheckpoint:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _materialize(leaf: _Array | float) -> np.ndarray:
    if isinstance(leaf, float):
        return np.array(leaf, dtype=np.float64)
    storage = _STORAGE[leaf.spec.dtype]
    out = np.concatenate([np.frombuffer(piece, dtype=storage) for piece in leaf.data]).reshape(leaf.spec.shape)
    if leaf.spec.dtype == "bfloat16":  # the top half of a float32: widening is exact
        return (out.astype(np.uint32) << 16).view(np.float32)
    return out  # np.concatenate copied: writable, and the file's bytes can go


def open_flax_checkpoint(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> FlaxCheckpoint:
    """Decode the parameters of a Flax msgpack checkpoint (nothing converted yet; see `FlaxCheckpoint`).

    Args:
        source: A path (a regular file, see `vivit.weights.formats.open_regular_file`) or the contents.

    Raises:
        ImportError: If msgpack is not installed (the message says how to install it).
        FileNotFoundError: If the path does not exist.
        ValueError: If the data is not a Flax msgpack checkpoint (not msgpack, truncated, nested too
            deep, a web page, no parameter arrays) or a parameter is not a float array; naming the file.
    """
    msgpack = require_msgpack()
    handle: IO[bytes]
    if isinstance(source, (bytes, bytearray, memoryview)):
        where, handle, size = f"<{len(source)} bytes in memory>", io.BytesIO(bytes(source)), len(source)
    else:
        where, handle = f"'{os.fspath(source)}'", open_regular_file(source)
        size = os.fstat(handle.fileno()).st_size
    with handle:
        head = handle.read(512)
        handle.seek(0)
        if not head:
            raise ValueError(f"{_NOT_A_CHECKPOINT}: {where} is empty.")
        text = describe_text(head)
        if text:
            raise ValueError(f"{_NOT_A_CHECKPOINT}: {where} is {text}, not msgpack data. Delete it and download again.")
        try:
            state = _decode(handle, size)
        except msgpack.OutOfData:
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where} is truncated (its data ends inside an object). "
                "Delete it and download it again."
            ) from None
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as err:  # msgpack's and _Corrupt
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: {where} could not be decoded as msgpack ({str(err)[:200] or type(err).__name__}). "
                "The file may be truncated or corrupt: delete it and download it again."
            ) from None
    return FlaxCheckpoint(state, where)


def check_flax_file(path: str | os.PathLike[str]) -> None:
    """Check that a file is one complete msgpack map, skipping through it without decoding arrays (a
    download check: a body cut short or garbled in transit is refused, in a fraction of a full read).

    Raises:
        ImportError: If msgpack is not installed.
        ValueError: If it is not (`"not a Flax msgpack checkpoint: ..."`), naming the file.
    """
    msgpack = require_msgpack()
    with open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        buffer = min(max(size, 1), (1 << 31) - 1)
        unpacker = msgpack.Unpacker(handle, read_size=min(1 << 20, buffer), max_buffer_size=buffer)
        try:
            for _ in range(unpacker.read_map_header()):
                unpacker.skip()
                unpacker.skip()
        except (ValueError, msgpack.UnpackException) as err:
            raise ValueError(
                f"{_NOT_A_CHECKPOINT}: '{os.fspath(path)}' is not one complete msgpack map ({err})"
            ) from None
        try:
            unpacker.skip()
        except msgpack.OutOfData:
            return
    raise ValueError(f"{_NOT_A_CHECKPOINT}: '{os.fspath(path)}' holds more data after its msgpack map")


def read_flax_checkpoint(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """The model parameters of a Flax msgpack checkpoint, `open_flax_checkpoint(source).read()`.

    Returns:
        `'/'`-joined Flax names (`'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'`, `'cls'`,
        `'embedding/kernel'`, ...) -> writable numpy arrays; bfloat16 as float32 (exactly).

    Raises:
        ImportError, FileNotFoundError, ValueError: see `open_flax_checkpoint`; ValueError also for
            NaN or infinite parameters.
    """
    with open_flax_checkpoint(source) as checkpoint:
        return checkpoint.read()


def _leaf_to_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    # numbers, numpy scalars, and array-likes such as jax arrays or CPU torch tensors
    if isinstance(value, (np.generic, bool, int, float, complex)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"unsupported leaf of type {type(value).__name__}")


def flatten_params(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a nested in-memory parameter tree into `'/'`-joined names.

    An already flat dict (`'Transformer/encoder_norm/scale'`) passes through; mixed trees work too;
    empty sub-dicts produce nothing. `ArraySpec` leaves (from `FlaxCheckpoint.specs`) are kept, so
    that an architecture can be read from shapes alone.

    Args:
        tree: Nested mapping (dict, Flax `FrozenDict`) whose leaves are numpy arrays or scalars,
            Python numbers, array-likes (jax arrays, CPU torch tensors) or `ArraySpec`s.

    Raises:
        TypeError: If a leaf is not numeric (for example a string).
        ValueError: If the tree is nested deeper than `MAX_DEPTH`.
    """
    flat: dict[str, Any] = {}
    for name, leaf in _iter_leaves(tree):
        try:
            flat[name] = leaf if isinstance(leaf, ArraySpec) else _leaf_to_array(leaf)
        except TypeError as err:
            raise TypeError(f"parameter {name!r}: {err}") from None
    return flat
