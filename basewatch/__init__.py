"""Composition root of basewatch: the CLI, process wiring, the demo.

Only this package imports ``ingest`` (and later ``signals`` and ``nrr``) together; it builds the
one ``Settings`` object and hands each part the values it needs.
"""
