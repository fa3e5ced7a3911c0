"""`python -m digest_worker`: the same as `digestctl worker`."""

import os
import sys

from digest_worker.app import run

if __name__ == "__main__":
    sys.exit(run(os.environ))
