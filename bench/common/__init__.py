"""What every benchmark shares: the stack it runs against, the payment stand-in, statistics, results, profiles."""
