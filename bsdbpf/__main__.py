"""``python3 -m bsdbpf``: the command line, :func:`bsdbpf.cli.main`."""

import sys

from bsdbpf.cli import main

sys.exit(main())
