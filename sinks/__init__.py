"""Stores: PostgreSQL/TimescaleDB and SQLite behind one interface, plus a Parquet exporter."""
