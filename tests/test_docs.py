"""Every code block of README.md and docs/*.md that is meant to run, run as a reader would run it.

Convention (also stated in docs/adding-a-dataset.md, "Code blocks in these documents"):

* A ```python block is exec'd in a fresh namespace (``__name__ == "__main__"``), with the working
  directory a fresh temporary folder. It passes if it raises nothing.
* A ```bash block is run line by line in a fresh temporary folder: ``\\`` continuations are joined,
  ``#`` comments dropped and ``&&`` chains split into commands, each of which must succeed:
  ``python run_bench.py ARGS``, ``lwbench ARGS`` and ``python -m lwbench ARGS`` call
  ``lwbench.cli.main(ARGS)`` in-process and must return 0; ``python -m MODULE ARGS`` and
  ``python SCRIPT.py ARGS`` run in-process through :mod:`runpy` and must exit with 0 (a relative
  SCRIPT that is not in the temporary folder is taken from the repository root); installing
  commands (``pip ...``, ``python -m pip|venv ...``, ``. .venv/bin/activate``, ``source ...``) are
  skipped; ``export NAME=VALUE`` sets a variable for the rest of the block and a leading
  ``NAME=VALUE`` for its command; ``cd DIR`` changes the folder for the rest of the block; any
  other command runs through ``bash -c`` and must exit with 0.
* Paths are relative to the temporary folder, except an argument (or ``NAME=`` value) that starts
  with ``../``: as in the README, it names a sibling of the repository root (``../shared/datasets``)
  and is resolved against the root. A block whose ``../`` path does not exist is skipped. An argument that
  starts with ``results/`` and exists in the repository names the committed results and is resolved against
  the root too in a ``compare`` command, which only reads them (any other command keeps it relative to the
  temporary folder, so that no test writes into the checkout).
* A block whose previous non-blank line is ``<!-- not run: REASON -->`` is skipped with that reason.
  Blocks in any other language (text, console, toml, json, none) are never run.

Every command runs with the isolation of ``tests/conftest.py`` (no downloads, a private cache), and
a python block's registrations (``@register``) are undone afterwards. Test ids are ``FILE:LINE`` of
the opening fence.
"""
from __future__ import annotations

import re
import runpy
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from lwbench import cli

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash")
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int            # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the ``not run`` comment before each, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index].strip())
        if not opening:
            index += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        previous = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = NOT_RUN.fullmatch(previous)
        blocks.append(Block(path, index + 1, language, "\n".join(lines[index + 1:end]) + "\n",
                            marker.group(1) if marker else None))
        index = end + 1
    return blocks


def bash_commands(code: str) -> list[tuple[int, list[str]]]:
    """(line offset in the block, argv) of every command: continuations joined, comments dropped,
    ``&&`` chains split."""
    commands, pending, start = [], "", 0
    for offset, line in enumerate(code.splitlines()):
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        tokens = shlex.split(pending + line, comments=True)
        pending = ""
        command: list[str] = []
        for token in tokens + ["&&"]:
            if token == "&&":
                if command:
                    commands.append((start, command))
                command = []
            else:
                command.append(token)
    return commands


def is_install(argv: list[str]) -> bool:
    if argv[0] in ("pip", "pip3", ".", "source"):
        return True
    return argv[0] in ("python", "python3") and argv[1:3] in (["-m", "pip"], ["-m", "venv"])


def sibling_path(text: str) -> str:
    """``../x`` (or ``NAME=../x``) resolved against the repository root; skip when it does not exist."""
    prefix, _, value = text.rpartition("=") if "=../" in text else ("", "", text)
    if not value.startswith("../"):
        return text
    resolved = (ROOT / value).resolve()
    if not resolved.exists():
        pytest.skip(f"needs {value} next to the repository ({resolved} does not exist)")
    return f"{prefix}{'=' if prefix else ''}{resolved}"


def committed_results_path(text: str, argv: list[str]) -> str:
    """``results/...`` resolved against the root where the repository holds it (the committed results), for a
    ``compare`` command (which only reads them)."""
    reads_only = "compare" in argv
    return str(ROOT / text) if reads_only and text.startswith("results/") and (ROOT / text).exists() else text


def run_python(argv: list[str], cwd: Path) -> int | str | None:
    """``python ...`` in-process: run_bench.py and lwbench through the CLI, others through runpy."""
    args = argv[1:]
    if args[:1] == ["run_bench.py"] or args[:2] == ["-m", "lwbench"]:
        return cli.main(args[1 if args[0] == "run_bench.py" else 2:])
    saved = sys.argv
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # runpy: "found in sys.modules ..."
            if args[0] == "-m":
                sys.argv = [args[1], *args[2:]]
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            else:
                script = cwd / args[0] if (cwd / args[0]).exists() else ROOT / args[0]
                sys.argv = [str(script), *args[1:]]
                runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        return done.code
    finally:
        sys.argv = saved
    return 0


def run_bash(block: Block, cwd: Path, monkeypatch) -> None:
    for offset, argv in bash_commands(block.code):
        where = f"{block.path.name}:{block.line + 1 + offset}: {shlex.join(argv)}"
        argv = [committed_results_path(sibling_path(token), argv) for token in argv]
        if argv[0] == "export":
            for assignment in argv[1:]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, value)
            continue
        if argv[0] == "cd":
            cwd = (cwd / argv[1]).resolve()
            monkeypatch.chdir(cwd)
            continue
        if is_install(argv):
            continue
        environment = {}
        while re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
            name, _, value = argv.pop(0).partition("=")
            environment[name] = value
        with monkeypatch.context() as scoped:
            for name, value in environment.items():
                scoped.setenv(name, value)
            if argv[0] == "lwbench":
                status = cli.main(argv[1:])
            elif argv[0] in ("python", "python3"):
                status = run_python(argv, cwd)
            else:
                status = subprocess.run(["bash", "-c", shlex.join(argv)], cwd=cwd).returncode
        assert status in (0, None), f"{where} exited with {status}"


def run_python_block(block: Block) -> None:
    # Leading newlines put the code at its line in the document, so tracebacks point into it.
    code = compile("\n" * block.line + block.code, str(block.path), "exec")
    exec(code, {"__name__": "__main__"})


def collected() -> list:
    params = []
    for path in DOCUMENTS:
        for block in parse_blocks(path):
            if block.language not in RUNNABLE:
                continue
            marks = []
            if block.skip_reason:
                marks.append(pytest.mark.skip(reason=f"not run: {block.skip_reason}"))
            params.append(pytest.param(block, id=block.id, marks=marks))
    return params


@pytest.mark.parametrize("block", collected())
def test_block(block: Block, tmp_path, monkeypatch, isolated_registry):
    monkeypatch.chdir(tmp_path)
    if block.language == "python":
        run_python_block(block)
    else:
        run_bash(block, tmp_path, monkeypatch)


# --- the harness itself ------------------------------------------------------------------------------

def test_blocks_are_parsed_with_their_lines_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- not run: needs a GPU -->\n\n```bash\nlwbench --list\n```\n"
                    "````text\n```python\n````\n")
    blocks = parse_blocks(page)
    assert [(b.line, b.language, b.skip_reason) for b in blocks] == [
        (3, "python", None), (9, "bash", "needs a GPU"), (12, "text", None)]
    assert blocks[0].code == "x = 1\n"


def test_bash_lines_are_joined_split_and_stripped():
    code = "python run_bench.py --methods ud \\\n    --epochs 1  # a comment\npython3 -m venv .venv && . .venv/bin/activate\n"
    assert bash_commands(code) == [(0, ["python", "run_bench.py", "--methods", "ud", "--epochs", "1"]),
                                   (2, ["python3", "-m", "venv", ".venv"]), (2, [".", ".venv/bin/activate"])]
    assert [is_install(argv) for _, argv in bash_commands(code)] == [False, True, True]


def test_a_failing_command_fails_its_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = Block(ROOT / "README.md", 1, "bash", "lwbench --methods no-such-method --plan\n", None)
    with pytest.raises(AssertionError, match="exited with 2"):
        run_bash(block, tmp_path, monkeypatch)


def test_documents_hold_runnable_blocks():
    """The harness sees the documents (a renamed folder or a broken fence parser would run nothing)."""
    runnable = [b for path in DOCUMENTS for b in parse_blocks(path) if b.language in RUNNABLE]
    assert {b.path.name for b in runnable} >= {"README.md", "adding-a-dataset.md"}
