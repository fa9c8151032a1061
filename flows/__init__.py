"""Bytewax dataflows: each reads top to bottom as the data path."""
