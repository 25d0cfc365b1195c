"""Fixtures of the hostile suite: a producer that wants to hurt the fleet (issue 13) against the
real `cfsign worker` binary ($CFSIGN_BIN) and real redis-server processes.

Each test gets its own namespace (below); the keys, redis-servers and workers are the shared
fixtures of ../conftest.py (free 127.0.0.1 ports, killed by pid at teardown, pass or fail), and
the helpers are in ../cfsign_support.py.
"""

from __future__ import annotations

import pytest

from cfsign_support import unique_namespace


@pytest.fixture
def ns(request) -> str:
    """A namespace of this test alone."""
    return unique_namespace(request.node.name, prefix="hostile")
