"""Groundwater statistics of the USEPA Unified Guidance (2009): pure functions."""
