"""`python -m tweetshop_cli` is `tweetshop`."""

from .main import main

raise SystemExit(main())
