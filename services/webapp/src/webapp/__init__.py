"""tweetshop buyer web app: pages, static files and a small gateway to the four services."""
