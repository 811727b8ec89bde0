"""tweetshop tracking service."""
