"""`python3 -m pbs_activated` is the `pbs-activated` command."""

import sys

from pbs_activated.admin.cli import main

sys.exit(main())
