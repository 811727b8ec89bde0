"""Register checkout's Stripe webhook endpoint with localstripe (one-shot; exit 0 once it is registered).

localstripe signs every event it sends to the registered URL with the secret,
as Stripe does; checkout verifies the signature with the same secret
(TWEETSHOP_STRIPE_WEBHOOK_SECRET). Environment: LOCALSTRIPE_URL (default
http://localstripe:8420), WEBHOOK_ID (default tweetshop), WEBHOOK_URL and
WEBHOOK_SECRET (required).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def register(localstripe_url: str, webhook_id: str, url: str, secret: str) -> None:
    """POST /_config/webhooks/{id} with form fields url and secret; raises on any answer but 2xx."""
    body = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
    endpoint = f"{localstripe_url.rstrip('/')}/_config/webhooks/{urllib.parse.quote(webhook_id)}"
    with urllib.request.urlopen(urllib.request.Request(endpoint, data=body, method="POST"), timeout=10):
        pass


def main() -> int:
    localstripe_url = os.environ.get("LOCALSTRIPE_URL", "http://localstripe:8420")
    webhook_id = os.environ.get("WEBHOOK_ID", "tweetshop")
    url = os.environ["WEBHOOK_URL"]
    secret = os.environ["WEBHOOK_SECRET"]
    attempts = 10
    for attempt in range(1, attempts + 1):
        try:
            register(localstripe_url, webhook_id, url, secret)
        except urllib.error.HTTPError as exc:
            print(f"localstripe refused the webhook: {exc.code} {exc.read()[:300]!r}", file=sys.stderr)
            return 1
        except (urllib.error.URLError, OSError) as exc:
            print(f"attempt {attempt}/{attempts}: localstripe not ready: {exc}", file=sys.stderr)
            time.sleep(2)
            continue
        print(f"webhook {webhook_id!r} registered: {url}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
