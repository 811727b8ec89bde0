"""The five HTTP apps as their processes build them, for the OpenAPI contract tests (no database, broker or network).

``create_app`` only wires routes: nothing connects until the lifespan starts, so each document can be read, and
requests that are refused before any handler runs (401, 413, 422) can be sent, in-process.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

APPS = ("catalog", "feed", "checkout", "tracking", "webapp")
OPERATOR_KEY = "contract-tests-operator-key-0123456789abcdef"


@pytest.fixture(scope="session")
def apps() -> Iterator[dict[str, FastAPI]]:
    """``{"catalog": app, ...}``: each built from its own ``create_app`` with development settings only.

    The environment is set only while the apps are built (their settings are read then) and restored before any
    test runs: services that later tests start as processes inherit this process's environment (a session-long
    operator key here made every later operator call 403)."""
    with pytest.MonkeyPatch.context() as env:
        for key in list(os.environ):
            if key.upper().startswith("TWEETSHOP_"):
                env.delenv(key)
        env.setenv("TWEETSHOP_ENVIRONMENT", "development")
        env.setenv("TWEETSHOP_OPERATOR_KEY", OPERATOR_KEY)
        env.setenv("TWEETSHOP_LOG_FORMAT", "console")
        built = {name: importlib.import_module(f"{name}.main").create_app() for name in APPS}
    yield built
