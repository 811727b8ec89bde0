"""`python -m tracking`: run the service."""

from tweetshop_platform.runtime import serve

from .config import TrackingSettings
from .main import create_app

settings = TrackingSettings()
serve(create_app(settings), settings)
