"""Benchmarks of tweetshop: how fast a purchase and a location update go, beside the limit of the parts underneath."""
