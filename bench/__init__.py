"""Benchmarks of the gateway (issue 3): `python -m bench.gateway [--quick]`."""
