"""Tests of `cfsign edge` (a package, so this conftest never shadows another suite's `conftest`)."""
