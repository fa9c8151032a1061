"""Unit normalisation at the edge: everything inside is W and Wh."""

from __future__ import annotations


def kwh_to_wh(value: float) -> float:
    return value * 1000.0
