"""Shared kernel of basewatch: settings, database access, migrations, registry, errors.

``core`` imports nothing else of basewatch; ``ingest``, ``signals`` and ``nrr`` build on it and
never on each other.
"""
