"""README.md as a newcomer follows it: every shell block marked ```sh runnable, in order, in one
bash session in a scratch folder, with `cfsign` on PATH the way `scripts/install` puts it there
(a bin folder holding only a `cfsign` link to $CFSIGN_BIN; no `.build` folder on PATH).

The session runs with `set -euo pipefail`, so any command that fails fails the test, naming the
README block it was in. Everything it starts (edge, worker, redis-server) is in its own process
group and is killed at the end, whatever happened.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
TIMEOUT = 180  # seconds for the whole tutorial; it takes a few with a warm machine

FENCE = re.compile(r"^(?P<indent>[ \t]*)```sh runnable[ \t]*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence in README.md
    code: str


def runnable_blocks(text: str) -> list[Block]:
    """The ```sh runnable blocks, dedented (blocks inside list items are indented)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start, body = m.group("indent"), i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        assert i < len(lines), f"README.md line {start}: a runnable block is never closed"
        blocks.append(Block(start, textwrap.dedent("\n".join(body))))
        i += 1
    return blocks


def test_readme_has_runnable_blocks():
    blocks = runnable_blocks(README.read_text())
    assert len(blocks) >= 5, f"README.md marks only {len(blocks)} blocks as ```sh runnable: the tutorial is not tested"


def test_readme_shell_blocks_run_cfsign_by_name_not_from_the_build_folder():
    text = README.read_text()
    blocks = re.findall(r"^[ \t]*```(?:sh|bash)[^\n]*\n(.*?)^[ \t]*```", text, re.S | re.M)
    found = [line.strip() for b in blocks for line in b.splitlines() if ".build/" in line]
    assert not found, f"README.md shell blocks use the build folder; after scripts/install it is plain `cfsign`: {found}"


def _path_without_build_folders() -> str:
    keep = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if p and ".build" not in p]
    return ":".join(keep)


def test_readme_tutorial_runs_top_to_bottom(cfsign_bin, tmp_path):
    blocks = runnable_blocks(README.read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cfsign").symlink_to(cfsign_bin)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    script = ["set -euo pipefail"]
    for n, block in enumerate(blocks, 1):
        script.append(f"printf '\\n==== README.md block {n}, line {block.line}\\n' >&2")
        script.append(block.code)
    script.append("printf '\\n==== README.md: all blocks ran\\n' >&2")

    env = {
        "PATH": f"{bin_dir}:{_path_without_build_folders()}",
        "HOME": str(tmp_path),  # nothing the tutorial does lands in the real home folder
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join(script)], cwd=scratch, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        # The background edge, worker and redis-server share the session's process group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    ran = re.findall(r"==== README\.md block (\d+), line (\d+)", err)
    where = f"README.md block {ran[-1][0]} (line {ran[-1][1]})" if ran else "before the first block"
    logs = ""
    for name in ("worker.log", "edge.log", "redis.log"):
        f = scratch / "cfsign-tutorial" / name
        if f.exists():
            logs += f"\n--- {name} (tail)\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
    detail = f"\n--- stdout (tail)\n{out[-3000:]}\n--- stderr (tail)\n{err[-3000:]}{logs}"
    assert not timed_out, f"the README tutorial did not finish within {TIMEOUT} s; stuck in {where}{detail}"
    assert proc.returncode == 0, f"a README command failed (exit {proc.returncode}) in {where}{detail}"
    assert "all blocks ran" in err, f"the README tutorial stopped early in {where}{detail}"


def test_scripts_readme_lists_every_script():
    listed = (REPO_ROOT / "scripts" / "README.md").read_text()
    scripts = sorted(p.name for p in (REPO_ROOT / "scripts").iterdir() if p.name != "README.md" and not p.name.startswith("."))
    missing = [name for name in scripts if f"`{name}`" not in listed and f"`{name}/`" not in listed]
    assert not missing, f"scripts/README.md does not list {missing}"
