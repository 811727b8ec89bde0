"""Our localstripe wrapper: the official Stripe library works against it, and it never writes the shared pickle."""

from __future__ import annotations

import uuid
from pathlib import Path

import stripe
from tweetshop_devstack.infra import LocalStripe, free_port

SHARED_PICKLE = Path("/tmp/localstripe.pickle")


def shared_pickle_mentions(marker: str) -> bool:
    # Other localstripe instances on this machine may write the shared file: look for our own data, not its mtime.
    try:
        return marker.encode() in SHARED_PICKLE.read_bytes()
    except FileNotFoundError:
        return False


def client_for(base_url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_devstack", base_addresses={"api": base_url}, max_network_retries=0)


def test_payment_intents_are_served_in_memory_without_touching_the_shared_pickle(tmp_path: Path) -> None:
    marker = f"devstack-{uuid.uuid4().hex}"
    server = LocalStripe(free_port(), tmp_path / "logs", state_file=None)
    server.start()
    try:
        client = client_for(server.base_url)
        intent = client.v1.payment_intents.create(
            params={
                "amount": 1234,
                "currency": "eur",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"marker": marker},
            }
        )
        fetched = client.v1.payment_intents.retrieve(intent.id)
    finally:
        server.stop()

    assert intent.status == "succeeded"
    assert (fetched.id, fetched.amount, fetched.currency) == (intent.id, 1234, "eur")
    assert fetched.metadata["marker"] == marker
    assert not shared_pickle_mentions(marker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_a_state_file_keeps_payment_intents_across_restarts(tmp_path: Path) -> None:
    marker = f"devstack-{uuid.uuid4().hex}"
    state_file = tmp_path / "localstripe.pickle"
    port = free_port()
    server = LocalStripe(port, tmp_path / "logs", state_file=state_file)
    server.start()
    try:
        intent = client_for(server.base_url).v1.payment_intents.create(
            params={"amount": 500, "currency": "eur", "metadata": {"marker": marker}}
        )
    finally:
        server.stop()

    restarted = LocalStripe(port, tmp_path / "logs", state_file=state_file)
    restarted.start()
    try:
        fetched = client_for(restarted.base_url).v1.payment_intents.retrieve(intent.id)
    finally:
        restarted.stop()

    assert (fetched.id, fetched.amount, fetched.metadata["marker"]) == (intent.id, 500, marker)
    assert marker.encode() in state_file.read_bytes()
    assert not shared_pickle_mentions(marker)
