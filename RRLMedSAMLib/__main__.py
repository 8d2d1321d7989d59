"""``python -m RRLMedSAMLib`` entry point."""

import sys

from RRLMedSAMLib.cli import main

if __name__ == "__main__":
    sys.exit(main())
