"""Rows rendered as a Rich table, JSON or CSV (stdlib csv), one code path for every list command."""

from __future__ import annotations

import csv
import enum
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    render: Callable[[Any], str] = str
    justify: str = "left"


def console(stderr: bool = False) -> Console:
    # Generous width when not a terminal (CI logs, pipes) so tables do not wrap mid-cell.
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 200, highlight=False)


def _cell(column: Column, value: Any) -> str:
    return "-" if value is None else column.render(value)


def emit(
    rows: Sequence[dict[str, Any]], columns: Sequence[Column], fmt: Format, title: str | None = None
) -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(list(rows), indent=2, ensure_ascii=False, default=str) + "\n")
        return
    if fmt is Format.csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=[c.key for c in columns], extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({c.key: "" if row.get(c.key) is None else row.get(c.key) for c in columns})
        return
    table = Table(title=title, show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in columns:
        table.add_column(column.header, justify=column.justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*[_cell(column, row.get(column.key)) for column in columns])
    console().print(table)


def money(value: Any) -> str:
    amount = float(value)
    if 0 < abs(amount) < 0.01:  # a few test calls cost fractions of a cent; do not show them as $0.00
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def ready(value: Any) -> str:
    return {True: "True", False: "False"}.get(value, str(value))
