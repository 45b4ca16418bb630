"""Network-namespace labs: a whole cluster on one machine, for `krnet demo` and the tests."""
