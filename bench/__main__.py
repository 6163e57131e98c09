import sys

from seqbench.bench.cli import main

sys.exit(main())
