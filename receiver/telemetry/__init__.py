"""Telemetry: the receiver's events counted as metrics, folded into summary lines and kept as
live statistics; it counts and never decides."""
