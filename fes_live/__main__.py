"""`python -m fes_live ...` is `fes-live ...`."""
import sys

from fes_live.stream.cli import main

sys.exit(main())
