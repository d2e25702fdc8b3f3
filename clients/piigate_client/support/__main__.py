"""`python -m piigate_client.support`: the same as the `piigate-support` script."""

import sys

from piigate_client.support.main import main

sys.exit(main())
