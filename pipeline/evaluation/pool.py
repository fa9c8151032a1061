"""The one process pool of the evaluation (homes are evaluated in parallel, one per process)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose children are spawned, not forked: a fork copies the locks of polars' (and
    rich's) threads in whatever state they are, and the children can wait on them forever."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
