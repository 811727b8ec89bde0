"""`python -m bench.drop [--tiny]`: run the drop benchmark."""

import sys

from bench.drop.run import main

sys.exit(main())
