"""`python -m catalog`: run the service."""

from tweetshop_platform.runtime import serve

from .config import CatalogSettings
from .main import create_app

settings = CatalogSettings()
serve(create_app(settings), settings)
