"""Modbus device simulators that serve a site's devices from recorded data and models."""
