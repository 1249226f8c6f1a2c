"""Shared plumbing for the commands: one-line errors with exit codes, async entry, global options."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import typer

from gateway_operator.cli.errors import CliError
from gateway_operator.cli.output import console

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Options:
    context: str | None = None


def options(ctx: typer.Context) -> Options:
    root = ctx.find_root()
    if isinstance(root.obj, Options):
        return root.obj
    return Options()


def fail(message: str) -> None:
    console(stderr=True).print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)


def handle_errors(function: Callable[P, T]) -> Callable[P, T]:
    """Turn CliError (and Ctrl-C) into one line on stderr and the error's exit code."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except CliError as error:
            fail(_escape(error.line()))
            raise typer.Exit(error.code) from None
        except KeyboardInterrupt:
            fail("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
