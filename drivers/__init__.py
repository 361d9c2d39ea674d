"""Drivers: Modbus registers to named, typed, quality-flagged values, and back."""
