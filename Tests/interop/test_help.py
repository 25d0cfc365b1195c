"""Every `--help` reads well at 80 columns (issue 20): discussions are written one line per
paragraph so swift-argument-parser wraps them once, and every example line under `Examples:` is
indented by 2 (a continuation by more) and short enough that the parser never splits it, so it
pastes as shown. Commands are found from the root help's SUBCOMMANDS, recursively.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

WIDTH = 80


def render(cfsign_bin, path: list[str], columns: int) -> str:
    env = dict(os.environ, COLUMNS=str(columns))
    done = subprocess.run([str(cfsign_bin), *path, "--help"], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0, f"cfsign {' '.join(path)} --help exited {done.returncode}: {done.stderr}"
    return done.stdout


def subcommands(help_text: str) -> list[str]:
    """The names listed under SUBCOMMANDS: (the `help` pseudo-command left out)."""
    names = []
    inside = False
    for line in help_text.splitlines():
        if line.startswith("SUBCOMMANDS:"):
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            m = re.match(r"^  ([a-z][a-z0-9-]*)(\s{2,}|$)", line)
            if m and m.group(1) != "help":
                names.append(m.group(1))
    return names


def all_commands(cfsign_bin) -> list[list[str]]:
    found, todo = [], [[]]
    while todo:
        path = todo.pop(0)
        if path in found or len(path) > 3:
            continue
        found.append(path)
        todo += [path + [name] for name in subcommands(render(cfsign_bin, path, 200))]
    return found


def overview(help_text: str) -> list[str]:
    """The OVERVIEW section's lines: the abstract and the discussion, up to USAGE:."""
    lines = help_text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("USAGE:"))
    return lines[:end]


def examples(lines: list[str]) -> list[str]:
    """The lines after `Examples:` up to the next blank line."""
    if "Examples:" not in lines:
        return []
    start = lines.index("Examples:") + 1
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    return block


@pytest.fixture(scope="module")
def commands(cfsign_bin):
    paths = all_commands(cfsign_bin)
    names = {" ".join(p) for p in paths}
    for expected in ("sign", "sign-batch", "keys generate", "worker", "keygroup set", "keygroup rotate", "status", "request", "verify", "edge"):
        assert expected in names, f"cfsign {expected} is missing from the help's SUBCOMMANDS: {sorted(names)}"
    return paths


def test_no_help_line_is_wider_than_80_columns(cfsign_bin, commands):
    for path in commands:
        text = render(cfsign_bin, path, WIDTH)
        wide = [line for line in text.splitlines() if len(line) > WIDTH]
        assert not wide, f"cfsign {' '.join(path)} --help at COLUMNS=80 has lines over 80 columns: {wide}"


def test_every_command_with_a_discussion_shows_examples(cfsign_bin, commands):
    for path in commands:
        lines = overview(render(cfsign_bin, path, 1000))
        if len([line for line in lines if line.strip()]) > 1:  # more than the abstract
            assert examples(lines), f"cfsign {' '.join(path)} --help has a discussion but no `Examples:` block"


def test_example_lines_are_indented_and_never_split_at_80_columns(cfsign_bin, commands):
    for path in commands:
        wide = examples(overview(render(cfsign_bin, path, 1000)))
        narrow = examples(overview(render(cfsign_bin, path, WIDTH)))
        name = f"cfsign {' '.join(path)} --help"
        assert narrow == wide, f"{name}: the parser split an example at 80 columns:\n" + "\n".join(narrow)
        for i, line in enumerate(wide):
            assert line.startswith("  "), f"{name}: example line not indented by 2: {line!r}"
            assert len(line) < 78, f"{name}: example line of {len(line)} columns (under 78 needed): {line!r}"
            if i > 0 and wide[i - 1].endswith("\\"):
                assert line.startswith("    "), f"{name}: a continuation line is not indented under its command: {line!r}"


def test_discussions_are_one_line_per_paragraph(cfsign_bin, commands):
    # At a width nothing needs wrapping, a hard-wrapped paragraph shows as two unindented lines
    # in a row; list items and examples are indented under their heading line.
    for path in commands:
        lines = [line for line in overview(render(cfsign_bin, path, 1000))]
        for a, b in zip(lines, lines[1:]):
            if a.strip() and b.strip() and not b.startswith(" "):
                pytest.fail(f"cfsign {' '.join(path)} --help: a paragraph is hard-wrapped in the source:\n{a}\n{b}")
