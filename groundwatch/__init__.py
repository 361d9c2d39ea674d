"""groundwatch: soil and groundwater leak monitoring from Modbus sensor to regulator."""

__version__ = "0.1.0"
