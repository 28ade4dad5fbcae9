"""Signals: rollups of telemetry, features, predictive models, account signals and alerts.

Reads telemetry only through SQL (the ``telemetry`` table and the ``usage_daily`` view that
``ingest`` documents) and never imports ``ingest`` or ``nrr``.
"""
