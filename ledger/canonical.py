"""Canonical bytes (SPEC §2): every map's keys sorted by their UTF-8 bytes, recursively,
then msgpack with `use_bin_type=True`. Only str, 64-bit int, bool, None, list and map
with str keys are allowed: floats and binary are refused, as are bodies that are too deep
or too large."""
from __future__ import annotations

import threading
from typing import Any

import msgpack

MAX_DEPTH = 16
MAX_ITEMS = 10_000
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


class EncodingError(ValueError):
    """A value that cannot be part of a transaction body."""


def canonical(value: Any, _depth: int = 0, _count: list[int] | None = None) -> Any:
    """A copy of `value` with every map's keys in canonical order; raises EncodingError
    for anything outside the allowed types."""
    if _count is None:
        _count = [0]
    _count[0] += 1
    if _count[0] > MAX_ITEMS:
        raise EncodingError(f"more than {MAX_ITEMS} values")
    if _depth > MAX_DEPTH:
        raise EncodingError(f"nested deeper than {MAX_DEPTH}")
    t = type(value)
    if t is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise EncodingError("strings must be valid Unicode (no lone surrogates)") from None
        return value
    if t is bool or value is None:
        return value
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError("integer outside the signed 64-bit range")
        return value
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise EncodingError("map keys must be strings")
            canonical(k, _depth, _count)   # a key is a string like any other
        # code point order is UTF-8 byte order, so plain sorting is the canonical order
        return {k: canonical(value[k], _depth + 1, _count) for k in sorted(value)}
    if t is list or t is tuple:
        return [canonical(v, _depth + 1, _count) for v in value]
    if t is float:
        raise EncodingError("floats are not allowed (use integers)")
    if t in (bytes, bytearray, memoryview):
        raise EncodingError("binary values are not allowed (use lowercase hex strings)")
    raise EncodingError(f"values of type {t.__name__} are not allowed")


def canonical_bytes(value: Any) -> bytes:
    return msgpack.packb(canonical(value), use_bin_type=True)


def _sort_maps(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return {k: v if type(v) not in _NESTED else _sort_maps(v) for k, v in sorted(value.items())}
    if t is list:
        return [v if type(v) not in _NESTED else _sort_maps(v) for v in value]
    return value


_NESTED = (dict, list)


_local = threading.local()


def trusted_canonical_bytes(value: Any) -> bytes:
    """Canonical bytes of a value built by this program from checked parts (world-state
    records): the same bytes as `canonical_bytes`, without checking every type again
    (and with a packer kept per thread, rather than made per call)."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(_sort_maps(value))


def unpack_strict(data: bytes, max_len: int) -> Any:
    """Decode msgpack from outside: bounded size, str keys only, no binary, no floats
    (checked by `canonical` afterwards), no ext types."""
    if len(data) > max_len:
        raise EncodingError(f"message larger than {max_len} bytes")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                               max_str_len=max_len,
                               max_bin_len=max_len, max_array_len=MAX_ITEMS,
                               max_map_len=MAX_ITEMS, max_ext_len=0)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError) as e:
        raise EncodingError(f"not valid msgpack: {e}") from None
