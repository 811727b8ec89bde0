"""tweetshop feed service."""
