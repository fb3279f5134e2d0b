"""`python -m cnnkit ...` (used by torchrun: `torchrun --nproc_per_node 2 -m cnnkit train`)."""

import sys

from cnnkit.cli import main

sys.exit(main())
