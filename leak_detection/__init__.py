"""Leak detection: pure computations on data (no I/O), used by the gateway and cloud."""
