"""``python -m bench.locations``: see bench/locations/run.py."""

from bench.locations.run import main

raise SystemExit(main())
