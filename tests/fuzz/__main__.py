"""``python -m tests.fuzz --many [--count N] [--seed S]`` (see ``many``)."""

import sys

from .many import main

sys.exit(main())
