"""`python -m gyoza_grpc serve`."""

import sys

from gyoza_grpc.cli import main

sys.exit(main())
