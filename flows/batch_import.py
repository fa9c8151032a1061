"""History import: the same windowing and store path as the live flow, fed from a file.

    file batches (already Readings) -> device windows -> home totals -> insights -> store

The file is read in time order by ``pipeline.ingest.tabular``; nothing is late, and at the end of the
file every open window is flushed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.ingest import InsightsSetup, aggregate_and_store
from pipeline.records import Reading
from pipeline.settings import WindowSettings


class _BatchPartition(StatefulSourcePartition):
    def __init__(self, batches: Iterator[list[Reading]], on_batch: Callable[[int], None]) -> None:
        self.batches = batches
        self.on_batch = on_batch

    def next_batch(self) -> list[Reading]:
        batch = next(self.batches)  # StopIteration ends the input
        self.on_batch(len(batch))
        return batch

    def snapshot(self) -> None:
        return None  # an import is re-run from the start; the store ignores what it already has


class ReadingBatchSource(FixedPartitionedSource):
    """A single-partition source over an iterator of reading batches."""

    def __init__(self, make_batches: Callable[[], Iterator[list[Reading]]],
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.make_batches = make_batches
        self.on_batch = on_batch

    def list_parts(self) -> list[str]:
        return ["file"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BatchPartition:
        return _BatchPartition(self.make_batches(), self.on_batch)


def build_import_flow(source: ReadingBatchSource, store_url: str,
                      window: WindowSettings | None = None, meter_home_ids: frozenset[str] = frozenset(),
                      batch_rows: int = 20_000, insights: InsightsSetup | None = None) -> Dataflow:
    # A file is in time order and complete: windows close on event time alone.
    window = (window or WindowSettings()).event_time_only()
    flow = Dataflow("shems_import")
    readings = op.input("file", flow, source)
    aggregate_and_store(
        readings,
        [],
        store_url=store_url,
        window=window,
        meter_home_ids=meter_home_ids,
        flush_on_eof=lambda: True,
        batch_rows=batch_rows,
        flush_interval_s=5.0,
        insights=insights,
    )
    return flow


def run_import(make_batches: Callable[[], Iterator[list[Reading]]], store_url: str,
               on_batch: Callable[[int], None] = lambda n: None,
               window: WindowSettings | None = None,
               meter_home_ids: frozenset[str] = frozenset(),
               insights: InsightsSetup | None = None) -> None:
    from bytewax.testing import run_main

    flow = build_import_flow(ReadingBatchSource(make_batches, on_batch), store_url, window,
                             meter_home_ids, insights=insights)
    run_main(flow)
