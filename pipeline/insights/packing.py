"""A home's state as a recovery snapshot: pickled, with its arrays byte-shuffled, compressed.

Most of a home's state is fixed-width numbers in ``array`` columns (slot histories, hourly rings,
conformal scores, quantile windows). Pickled as they are they cost their full width; compressed
they shrink by a half to nine tenths (empty slots, zero hours of an appliance, small integers).
Byte-shuffling an array first (all first bytes of its items, then all second bytes, ...) puts the
slowly varying sign and exponent bytes of floats side by side, which zlib compresses better (the
same trick as Blosc and HDF5's shuffle filter). The rest of the state (small objects, dicts of
the last minutes) is pickled normally and compressed in the same stream.

The compressor starts from a preset dictionary shared by the fleet: the pickle of a home's state
is mostly the same class names, attribute names and small numbers in every home, about 5 KB of a
20 KB snapshot when compressed alone. The dictionary (``pipeline/data/snapshot_dictionary_*.bin``,
made by ``pipeline/tools/snapshot_dictionary.py`` from a bench home's states) is read once per
process. A zlib stream names its dictionary by the Adler-32 of its bytes, so a snapshot says which
one it needs: a new dictionary is a new file beside the old ones, never an edit of one (the
snapshots in a recovery directory would no longer open). Snapshots packed before the dictionary
have none and still open.

Lossless: ``unpack(pack(x))`` holds the same numbers bit for bit. Pure (no I/O but reading the
dictionary file once).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zlib
from array import array
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

_MIN_BYTES = 64  # smaller arrays stay in the pickle: their shuffle would cost more than it saves
_HEADER = struct.Struct("<BI")  # format version, length of the pickle
_VERSION = 1
LEVEL = 6  # zlib: 1 is 20 % larger for half the time; 9 saves under 1 % more

_DATA = Path(__file__).resolve().parents[1] / "data"
# Each dictionary ever shipped, by the Adler-32 a zlib stream names it by: its file and SHA-256.
DICTIONARIES: dict[int, tuple[str, str]] = {
    0x5BA11196: ("snapshot_dictionary_v1.bin", "e5f4f2b679f9718ea3d7186c5adb59c006021a9feccee77f68a10e18b33f65ea"),
}
CURRENT_DICTIONARY = 0x5BA11196  # the one new snapshots are packed with


@cache
def dictionary(adler32: int) -> bytes:
    """The preset dictionary a snapshot names, checked against its recorded SHA-256."""
    if adler32 not in DICTIONARIES:
        raise ValueError(f"this snapshot needs a compression dictionary this version does not have "
                         f"(Adler-32 {adler32:#010x})")
    name, sha256 = DICTIONARIES[adler32]
    data = (_DATA / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256 or zlib.adler32(data) != adler32:
        raise ValueError(f"{_DATA / name} is not the dictionary snapshots were packed with (edited?)")
    return data


def _shuffled(a: array) -> bytes:
    return np.frombuffer(a, dtype=np.uint8).reshape(-1, a.itemsize).T.tobytes()


def _unshuffled(typecode: str, n: int, raw: memoryview) -> array:
    size = array(typecode).itemsize
    out = array(typecode)
    out.frombytes(np.frombuffer(raw, dtype=np.uint8).reshape(size, n).T.tobytes())
    return out


def serialize(obj: Any) -> tuple[bytes, list[bytes]]:
    """The pickle of ``obj`` without its larger arrays, and those arrays byte-shuffled."""
    chunks: list[bytes] = []
    index: dict[int, int] = {}  # id -> number: an array referenced twice is restored once

    def persistent_id(o: Any) -> tuple[int, str, int] | None:
        if type(o) is not array or len(o) * o.itemsize < _MIN_BYTES:
            return None
        number = index.get(id(o))
        if number is None:
            number = index[id(o)] = len(chunks)
            chunks.append(_shuffled(o))
        return number, o.typecode, len(o)

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(obj)
    return buffer.getvalue(), chunks


def pack(obj: Any) -> bytes:
    head, chunks = serialize(obj)
    compressor = zlib.compressobj(LEVEL, zdict=dictionary(CURRENT_DICTIONARY))
    return compressor.compress(b"".join([_HEADER.pack(_VERSION, len(head)), head, *chunks])) + compressor.flush()


def _decompressed(blob: bytes) -> bytes:
    if len(blob) >= 6 and blob[1] & 0x20:  # FDICT: a preset dictionary, named by its Adler-32
        decompressor = zlib.decompressobj(zdict=dictionary(int.from_bytes(blob[2:6], "big")))
        body = decompressor.decompress(blob) + decompressor.flush()
        if not decompressor.eof:
            raise ValueError("a packed state is cut short")
        return body
    return zlib.decompress(blob)


def unpack(blob: bytes) -> Any:
    body = memoryview(_decompressed(blob))
    version, head_len = _HEADER.unpack_from(body)
    if version != _VERSION:
        raise ValueError(f"unknown packed state version {version}")
    start = _HEADER.size + head_len
    restored: dict[int, array] = {}
    offsets: list[int] = [start]  # where the next chunk starts (chunks come in first-use order)

    def persistent_load(pid: tuple[int, str, int]) -> array:
        number, typecode, n = pid
        found = restored.get(number)
        if found is None:
            at = offsets[-1]
            end = at + n * array(typecode).itemsize
            found = restored[number] = _unshuffled(typecode, n, body[at:end])
            offsets.append(end)
        return found

    unpickler = pickle.Unpickler(io.BytesIO(body[_HEADER.size:start]))
    unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    return unpickler.load()
