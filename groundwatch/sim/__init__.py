"""Device simulators: serve a site's devices from recorded data and models."""
