"""`make run`, the fixtures and the benchmarks start every service in development mode, with public secrets."""

from __future__ import annotations

import pytest
from tweetshop_devstack import courier_sim
from tweetshop_devstack.services import (
    DEV_STRIPE_API_KEY,
    DEV_STRIPE_WEBHOOK_SECRET,
    SERVICES,
    ServiceDef,
    service_env,
)
from tweetshop_platform.settings import DEV_OPERATOR_KEY, PUBLIC_DEFAULT_SECRETS


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_service_started_by_the_devstack_runs_in_development(service: ServiceDef) -> None:
    env = service_env(
        service,
        http_port=1,
        database_url="postgresql://x@127.0.0.1:1/x",
        kafka_bootstrap="127.0.0.1:1",
        stripe_base_url="http://127.0.0.1:1",
    )
    assert env["TWEETSHOP_ENVIRONMENT"] == "development"


def test_the_development_secrets_are_known_public_so_production_refuses_them() -> None:
    for value in (DEV_STRIPE_API_KEY, DEV_STRIPE_WEBHOOK_SECRET, DEV_OPERATOR_KEY, courier_sim.DEV_OPERATOR_KEY):
        assert value in PUBLIC_DEFAULT_SECRETS, value
