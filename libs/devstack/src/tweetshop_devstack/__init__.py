"""Embedded infrastructure (Tansu, Postgres, localstripe), the `make run` supervisor, demo seed, test fixtures."""
