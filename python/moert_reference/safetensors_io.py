"""Reading and writing the safetensors container (reference doc §1).

File layout::

    [u64 little-endian N][N bytes of UTF-8 JSON header][data buffer]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets"}``
(offsets relative to the start of the data buffer) and may carry a
``"__metadata__"`` string-to-string map.  The writer here reproduces the
reference writer: compact JSON, ``__metadata__`` first, tensors ordered by
descending dtype alignment (ties in the reference writer's dtype order), then
by name, laid out contiguously from offset 0, and the header padded with
spaces to a multiple of 8 bytes.

The reader validates the header the way the reference reader does (size
limit, unique names, exact tiling of the data buffer, byte size of every
entry) and returns NumPy arrays.  A sharded checkpoint
(``model.safetensors.index.json``) is read with :func:`read_checkpoint`.
"""

import json
import os
import struct

import numpy as np

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - only the BF16/FP8 paths need it
    ml_dtypes = None


MAX_HEADER_SIZE = 100_000_000
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Element size in bytes of every dtype string (§1 table).
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "F64": 8, "I64": 8, "U64": 8,
}

# Order of the reference writer's dtype enumeration; the writer sorts by this
# rank, highest first, which puts larger alignments first.
_DTYPE_RANK = [
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "F64", "I64", "U64",
]

_PLAIN_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "U64": np.dtype("<u8"),
}


def numpy_dtype(dtype_str):
    """Return the NumPy dtype that holds elements of ``dtype_str`` in memory.

    BF16 and the FP8 formats map to the ``ml_dtypes`` types (§1 table).
    """
    if dtype_str in _PLAIN_NUMPY:
        return _PLAIN_NUMPY[dtype_str]
    if ml_dtypes is None:
        raise ImportError("ml_dtypes is required for dtype " + dtype_str)
    special = {
        "BF16": ml_dtypes.bfloat16,
        "F8_E4M3": ml_dtypes.float8_e4m3fn,
        "F8_E5M2": ml_dtypes.float8_e5m2,
    }
    if dtype_str not in special:
        raise ValueError("unsupported safetensors dtype: " + dtype_str)
    return np.dtype(special[dtype_str])


def to_storage(dtype_str, array):
    """Convert ``array`` to the element type of ``dtype_str``.

    Float inputs are rounded to nearest-even by NumPy / ml_dtypes; an array
    already of the target type is returned unchanged (so raw FP8 or BF16
    values can be written bit-exactly).
    """
    target = numpy_dtype(dtype_str)
    array = np.asarray(array)
    if array.dtype != target:
        array = array.astype(target)
    return np.asarray(array, order="C")


def _tensor_bytes(dtype_str, stored):
    """Little-endian C-order bytes of an array already in storage type."""
    size = DTYPE_SIZES[dtype_str]
    if size == 1:
        return stored.view(np.uint8).tobytes(order="C")
    bits = stored.view(np.dtype("u%d" % size))
    return bits.astype(np.dtype("<u%d" % size)).tobytes(order="C")


def writer_order(entries):
    """Return tensor names in the order the reference writer lays them out.

    ``entries`` maps name -> dtype string.  Descending dtype rank (which is
    descending alignment), then ascending name (§1).
    """
    return sorted(entries, key=lambda n: (-_DTYPE_RANK.index(entries[n]), n))


def write_safetensors(path, tensors, metadata=None):
    """Write ``tensors`` (name -> (dtype string, array)) to ``path``.

    Follows §1 exactly: 8-byte little-endian header length, compact JSON
    header with ``__metadata__`` first (if given), entries in writer order
    with contiguous ``data_offsets`` starting at 0, header padded with spaces
    to a multiple of 8.  Returns the number of data bytes written.
    """
    stored = {}
    for name, (dtype_str, array) in tensors.items():
        if dtype_str not in DTYPE_SIZES:
            raise ValueError("unsupported safetensors dtype: " + dtype_str)
        stored[name] = (dtype_str, to_storage(dtype_str, array))

    order = writer_order({n: d for n, (d, _) in stored.items()})
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v)
                                  for k, v in sorted(metadata.items())}
    chunks = []
    offset = 0
    for name in order:
        dtype_str, array = stored[name]
        data = _tensor_bytes(dtype_str, array)
        header[name] = {
            "dtype": dtype_str,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)

    header_bytes = json.dumps(header, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for data in chunks:
            f.write(data)
    return offset


def _no_duplicate_keys(pairs):
    """JSON object hook that rejects repeated names (§1: names are unique)."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key in safetensors header: " + key)
        result[key] = value
    return result


def read_header(path):
    """Read and validate the header of a safetensors file (§1).

    Returns ``(entries, metadata, data_start)`` where ``entries`` maps name
    -> ``{"dtype", "shape", "data_offsets"}``, ``metadata`` is the
    ``__metadata__`` map (or None) and ``data_start`` is ``8 + N``.
    Raises ValueError on any violation of the rules in §1.
    """
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(path + ": shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_SIZE:
            raise ValueError(path + ": header length %d too large" % n)
        if 8 + n > file_size:
            raise ValueError(path + ": header runs past the end of the file")
        raw = f.read(n)
    header = json.loads(raw.decode("utf-8"),
                        object_pairs_hook=_no_duplicate_keys)
    if not isinstance(header, dict):
        raise ValueError(path + ": header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in metadata.items()):
            raise ValueError(path + ": __metadata__ must map str to str")

    buffer_len = file_size - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError("%s: entry %s is not an object" % (path, name))
        dtype_str = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if dtype_str not in DTYPE_SIZES:
            raise ValueError("%s: tensor %s has unknown dtype %r"
                             % (path, name, dtype_str))
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError("%s: tensor %s has a bad shape" % (path, name))
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or offsets[0] > offsets[1]):
            raise ValueError("%s: tensor %s has bad data_offsets"
                             % (path, name))
        expected = int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZES[dtype_str]
        if offsets[1] - offsets[0] != expected:
            raise ValueError("%s: tensor %s spans %d bytes, expected %d"
                             % (path, name, offsets[1] - offsets[0], expected))
        spans.append((offsets[0], offsets[1], name))

    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ValueError("%s: tensor %s starts at %d, expected %d"
                             % (path, name, begin, position))
        position = end
    if position != buffer_len:
        raise ValueError("%s: tensors cover %d bytes of a %d-byte buffer"
                         % (path, position, buffer_len))
    return header, metadata, 8 + n


def read_safetensors_typed(path):
    """Read every tensor of ``path`` in its stored element type.

    Returns name -> (dtype string, array); BF16 and FP8 arrays use the
    ``ml_dtypes`` types, so no value is altered.
    """
    entries, _, data_start = read_header(path)
    with open(path, "rb") as f:
        f.seek(data_start)
        buffer = f.read()
    result = {}
    for name, info in entries.items():
        dtype_str = info["dtype"]
        begin, end = info["data_offsets"]
        size = DTYPE_SIZES[dtype_str]
        raw = buffer[begin:end]
        if size == 1:
            bits = np.frombuffer(raw, dtype=np.uint8)
        else:
            bits = np.frombuffer(raw, dtype=np.dtype("<u%d" % size))
            bits = bits.astype(np.dtype("u%d" % size))
        array = bits.view(numpy_dtype(dtype_str)).reshape(info["shape"])
        result[name] = (dtype_str, array.copy())
    return result


def widen(dtype_str, array):
    """Return ``array`` with BF16 / FP8 values widened exactly to float32."""
    if dtype_str in ("BF16", "F8_E4M3", "F8_E5M2"):
        return array.astype(np.float32)
    return array


def read_safetensors(path):
    """Read every tensor of ``path`` as NumPy arrays (§1).

    BF16, F8_E4M3 and F8_E5M2 tensors are returned as float32 holding the
    exact stored values; other dtypes keep their own NumPy type.
    """
    return {name: widen(d, a)
            for name, (d, a) in read_safetensors_typed(path).items()}


def read_index(directory):
    """Return the parsed ``model.safetensors.index.json`` or None (§1)."""
    path = os.path.join(directory, INDEX_FILE)
    if not os.path.exists(path):
        return None
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def read_checkpoint_typed(directory):
    """Read all tensors of a checkpoint directory in their stored types.

    Uses ``model.safetensors.index.json`` when present (every tensor must
    come from the shard its ``weight_map`` names, and every tensor in a shard
    must be listed), else ``model.safetensors``.  Returns name ->
    (dtype string, array).
    """
    index = read_index(directory)
    if index is None:
        return read_safetensors_typed(os.path.join(directory, SINGLE_FILE))
    weight_map = index["weight_map"]
    result = {}
    for shard in sorted(set(weight_map.values())):
        tensors = read_safetensors_typed(os.path.join(directory, shard))
        for name, value in tensors.items():
            if weight_map.get(name) != shard:
                raise ValueError("%s: tensor %s is not mapped to this shard"
                                 % (shard, name))
            result[name] = value
    missing = sorted(set(weight_map) - set(result))
    if missing:
        raise ValueError("index names tensors missing from their shards: "
                         + ", ".join(missing[:5]))
    return result


def read_checkpoint(directory):
    """Read all tensors of a (possibly sharded) checkpoint directory.

    Same value conventions as :func:`read_safetensors`.
    """
    return {name: widen(d, a)
            for name, (d, a) in read_checkpoint_typed(directory).items()}
