"""`python -m seqbench …` is the `seqbench` command line."""

import sys

from seqbench.bench.cli import main

sys.exit(main())
