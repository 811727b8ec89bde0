"""``python -m bench.idle``: see ``bench.idle.run``."""

from bench.idle.run import main

if __name__ == "__main__":
    raise SystemExit(main())
