"""``python -m mo_align.hub`` = ``mo-align push``."""

import sys

from mo_align.hub.push import main


sys.exit(main())
