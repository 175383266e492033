"""Reader for Flax msgpack checkpoints (the format of the released Scenic ViViT weights).

Flax's ``flax.serialization.msgpack_serialize`` writes a single msgpack map. Arrays are msgpack
extension objects:

* ext code 1 (ndarray): the payload is itself msgpack ``[shape, dtype name, raw C-order bytes]``;
* ext code 2 (native complex): the payload is msgpack ``[real, imag]``;
* ext code 3 (numpy scalar): encoded like an ndarray of shape ``()``.

Arrays larger than 2**30 bytes are split by Flax into a map
``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": flat0, ...}}``
whose flat chunks are concatenated and reshaped on reading.

Only numpy and msgpack are needed: no jax or flax. ``bfloat16`` arrays (which numpy cannot
represent) are widened to ``float32`` exactly.
"""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["flatten_params", "read_flax_checkpoint"]

_EXT_NDARRAY = 1
_EXT_NATIVE_COMPLEX = 2
_EXT_NPSCALAR = 3
_CHUNKED_MARKER = "__msgpack_chunked_array__"
_NOT_A_CHECKPOINT = "not a Flax msgpack checkpoint"


def _import_msgpack() -> Any:
    """Import msgpack lazily, since it is only an optional extra of the package."""
    try:
        import msgpack
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading Scenic (Flax msgpack) checkpoints needs the 'msgpack' package: "
            "pip install 'vivit[scenic]' (or: pip install msgpack)."
        ) from err
    return msgpack


class _LazyArray:
    """An undecoded array extension object.

    Decoding is deferred so that the parts of a train state that are not parameters (optimizer
    moments, RNG state, ...) are never converted or copied.

    Args:
        code: The msgpack extension type code (1 = ndarray, 3 = numpy scalar).
        data: The raw extension payload.
    """

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code = code
        self.data = data

    def materialize(self) -> np.ndarray:
        """Decode the payload into a writable numpy array (0-d for scalars).

        The payload is released here, so that while a large checkpoint is being converted only
        one array exists twice (as payload and as result) at any time. Call this only once.
        """
        data, self.data = self.data, b""
        return _decode_ndarray(data)


def _ext_hook(code: int, data: bytes) -> Any:
    """Translate Flax's msgpack extension objects while unpacking.

    Args:
        code: The extension type code.
        data: The extension payload.
    """
    if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
        return _LazyArray(code, data)
    if code == _EXT_NATIVE_COMPLEX:
        real, imag = _import_msgpack().unpackb(data)
        return complex(real, imag)
    raise ValueError(f"unknown msgpack extension type {code}")


def _payload_span(data: bytes, offset: int) -> tuple[int, int]:
    """Locate the raw array bytes of an ndarray payload without copying them.

    Flax writes the bytes as msgpack ``bin`` (``use_bin_type=True``); very old writers used
    ``str``. Both headers are accepted.

    Args:
        data: The extension payload.
        offset: Where the header of the byte string starts.

    Returns:
        ``(start, length)`` of the raw bytes within ``data``.
    """
    tag = data[offset]
    if 0xA0 <= tag <= 0xBF:  # fixstr
        return offset + 1, tag & 0x1F
    widths = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
    if tag not in widths:
        raise ValueError(f"unexpected msgpack type 0x{tag:02x} for array bytes")
    width = widths[tag]
    length = int.from_bytes(data[offset + 1 : offset + 1 + width], "big")
    return offset + 1 + width, length


def _dtype_from_name(name: str) -> np.dtype:
    """Map a Flax dtype name to the numpy dtype its bytes are stored in.

    Args:
        name: The dtype name written by Flax (``numpy.dtype.name``).
    """
    if name == "bfloat16":
        # Decoded as raw 16-bit words and widened afterwards, since numpy has no bfloat16.
        return np.dtype(np.uint16)
    try:
        return np.dtype(name)
    except TypeError as err:
        raise ValueError(f"unsupported array dtype {name!r}") from err


def _decode_ndarray(data: bytes) -> np.ndarray:
    """Decode an ndarray payload ``msgpack([shape, dtype name, bytes])``.

    Only the small header is unpacked; the array bytes are viewed in place so that a large array
    is copied once (into the writable result) rather than twice.

    Args:
        data: The extension payload.
    """
    msgpack = _import_msgpack()
    # A stream reader with a small read size avoids copying the whole payload into its buffer.
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=True, read_size=4096)
    if unpacker.read_array_header() != 3:
        raise ValueError("array header is not [shape, dtype, bytes]")
    shape = tuple(int(d) for d in unpacker.unpack())
    dtype_name = unpacker.unpack()
    if isinstance(dtype_name, bytes):
        dtype_name = dtype_name.decode("ascii")
    start, length = _payload_span(data, unpacker.tell())
    dtype = _dtype_from_name(dtype_name)
    count = int(np.prod(shape, dtype=np.int64))
    if start + length != len(data) or length != count * dtype.itemsize:
        raise ValueError(
            f"array of shape {shape} and dtype {dtype_name} has {length} bytes (payload of {len(data)} bytes)"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)
    if dtype_name == "bfloat16":
        # bfloat16 is the top half of a float32, so this widening is exact.
        return (array.astype(np.uint32) << 16).view(np.float32)
    # The copy makes the result writable and releases the msgpack payload.
    return array.copy()


def _unchunk(node: Mapping[str, Any]) -> np.ndarray:
    """Reassemble an array that Flax split into flat chunks.

    Args:
        node: The ``__msgpack_chunked_array__`` map.
    """
    shape_map, chunk_map = node["shape"], node["chunks"]
    shape = tuple(int(shape_map[str(i)]) for i in range(len(shape_map)))
    chunks = [_leaf_to_array(chunk_map[str(i)]) for i in range(len(chunk_map))]
    flat = np.concatenate([c.reshape(-1) for c in chunks]) if chunks else np.zeros(0)
    return flat.reshape(shape)


def _leaf_to_array(value: Any) -> np.ndarray:
    """Turn one parameter leaf into a numpy array.

    Args:
        value: A decoded leaf: a lazy ext array, a chunked-array map, a numpy value, a Python
            number, or any array-like (jax array, CPU torch tensor).
    """
    if isinstance(value, _LazyArray):
        return value.materialize()
    if isinstance(value, Mapping) and _CHUNKED_MARKER in value:
        return _unchunk(value)
    if isinstance(value, np.ndarray):
        return value
    # Numbers, numpy scalars, and array-likes such as jax arrays or CPU torch tensors.
    if isinstance(value, (np.generic, bool, int, float, complex)) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"unsupported leaf of type {type(value).__name__}")


def _iter_leaves(tree: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(joined name, leaf)`` pairs of a nested dict/list tree, depth first.

    Args:
        tree: The (sub)tree to walk.
        prefix: The joined name of ``tree`` itself ('' at the root).
    """
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
        yield from _iter_leaves(value, name)


def flatten_params(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flatten a nested parameter tree into ``'/'``-joined names.

    A dict that is already flat (keys like ``'Transformer/encoder_norm/scale'``) passes through
    unchanged; mixed trees are handled too. Empty sub-dicts (modules without parameters) produce
    no entries.

    Args:
        tree: Nested mapping (dict, Flax ``FrozenDict``) of module names to sub-mappings or array
            leaves. Leaves may be numpy arrays or scalars, Python numbers, array-likes (jax arrays,
            CPU torch tensors), or the undecoded values produced while reading a checkpoint.

    Returns:
        A new dict from joined names to numpy arrays, in depth-first order.

    Raises:
        TypeError: If a leaf is not numeric (for example a string).
    """
    flat: dict[str, np.ndarray] = {}
    for name, leaf in _iter_leaves(tree, ""):
        try:
            flat[name] = _leaf_to_array(leaf)
        except TypeError as err:
            raise TypeError(f"parameter {name!r}: {err}") from None
    return flat


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


def _describe(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> str:
    """Name a checkpoint source for error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes in memory>"
    return f"'{os.fspath(source)}'"


def _check_not_text(head: bytes, where: str) -> None:
    """Reject HTML/XML pages early: a proxy or a failed download often leaves one behind.

    Args:
        head: The first bytes of the file.
        where: The file description for the error message.
    """
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        raise ValueError(
            f"{_NOT_A_CHECKPOINT}: {where} is an HTML/XML page, not msgpack data; "
            "it is probably an error page saved by a failed download. Delete it and download again."
        )


def _unpack(buffer: Any, where: str) -> Mapping[str, Any]:
    """Unpack a whole checkpoint buffer into a tree of maps and undecoded arrays.

    Args:
        buffer: Any object supporting the buffer protocol (bytes, mmap).
        where: The file description for error messages.
    """
    msgpack = _import_msgpack()
    _check_not_text(bytes(buffer[:64]), where)
    try:
        # unpackb bounds every string/bin/ext/array/map by the buffer length, so a corrupt
        # length field cannot trigger an absurd allocation.
        state = msgpack.unpackb(buffer, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises ValueError, TypeError, its own errors...
        raise ValueError(
            f"{_NOT_A_CHECKPOINT}: {where} could not be decoded as msgpack ({err}). "
            "The file may be truncated or corrupt: delete it and download it again."
        ) from err
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{_NOT_A_CHECKPOINT}: {where} holds a msgpack {type(state).__name__}, "
            "expected a map (a Flax state dict)."
        )
    return state


def _read_params(buffer: Any, where: str) -> dict[str, np.ndarray]:
    """Decode a checkpoint buffer and return its flat parameters.

    Args:
        buffer: Any object supporting the buffer protocol.
        where: The file description for error messages.
    """
    tree = _select_params(_unpack(buffer, where))
    try:
        params = flatten_params(tree) if isinstance(tree, Mapping) else {}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{_NOT_A_CHECKPOINT}: {where}: {err}") from err
    if not params:
        raise ValueError(
            f"{_NOT_A_CHECKPOINT}: {where} holds no parameter arrays; expected a Flax train state "
            "with params at ['optimizer']['target'] or ['params'], or a bare parameter tree."
        )
    return params


def read_flax_checkpoint(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
) -> dict[str, np.ndarray]:
    """Read the model parameters of a Flax msgpack checkpoint.

    The parameter tree is located as described in ``_select_params``: ``['optimizer']['target']``
    (Scenic's released ViViT checkpoints), else ``['params']``, else the whole file as a bare
    parameter tree; a nested ``'params'`` collection is then unwrapped. Everything else in a
    train state (optimizer moments, step, RNG) is skipped without being decoded.

    Args:
        source: A path to the checkpoint file, or its contents as bytes. Files are memory-mapped,
            so a multi-gigabyte checkpoint is not held twice in memory.

    Returns:
        A flat dict from ``'/'``-joined Flax names (``'Transformer/encoderblock_0/MlpBlock_0/
        Dense_0/kernel'``, ``'cls'``, ``'embedding/kernel'``, ...) to writable numpy arrays.
        ``bfloat16`` arrays are returned as ``float32`` (exactly); other dtypes are kept.

    Raises:
        ValueError: If the data is not a Flax msgpack checkpoint (not msgpack, truncated, an HTML
            page, or without any parameter arrays); the message names the file.
        ImportError: If msgpack is not installed.
        FileNotFoundError: If the path does not exist.
    """
    _import_msgpack()
    where = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_params(source, where)
    path = Path(source)
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ValueError(f"{_NOT_A_CHECKPOINT}: {where} is empty.")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _read_params(mapped, where)
