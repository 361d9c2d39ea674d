"""The cloud receiver: ingest gateway batches over MQTT, acknowledge, serve JSON."""
