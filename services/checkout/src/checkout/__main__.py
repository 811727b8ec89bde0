"""`python -m checkout`: run the service."""

from tweetshop_platform.runtime import serve

from .config import CheckoutSettings
from .main import create_app

settings = CheckoutSettings()
serve(create_app(settings), settings)
