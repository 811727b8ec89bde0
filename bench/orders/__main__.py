"""`python -m bench.orders [--tiny]`: run the orders benchmark."""

import sys

from bench.orders.run import main

sys.exit(main())
