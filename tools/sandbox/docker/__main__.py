"""``python -m tools.sandbox.docker``: build the sandbox image (if missing) and print its tag.

The entry point of :func:`tools.sandbox.docker.image.main` (``infra/dockerd.sh`` runs it).
"""

import sys

from tools.sandbox.docker.image import main

if __name__ == "__main__":
    sys.exit(main())
