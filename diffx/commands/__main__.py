"""``python -m diffx.commands ...`` runs the ``diffx`` console script."""

import sys

from diffx.commands.main import main

sys.exit(main())
