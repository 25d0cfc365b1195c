"""Fixtures every Python suite shares (interop, system, ops, edge, ha)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
