"""`python -m webapp`: run the web app."""

import uvicorn

from .config import WebappSettings
from .main import create_app

settings = WebappSettings()
uvicorn.run(
    create_app(settings),
    host=settings.http_host,
    port=settings.http_port,
    log_config=None,
    access_log=False,
    timeout_graceful_shutdown=10,
    # The buyer's address: trusted_proxies decides (gateway.py), not uvicorn's X-Forwarded-For handling.
    proxy_headers=False,
)
