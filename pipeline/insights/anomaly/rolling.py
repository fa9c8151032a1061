"""River's exact ``RollingQuantile``, pickled as its window alone.

River keeps the window twice (in arrival order and sorted) in a Rust object that pickles both, as
bincode, with its parameters: 2 x 8 bytes a value plus overhead. The arrival order alone
determines the rest, so this subclass pickles ``(q, window_size, values)`` with the values as one
``array('d')`` and rebuilds River's object on load by feeding them again: the same state, bit for
bit (``tests/test_insights_state.py`` checks the Rust bytes).
"""

from __future__ import annotations

import struct
from array import array

from river import stats

_U64 = struct.Struct("<Q")


class RollingQuantile(stats.RollingQuantile):
    def __getstate__(self):
        return self.q, self.window_size_value, self.values()

    def __setstate__(self, state) -> None:
        q, window_size, values = state
        type(self).__init__(self, q, window_size)
        for x in values:
            self.update(x)

    def values(self) -> array:
        """The window, oldest first."""
        raw = self._rolling_quantile.__getstate__()
        # bincode: the sorted window (u64 length, f64 values), then the window in arrival order.
        (n_sorted,) = _U64.unpack_from(raw, 0)
        at = 8 + 8 * n_sorted
        (n,) = _U64.unpack_from(raw, at)
        return array("d", raw[at + 8:at + 8 + 8 * n])


def compact(quantile: stats.RollingQuantile) -> RollingQuantile:
    """The same statistic as this module's class (a snapshot from before it loads River's own)."""
    if type(quantile) is stats.RollingQuantile:
        quantile.__class__ = RollingQuantile
    return quantile  # type: ignore[return-value]
