"""ops/footprint: what every cfsign process carries. The worker shares its executable with the edge
and the admin commands, so a library one of them links is mapped into every worker."""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_the_executable_links_no_libcurl(cfsign_bin: Path):
    # URLSession on Linux is FoundationNetworking over libcurl and GnuTLS: about 4 MB of each
    # worker's RSS (issue 17's limit is 40 MB under load). The edge's origin client is
    # AsyncHTTPClient instead (Sources/CFSignEdge/OriginBackend.swift).
    linked = subprocess.run(["ldd", str(cfsign_bin)], capture_output=True, text=True, check=True).stdout
    for library in ("libFoundationNetworking", "libcurl", "libgnutls"):
        assert library not in linked, f"{cfsign_bin} links {library}:\n{linked}"
