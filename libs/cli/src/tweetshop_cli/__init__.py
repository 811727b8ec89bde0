"""`tweetshop`: the operator's command line for topics, consumer groups, dead letters and read models."""
