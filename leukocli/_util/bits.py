"""Bit counts that work on numpy 1.x and 2.x (numpy 2 adds a fast bitwise_count)."""

from __future__ import annotations

import numpy as np

_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_M1, _M2, _M4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(
    0x0F0F0F0F0F0F0F0F
)
_H01 = np.uint64(0x0101010101010101)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each element (any unsigned integer dtype), as int64."""
    x = np.asarray(x)
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(x).astype(np.int64)
    v = x.astype(np.uint64)
    v = v - ((v >> np.uint64(1)) & _M1)
    v = (v & _M2) + ((v >> np.uint64(2)) & _M2)
    v = (v + (v >> np.uint64(4))) & _M4
    return ((v * _H01) >> np.uint64(56)).astype(np.int64)


def popcount_rows(x: np.ndarray) -> np.ndarray:
    """Set bits summed over the last axis of a uint8 array (packed binary descriptors)."""
    return popcount(np.asarray(x, dtype=np.uint8)).sum(-1)
