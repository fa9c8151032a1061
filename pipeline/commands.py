"""Subcommands beyond `run`; each registers itself with pipeline.cli."""
