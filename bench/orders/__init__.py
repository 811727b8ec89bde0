"""The orders benchmark: purchases per second through the whole shop, beside a hand-written baseline."""
