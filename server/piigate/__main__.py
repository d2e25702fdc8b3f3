"""`python -m piigate` is the `piigate` command."""

from piigate.cli.main import main

raise SystemExit(main())
