"""MQTT and file ingest of machine telemetry and events into the database.

Layers, bottom up: ``topics`` and ``decode`` (pure: bytes in, values or reasons out),
``messages`` (pure: a decoded message, and a batch routed against the asset owners),
``store`` (owners from the registry and batched writes: COPY with an idempotent fallback),
``consumer`` (the paho-mqtt loop that acks only what is committed), ``deadletters``. The fleet
simulator that feeds it lives in the ``simulator`` package, above this one.
"""
