"""`python -m krnet` and the zipapp entry point."""

from krnet.boot import main

raise SystemExit(main())
