"""`python -m piigate_dev` is the `piigate-dev` command."""

from piigate_dev.cli import main

raise SystemExit(main())
