"""`python -m webapp`: run the web app."""

from tweetshop_platform.http import run_uvicorn

from .config import WebappSettings
from .main import create_app

settings = WebappSettings()
run_uvicorn(create_app(settings), settings.http_host, settings.http_port)
