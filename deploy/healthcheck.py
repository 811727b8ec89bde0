"""Container health probe: exit 0 when the service's GET /healthz (or the URL given) answers 200, else 1.

Used by the image's HEALTHCHECK (liveness, /healthz) and by docker-compose.yml's healthchecks, which pass the
service's /readyz: healthy there means the database and the broker answer (the web app: the four APIs). On a
refusal it prints the status and the start of the answer, which for /readyz names the failing dependency
(``docker inspect`` shows it in the health log). Standard library only on its usual path, so it starts fast and
does not import the service. Usage: ``healthcheck.py [URL]``; without a URL it probes
``http://127.0.0.1:<port>/healthz`` with the port from TWEETSHOP_HTTP_PORT, else the service's contract port
(SERVICE names it), read from the system's declaration (tweetshop_contracts.system, installed in every service
image) only then.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

FALLBACK_PORT = 8000
# How much of a refusal's answer is printed (a /readyz answer names each check in a few hundred bytes).
DETAIL_BYTES = 500


def contract_ports() -> dict[str, int]:
    """Public contract v1 ports by service (each equals the http_port default of that service's settings class)."""
    try:
        from tweetshop_contracts.system import SYSTEM
    except ImportError:  # not a tweetshop image
        return {}
    return SYSTEM.ports()


def default_url(environ: dict[str, str]) -> str:
    """The /healthz URL of the service this container runs."""
    port = environ.get("TWEETSHOP_HTTP_PORT") or str(contract_ports().get(environ.get("SERVICE", ""), FALLBACK_PORT))
    return f"http://127.0.0.1:{port}/healthz"


def check(url: str, timeout: float = 3.0) -> str | None:
    """None when ``url`` answers 200 within ``timeout`` seconds, else why not (status and the answer's start)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"status {response.status}"
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(DETAIL_BYTES).decode("utf-8", "replace").strip()
        except OSError:
            detail = ""
        finally:
            exc.close()
        return f"status {exc.code}" + (f": {detail}" if detail else "")
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer: {getattr(exc, 'reason', exc)}"


def probe(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` answers 200 within ``timeout`` seconds."""
    return check(url, timeout) is None


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else default_url(dict(os.environ))
    problem = check(url)
    if problem is None:
        return 0
    print(f"unhealthy: {url}: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
