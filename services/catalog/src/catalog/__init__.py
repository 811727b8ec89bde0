"""tweetshop catalog service."""
