"""Container health probe: exit 0 when the service's GET /healthz answers 200, else 1.

Used by the image's HEALTHCHECK. Standard library only, so it starts fast and
does not import the service. Usage: ``healthcheck.py [URL]``; without a URL it
probes ``http://127.0.0.1:<port>/healthz`` with the port from
TWEETSHOP_HTTP_PORT, else the service's contract port (SERVICE names it).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# Public contract v1 ports; each equals the http_port default of that service's settings class.
CONTRACT_PORTS: dict[str, int] = {"catalog": 8001, "feed": 8002, "checkout": 8003, "tracking": 8004, "webapp": 8000}


def default_url(environ: dict[str, str]) -> str:
    """The /healthz URL of the service this container runs."""
    port = environ.get("TWEETSHOP_HTTP_PORT") or str(CONTRACT_PORTS.get(environ.get("SERVICE", ""), 8000))
    return f"http://127.0.0.1:{port}/healthz"


def probe(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else default_url(dict(os.environ))
    if probe(url):
        return 0
    print(f"unhealthy: {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
