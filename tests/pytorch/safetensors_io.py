"""safetensors reader and writer in plain numpy/torch (Debian has no `safetensors` package).

Format (reference/ecosystem.md section 2): 8-byte little-endian header length N, N bytes of
JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end)}, optional "__metadata__"}),
then the byte buffer, little-endian, row-major, fully covered by the tensors. The reader
checks every rule the reference implementation checks, so a malformed file written by the
C++ side fails here with one message naming the file and the tensor, instead of silently
producing wrong numbers. Supported dtypes: F32, F64, BF16, I32, I64.
"""

import json
import os

import numpy as np
import torch

# dtype string -> (little-endian numpy dtype of the stored bytes, torch dtype, alignment)
_DTYPES = {
    "F64": (np.dtype("<f8"), torch.float64, 8),
    "I64": (np.dtype("<i8"), torch.int64, 8),
    "F32": (np.dtype("<f4"), torch.float32, 4),
    "I32": (np.dtype("<i4"), torch.int32, 4),
    "BF16": (np.dtype("<u2"), torch.bfloat16, 2),  # raw bits; converted below
}
_TORCH_TO_NAME = {v[1]: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    """A file that is not valid safetensors, or a dtype we do not handle."""


def _bf16_bits_to_tensor(bits):
    # bf16 is the top half of an f32: widen exactly, then narrow (exact, no rounding).
    f32 = (bits.astype(np.uint32) << 16).view(np.float32)
    return torch.from_numpy(f32).to(torch.bfloat16)


def _tensor_to_bytes(name, t):
    t = t.detach().cpu().contiguous()
    if t.dtype not in _TORCH_TO_NAME:
        raise SafetensorsError(
            f"tensor {name!r}: dtype {t.dtype} is not supported "
            f"(expected one of {sorted(str(d) for d in _TORCH_TO_NAME)})")
    dname = _TORCH_TO_NAME[t.dtype]
    if dname == "BF16":
        arr = t.view(torch.int16).numpy().view(np.uint16).astype("<u2")
    else:
        arr = t.numpy().astype(_DTYPES[dname][0], copy=False)
    return dname, arr.tobytes(order="C")


def write(path, tensors, metadata=None):
    """Writes {name: torch.Tensor} to `path` (atomically, via a temporary file).

    Layout as the reference writer: tensors sorted by alignment (descending) then name, the
    header padded with spaces to a multiple of 8, `__metadata__` = {"format": "pt"} plus any
    string pairs in `metadata`.
    """
    meta = {"format": "pt"}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SafetensorsError(f"{path}: metadata must map str to str, got {k!r}: {v!r}")
        meta[k] = v
    if "__metadata__" in tensors:
        raise SafetensorsError(f"{path}: '__metadata__' is reserved and cannot name a tensor")
    encoded = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise SafetensorsError(f"{path}: tensor {name!r} is a {type(t).__name__}, "
                                   "expected torch.Tensor")
        encoded[name] = (list(t.shape),) + _tensor_to_bytes(name, t)
    order = sorted(encoded, key=lambda n: (-_DTYPES[encoded[n][1]][2], n))
    header = {"__metadata__": meta}
    offset = 0
    for name in order:
        shape, dname, raw = encoded[name]
        header[name] = {"dtype": dname, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(len(hbytes).to_bytes(8, "little"))
        f.write(hbytes)
        for name in order:
            f.write(encoded[name][2])
    os.replace(tmp, path)


def read_with_metadata(path):
    """Returns ({name: torch.Tensor}, metadata dict). Raises SafetensorsError on bad input."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise SafetensorsError(f"{path}: file is {len(data)} bytes, expected at least 8 "
                               "(the header length)")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise SafetensorsError(f"{path}: header length {n} at offset 0 exceeds the file "
                               f"({len(data)} bytes) or the 100 MB limit")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header (bytes 8..{8 + n}) is not UTF-8 JSON: {e}")
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is a JSON {type(header).__name__}, "
                               "expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    buf = memoryview(data)[8 + n:]
    spans = []
    tensors = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: expected keys dtype, shape, data_offsets")
        dname, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dname not in _DTYPES:
            raise SafetensorsError(f"{where}: dtype {dname!r} not supported "
                                   f"(expected one of {sorted(_DTYPES)})")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise SafetensorsError(f"{where}: shape {shape!r} is not a list of sizes")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs) or not 0 <= offs[0] <= offs[1]):
            raise SafetensorsError(f"{where}: data_offsets {offs!r} invalid")
        npdt, tdt, _ = _DTYPES[dname]
        count = int(np.prod(shape, dtype=np.int64))
        if offs[1] - offs[0] != count * npdt.itemsize:
            raise SafetensorsError(
                f"{where}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, shape {shape} "
                f"of {dname} needs {count * npdt.itemsize}")
        if offs[1] > len(buf):
            raise SafetensorsError(f"{where}: data_offsets end {offs[1]} is past the buffer "
                                   f"({len(buf)} bytes)")
        spans.append((offs[0], offs[1], name))
        arr = np.frombuffer(buf[offs[0]:offs[1]], dtype=npdt).reshape(shape)
        if dname == "BF16":
            tensors[name] = _bf16_bits_to_tensor(arr)
        else:
            tensors[name] = torch.from_numpy(arr.astype(npdt.newbyteorder("="), copy=True))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a hole at {pos}"
            raise SafetensorsError(f"{path}: tensor {name!r} at data offset {begin} {what}")
        pos = end
    if pos != len(buf):
        raise SafetensorsError(f"{path}: tensors cover {pos} of {len(buf)} buffer bytes "
                               "(8 + header + buffer end must equal the file size)")
    return tensors, metadata


def read(path):
    """Returns {name: torch.Tensor} (BF16 stays torch.bfloat16)."""
    return read_with_metadata(path)[0]
