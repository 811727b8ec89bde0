"""The stack at rest: what the four services and the broker burn while nothing happens (``python -m bench.idle``)."""
