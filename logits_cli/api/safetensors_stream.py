"""Reading and writing safetensors files one tensor at a time, dtype-agnostic.

A conversion that only renames, slices along the first axis and repeats tensors is byte
copying: the safetensors layout is a JSON header then each tensor's C-ordered bytes, so an
expert's slice of a stacked tensor is a contiguous byte range. Nothing here holds more than
one tensor in memory (the ``safetensors`` package's writer needs them all at once, and its
numpy reader knows no bfloat16).
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from logits_cli.errors import IntegrityError, UsageError

ITEM_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2}
ITEM_SIZES |= {"F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
FLUSH_BYTES = 8 << 20
MAX_PENDING_CHUNKS = 512  # under IOV_MAX (1024) per pwritev


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute, in the file
    nbytes: int

    def slice_of_first_axis(self, index: int) -> TensorInfo:
        """The bytes of ``tensor[index]`` (a view: no copy)."""
        count = self.shape[0]
        step = self.nbytes // count if count else 0
        return TensorInfo(self.name, self.dtype, self.shape[1:], self.offset + index * step, step)


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Every tensor's place in the file, checked against the file's size; and the metadata."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(8)
            if len(head) != 8:
                raise IntegrityError(f"{path} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise IntegrityError(f"{path} is not a safetensors file (bad header length)")
            raw = file.read(length)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        header: dict[str, Any] = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{path} is not a safetensors file (header is not JSON)") from None
    data_start = 8 + length
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            item = ITEM_SIZES[dtype]
            expected = prod(int(n) for n in shape) * item
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"{path}: tensor {name!r} has a malformed entry") from None
        if end - begin != expected or begin < 0 or data_start + end > size:
            raise IntegrityError(f"{path}: tensor {name!r} lies outside the file")
        tensors[name] = TensorInfo(name, dtype, tuple(shape), data_start + begin, expected)
    return tensors, {str(k): str(v) for k, v in dict(metadata).items()}


def converted(data: bytes, source: str, target: str) -> bytes:
    """``data`` (``source`` dtype) as ``target``: BF16, F16, F32; BF16 rounds to nearest even,
    as torch does."""
    if source == target:
        return data
    if source == "BF16":
        wide = np.frombuffer(data, dtype="<u2").astype("<u4") << 16
        values = wide.view("<f4")
    elif source in ("F16", "F32"):
        values = np.frombuffer(data, dtype="<f2" if source == "F16" else "<f4").astype("<f4")
    else:
        raise UsageError(f"cannot convert {source} tensors to another dtype")
    if target == "F32":
        return bytes(values.tobytes())
    if target == "F16":
        return bytes(values.astype("<f2").tobytes())
    bits = values.view("<u4")
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype("<u2")
    rounded[np.isnan(values)] = 0x7FC0
    return bytes(rounded.tobytes())


@dataclass(frozen=True)
class OutputTensor:
    name: str
    source: TensorInfo  # the bytes to copy
    dtype: str  # written as

    @property
    def nbytes(self) -> int:
        return self.source.nbytes // ITEM_SIZES[self.source.dtype] * ITEM_SIZES[self.dtype]


def header_bytes(tensors: list[OutputTensor], metadata: dict[str, str]) -> bytes:
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.source.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-aligned, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw


def _tensor_bytes(source: BinaryIO, tensor: OutputTensor) -> Iterator[bytes]:
    data = os.pread(source.fileno(), tensor.source.nbytes, tensor.source.offset)
    if len(data) != tensor.source.nbytes:
        raise IntegrityError(f"{tensor.source.name}: the source file is shorter than its header")
    yield converted(data, tensor.source.dtype, tensor.dtype)


def write_chunks(fd: int, chunks: list[bytes], offset: int) -> None:
    """``chunks`` back to back at ``offset`` in one ``pwritev`` when the kernel takes them
    all (it usually does; diskio's pwrite_all cuts writes into small pieces, which for an
    MoE export of gigabytes meant 200 000 system calls)."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    while views:
        written = os.pwritev(fd, views, offset)
        if written <= 0:
            raise OSError(errno.EIO, "the file accepted no bytes")
        offset += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views and written:
            views[0] = views[0][written:]


def write_safetensors(
    source_path: Path, destination: Path, tensors: list[OutputTensor], metadata: dict[str, str]
) -> int:
    """Write ``tensors`` (copied from ``source_path``) into the new file ``destination``,
    synced; returns its size. Tensors are gathered into ~8 MiB vectored writes (no joining
    copy): an MoE export is tens of thousands of small per-expert tensors."""
    offset = 0
    with source_path.open("rb") as source:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            pending: list[bytes] = [header_bytes(tensors, metadata)]
            pending_size = len(pending[0])
            for tensor in tensors:
                for chunk in _tensor_bytes(source, tensor):
                    pending.append(chunk)
                    pending_size += len(chunk)
                if pending_size >= FLUSH_BYTES or len(pending) >= MAX_PENDING_CHUNKS:
                    write_chunks(fd, pending, offset)
                    offset += pending_size
                    pending, pending_size = [], 0
            write_chunks(fd, pending, offset)
            offset += pending_size
            os.fsync(fd)
        finally:
            os.close(fd)
    return offset
