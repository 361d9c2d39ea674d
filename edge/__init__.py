"""The gateway: polls Modbus devices, decides alarms locally, stores, and syncs."""
