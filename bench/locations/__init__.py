"""Location ingest benchmark: courier points through tracking against a hand-written asyncpg + aiokafka baseline.

Run it from the repository root: ``python -m bench.locations`` (``--tiny`` for the smoke size).
"""
