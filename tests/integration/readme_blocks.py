"""README.md as data for its doc test: the fenced blocks, the shell commands in them, and a shell session
that runs them one by one the way a reader pastes them (environment carried from one to the next, output
masked so that no key ever reaches a test report)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```([\w-]*)\s*$")
KEY = re.compile(r"sk-[A-Za-z0-9_\-]{4,}")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
# Set by bash itself, not by the commands: not carried from one command to the next.
SHELL_OWN = {"_", "PWD", "OLDPWD", "SHLVL", "README_ENV_OUT"}


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence in README.md

    @property
    def fingerprint(self) -> str:
        """A stable name: the first line; YAML examples share first lines, so theirs take two."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return " / ".join(lines[:2]) if self.lang == "yaml" else (lines[0] if lines else "")

    def __str__(self) -> str:
        return f"README.md:{self.line} ```{self.lang} [{self.fingerprint}]"


def parse_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, start, body = match.group(1), number, []
        elif lang is not None and line.strip() == "```":
            blocks.append(Block(lang, "\n".join(body) + "\n", start))
            lang = None
        elif lang is not None:
            body.append(line)
    if lang is not None:
        raise AssertionError(f"README.md:{start}: fenced block never closed")
    return blocks


def split_commands(text: str) -> list[str]:
    """The commands of a shell block: one a line, joined over `\\` continuations and here-documents;
    comment-only lines dropped."""
    lines = text.splitlines()
    commands: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = [line]
        while command[-1].rstrip().endswith("\\") and i < len(lines):
            command.append(lines[i])
            i += 1
        heredoc = HEREDOC.search(command[0])
        if heredoc:
            while i < len(lines):
                command.append(lines[i])
                i += 1
                if command[-1].strip() == heredoc.group(1):
                    break
            else:
                raise AssertionError(f"here-document {heredoc.group(1)} never closed:\n{text}")
        commands.append("\n".join(command))
    return commands


class Hidden(str):
    """A key value whose repr is masked: pytest prints call arguments in tracebacks and assertion
    explanations, so a key is wrapped before it is passed to any function."""

    def __repr__(self) -> str:
        return "'<masked>'"


@dataclass
class Masker:
    """Replaces every sk-… key and every registered secret value by a placeholder."""

    secrets: set[str] = field(default_factory=set, repr=False)

    def add(self, value: str) -> None:
        if len(value) >= 8:
            self.secrets.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "<masked>")
        return KEY.sub("sk-<masked>", text)


@dataclass(frozen=True)
class Ran:
    command: str
    returncode: int
    stdout: str = field(repr=False)  # may hold a key (`… | base64 -d`): never in a traceback
    stderr: str = field(repr=False)


class CommandFailed(AssertionError):
    pass


@dataclass
class Shell:
    """A reader's terminal: bash in `cwd`, each command a fresh `bash` that inherits the environment the
    previous ones exported (so `export` and `source` carry over, as in one interactive session)."""

    cwd: Path
    env: dict[str, str] = field(repr=False)  # holds keys: never in a traceback
    mask: Masker = field(repr=False)

    def run(
        self,
        command: str,
        *,
        rewrite: Callable[[str], str] | None = None,
        expect_rc: int = 0,
        env_add: dict[str, str] | None = None,
        timeout: float = 150,
    ) -> Ran:
        """Run one command; `env_add` is for this command only (not carried to the next) and shows in
        tracebacks: no secrets in it."""
        shown = command
        if rewrite:
            command = rewrite(command)
        env_out = self.cwd / ".readme-env"
        script = self.cwd / ".readme-command.sh"
        # errexit + pipefail: a failing `kubectl … | base64 -d` fails the command instead of printing "".
        script.write_text(f"trap 'env -0 > \"$README_ENV_OUT\"' EXIT\nset -eo pipefail\n{command}\n")
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", str(script)],
            cwd=self.cwd,
            env={**self.env, **(env_add or {}), "README_ENV_OUT": str(env_out)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if env_out.exists():
            carried = {}
            for item in env_out.read_text().split("\0"):
                key, sep, value = item.partition("=")
                if sep and key not in SHELL_OWN:
                    carried[key] = value
            for key in env_add or {}:
                carried.pop(key, None)
                if key in self.env:
                    carried[key] = self.env[key]
            self.env = carried
            env_out.unlink()
        ran = Ran(shown, result.returncode, result.stdout, result.stderr)
        if result.returncode != expect_rc:
            raise CommandFailed(
                f"exit code {result.returncode} (expected {expect_rc}) from\n  "
                + self.mask(command)
                + f"\n--- stdout\n{self.mask(result.stdout)[-3000:]}"
                + f"\n--- stderr\n{self.mask(result.stderr)[-3000:]}"
            )
        return ran

    def run_block(self, block: Block) -> list[Ran]:
        return [self.run(command) for command in split_commands(block.text)]


def nonempty_env(env: dict[str, str], *names: str) -> dict[str, str]:
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise AssertionError(f"not set after the block: {', '.join(missing)}")
    return {name: env[name] for name in names}


def base_path(repo: Path) -> str:
    return os.pathsep.join([str(repo / "bin"), str(repo / ".venv" / "bin"), os.environ.get("PATH", "")])
