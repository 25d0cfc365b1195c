"""System tests of `cfsign worker` (a package, so this conftest never shadows another suite's `conftest`)."""
