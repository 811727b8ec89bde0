"""Shared fixtures for every test: Kafka, Postgres, Stripe, fresh databases and service processes."""

pytest_plugins = ["tweetshop_devstack.pytest_plugin"]
