"""The fleet simulator: a seeded compressed-air installed base, its hourly telemetry, its
commercial records and what really happened in it.

It sits above the feature packages (import-linter: ``basewatch > simulator > {ingest, signals,
nrr} > core``) because what it produces feeds all of them: telemetry and events for ``ingest``
(published over MQTT, or written as the CSV files of ``basewatch import``), contracts, invoices
and exchange rates for ``nrr``, and the ground truth the ``signals`` backtest scores against.
No production service imports it; the composition root (``basewatch``: ``simulate``, ``demo``,
the backtest command) does.

Modules: ``fleet`` (accounts, sites, compressors and their stories), ``physics`` (hourly
readings and events per account), ``commercial`` (contracts, invoices, exchange rates),
``simulate`` (running it, writing CSV, publishing over MQTT), ``publish`` (a device-side MQTT
publisher, also used by tests and benchmarks), ``truth`` (the ``ground_truth`` table this
package's migrations own, and reading it as the backtest's labelled truth).
"""
