"""`python -m piigate` is the `piigate` command."""

from piigate.cli import main

raise SystemExit(main())
