"""`python -m krnet` and the zipapp entry point."""

from krnet.cli import main

raise SystemExit(main())
