"""`python -m feed`: run the service."""

from tweetshop_platform.runtime import serve

from .config import FeedSettings
from .main import create_app

settings = FeedSettings()
serve(create_app(settings), settings)
