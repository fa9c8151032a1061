"""How the preset dictionary of packed snapshots (pipeline/insights/packing.py) is made.

The dictionary is what every home's snapshot repeats: the pickles (without their larger arrays)
of the two insights states of one bench home (``pipeline/tools/bench_state.py``: the bundled REFIT
day, five devices, the demo tariff) after eight days, the forecasts state first and the insights
state last (zlib finds the nearer bytes of a dictionary cheaper, and the insights state is
written 60 times as often).

A shipped dictionary is never remade in place: snapshots in recovery directories name theirs. To
ship a better one, write it to a new file, add it to ``packing.DICTIONARIES`` and make it
``CURRENT_DICTIONARY``:

    python -m pipeline.tools.snapshot_dictionary pipeline/data/snapshot_dictionary_v2.bin
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from pathlib import Path

BENCH_HOME = 5
DAYS = 8


def build() -> bytes:
    from pipeline.energy.tariff import book_from_toml
    from pipeline.insights.packing import serialize
    from pipeline.insights.step import HomeInsights, run_both
    from pipeline.tools.bench_state import TARIFFS, TIMEZONE, _sample_day, home_windows

    book = book_from_toml(TARIFFS)
    windows = home_windows(BENCH_HOME, DAYS, _sample_day())
    insights, forecasts = HomeInsights(windows[0].home_id, TIMEZONE), None
    for window in windows:
        _, forecasts = run_both(insights, forecasts, window, book)
    assert forecasts is not None
    return serialize(forecasts.forecaster.__dict__)[0] + serialize(insights.__dict__)[0]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pipeline.tools.snapshot_dictionary OUT_FILE", file=sys.stderr)
        return 2
    data = build()
    Path(argv[0]).write_bytes(data)
    print(f"{argv[0]}: {len(data)} bytes, Adler-32 {zlib.adler32(data):#010x}, "
          f"SHA-256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
