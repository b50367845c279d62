"""``python -m himnet ...`` (and ``torchrun --nproc_per_node K -m himnet train ...``)."""

import sys

from himnet.cli import main

sys.exit(main())
