"""shems pipeline: domain types, decoding, operators, configuration and the CLI."""
