import sys

from stapes.cli import main

sys.exit(main())
