"""Counter-based randomness of the simulator: uniform numbers as a pure function of
(seed, key, tick) through splitmix64, so a sample's value does not depend on how the run is
cut into blocks or batches, and the same seed gives the same fleet on any machine.

Keys are drawn from disjoint key spaces, one per kind of entity (SITE_KEY + site * 16 + n,
LINK_KEY + link, ...); STATIC_TICK is the fixed "tick" at which static (per-entity)
parameters are drawn.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

U64 = np.uint64
STATIC_TICK = 2**40
SITE_KEY, LINK_KEY, CELL_KEY, HOST_KEY, ROW_KEY = (k << 44 for k in range(1, 6))

# splitmix64's constants: the golden-ratio increment and the two finaliser multipliers.
_GOLDEN_GAMMA = U64(0x9E3779B97F4A7C15)
_MIX_MULTIPLIER_1, _MIX_MULTIPLIER_2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
_SHIFT_27, _SHIFT_30, _SHIFT_31 = U64(27), U64(30), U64(31)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser, element-wise (array arithmetic wraps modulo 2^64 by design)."""
    x = x + _GOLDEN_GAMMA
    x = (x ^ (x >> _SHIFT_30)) * _MIX_MULTIPLIER_1
    x = (x ^ (x >> _SHIFT_27)) * _MIX_MULTIPLIER_2
    return x ^ (x >> _SHIFT_31)


class Noise:
    """Uniform [0, 1) numbers as a pure function of (seed, key, tick)."""

    def __init__(self, seed: int) -> None:
        self._s = int(_mix(np.array([seed], dtype=U64))[0])

    def bits(self, keys: npt.ArrayLike, ticks: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        k = np.asarray(keys, dtype=U64).reshape(-1)
        t = np.asarray(ticks, dtype=np.int64).reshape(-1).astype(U64)
        base = _mix(k ^ U64(self._s))
        return _mix(base[:, None] + t[None, :])

    def u(self, keys: npt.ArrayLike, ticks: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return (self.bits(keys, ticks) >> 11).astype(np.float64) * (1.0 / 2**53)

    def static(self, keys: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.u(keys, [STATIC_TICK])[:, 0]

    def hex(self, *parts: int | str) -> str:
        h = hashlib.sha256(f"{self._s}:{':'.join(map(str, parts))}".encode()).hexdigest()
        return h
