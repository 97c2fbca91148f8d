"""Every `mra-cir` command line that README.md and docs/*.md print names a command that exists and only options that
command accepts (also under `accelerate launch ... -m mra_cir.cli` and `python examples/train.py`), and every
command's `--help` lists each option once."""

from __future__ import annotations

import importlib
import io
import re
import shlex
from contextlib import redirect_stdout
from functools import cache

import pytest
from conftest import REPO_ROOT

from mra_cir.cli import COMMANDS

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", flags=re.S | re.M)
INVOCATION = re.compile(r"(?:\bmra-cir|-m mra_cir\.cli|\bexamples/train\.py)\s+(.*)")


@cache
def help_text(command: str) -> str:
    module = importlib.import_module(COMMANDS[command][0])
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code in (0, None)
    return out.getvalue()


def command_lines() -> list[tuple[str, str]]:
    """`(page:line, the command line)` for every mra-cir invocation in a shell block (continuations joined)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in SHELL_BLOCK.finditer(text):
            number = text.count("\n", 0, block.start(1)) + 1
            for chunk in re.split(r"(?<!\\)\n", block.group(1)):
                line = chunk.replace("\\\n", " ").split(" #", 1)[0].strip()
                if INVOCATION.search(line) and not line.startswith("#"):
                    found.append((f"{page.relative_to(REPO_ROOT)}:{number}", line))
                number += chunk.count("\n") + 1
    return found


LINES = command_lines()


def test_the_pages_print_commands():
    assert len(LINES) > 20
    assert any(where.startswith("docs/own-images.md") for where, _ in LINES)


@pytest.mark.parametrize("where, line", LINES, ids=[where for where, _ in LINES])
def test_documented_command_exists_with_its_options(where, line):
    rest = shlex.split(INVOCATION.search(line).group(1))
    if "examples/train.py" in line and "mra-cir" not in line and "mra_cir.cli" not in line:
        command, arguments = "train", rest
    else:
        command, arguments = rest[0], rest[1:]
    assert command in COMMANDS, f"{where}: no command {command!r} in `{line}`"
    accepted = set(re.findall(r"(?<![\w-])--[\w-]+", help_text(command)))
    used = {token.split("=", 1)[0] for token in arguments if re.fullmatch(r"--[\w-]+(=.*)?", token)}
    unknown = sorted(used - accepted)
    assert not unknown, f"{where}: `mra-cir {command}` has no option {unknown} (in `{line}`)"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_each_option_once(command):
    for line in help_text(command).splitlines():
        if line.lstrip().startswith("--"):
            flags = re.findall(r"(?<![\w-])--[\w-]+", re.split(r"\s{2,}", line.strip())[0])
            assert len(flags) == len(set(flags)), f"mra-cir {command} --help: {line.strip()}"
