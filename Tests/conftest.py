"""Fixtures every Python suite shares (interop, system, ops, edge, ha, hostile); the shared helpers
themselves are in cfsign_support.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every suite imports the shared helpers as `cfsign_support` (Tests/cfsign_support.py), however
# pytest was started (scripts/test, one suite, one file).
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "cfsign"


@pytest.fixture(scope="session")
def cfsign_bin() -> Path:
    """The cfsign executable: $CFSIGN_BIN, or .build/debug/cfsign of this repository."""
    configured = os.environ.get("CFSIGN_BIN")
    path = Path(configured) if configured else DEFAULT_BIN
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"cfsign binary not found at {path}; run `swift build` in {REPO_ROOT} or set CFSIGN_BIN")
    return path
