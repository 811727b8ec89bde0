"""The one-shot localstripe-webhook container's script, run for real against localstripe.

Compose's values are used as they are (checkout's key and webhook secret), only
the addresses point at this machine: a webhook localstripe sends after the
registration carries a signature that checkout's secret verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tweetshop_devstack.infra import LOCALHOST, LocalStripe, free_port

ROOT = Path(__file__).resolve().parents[2]
REGISTER_SCRIPT = ROOT / "deploy" / "localstripe" / "register_webhook.py"
SIGNATURE_TOLERANCE_S = 300

ServiceEnvironment = Callable[..., dict[str, str]]
Delivery = tuple[bytes, str]


@pytest.fixture(scope="module")
def localstripe(devstack_tmp_dir: Path) -> Iterator[str]:
    """A private localstripe (its webhooks are global to the instance), in memory."""
    stripe = LocalStripe(
        free_port(), Path(tempfile.mkdtemp(prefix="localstripe-", dir=devstack_tmp_dir)), state_file=None
    )
    stripe.start()
    try:
        yield stripe.base_url
    finally:
        stripe.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[Delivery]]]:
    """A stand-in for checkout's /webhooks/stripe: records each body with its Stripe-Signature header."""
    deliveries: queue.Queue[Delivery] = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            deliveries.put((body, self.headers.get("Stripe-Signature", "")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{LOCALHOST}:{server.server_address[1]}/webhooks/stripe", deliveries
    finally:
        server.shutdown()
        server.server_close()


def run_register_script(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REGISTER_SCRIPT)],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def signature_is_valid(body: bytes, header: str, secret: str) -> bool:
    """Stripe's scheme (what stripe.Webhook.construct_event checks): v1 = HMAC-SHA256(secret, f"{t}.{body}")."""
    fields = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [value for key, value in fields if key == "t"]
    signatures = [value for key, value in fields if key == "v1"]
    if not timestamps or not signatures or abs(time.time() - int(timestamps[0])) > SIGNATURE_TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def test_registered_webhook_is_signed_with_checkouts_secret(
    localstripe: str, receiver: tuple[str, queue.Queue[Delivery]], service_environment: ServiceEnvironment
) -> None:
    url, deliveries = receiver
    hook_env = service_environment("localstripe-webhook")
    checkout_env = service_environment("checkout")
    result = run_register_script(
        {**hook_env, "LOCALSTRIPE_URL": localstripe, "WEBHOOK_URL": url, "WEBHOOK_ID": f"t-{uuid.uuid4().hex[:8]}"}
    )
    assert result.returncode == 0, result.stderr

    # Any write makes localstripe send an event; checkout's default key must be one localstripe accepts.
    request = urllib.request.Request(
        f"{localstripe}/v1/customers",
        data=b"email=buyer%40example.com",
        headers={"Authorization": f"Bearer {checkout_env['TWEETSHOP_STRIPE_API_KEY']}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    body, signature = deliveries.get(timeout=15)
    assert json.loads(body)["type"] == "customer.created"
    assert signature_is_valid(body, signature, checkout_env["TWEETSHOP_STRIPE_WEBHOOK_SECRET"])
    assert not signature_is_valid(body, signature, "whsec_someone_else")


def test_register_script_fails_when_localstripe_refuses_the_webhook(localstripe: str) -> None:
    result = run_register_script(
        {"LOCALSTRIPE_URL": localstripe, "WEBHOOK_URL": "not-a-url", "WEBHOOK_SECRET": "whsec_x", "WEBHOOK_ID": "bad"}
    )
    assert result.returncode == 1
    assert "refused" in result.stderr
