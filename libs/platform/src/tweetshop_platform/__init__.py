"""The backbone every tweetshop service shares."""
