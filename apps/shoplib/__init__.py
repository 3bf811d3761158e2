"""What every shop service shares: configuration, logging, telemetry, metrics, faults, errors, SQLite."""
