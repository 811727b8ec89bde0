"""A stand-in service (stdlib only) for testing how services are started, wired, supervised and stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from tweetshop_devstack.infra import free_port
from tweetshop_devstack.services import ServiceDef

# Answers like a real service: GET /readyz (after a short start-up), and GET /env to show how it was configured.
FAKE_SERVICE_SOURCE = """
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

time.sleep(float(os.environ.get("FAKE_START_DELAY_S", "0.3")))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/readyz":
            body = b'{"status": "ready"}'
        elif self.path == "/env":
            body = json.dumps({k: v for k, v in os.environ.items() if k.startswith("TWEETSHOP_")}).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((os.environ["TWEETSHOP_HTTP_HOST"], int(os.environ["TWEETSHOP_HTTP_PORT"])), Handler)
print("fake service listening on", server.server_address, flush=True)
server.serve_forever()
"""

FAKE_MODULE = "tweetshop_fake_service"


@pytest.fixture
def fake_service(tmp_path: Path) -> ServiceDef:
    """A service definition that runs the stand-in with its own role, Kafka settings and a free port."""
    folder = tmp_path / "fake_service_code"
    folder.mkdir()
    (folder / f"{FAKE_MODULE}.py").write_text(FAKE_SERVICE_SOURCE)
    return ServiceDef("devstack_fake", FAKE_MODULE, free_port(), extra_env={"PYTHONPATH": str(folder)})
