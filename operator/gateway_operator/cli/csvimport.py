"""The onboarding CSV (`email,tier,alias`, as in the previous generation's onboard_users.py): parse and
validate every row before anything is applied, and report every problem with its line number."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from gateway_operator.cli.emails import email_problem
from gateway_operator.cli.names import name_for_email, normalize_email

REQUIRED_COLUMNS = ("email", "tier")
OPTIONAL_COLUMNS = ("alias",)
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_ALIAS = 256


@dataclass(frozen=True)
class CsvUser:
    line: int
    email: str
    tier: str
    alias: str | None
    name: str


@dataclass(frozen=True)
class CsvProblem:
    line: int
    reason: str

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: {self.reason}"


@dataclass
class CsvResult:
    users: list[CsvUser] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _decode(data: bytes, result: CsvResult) -> str | None:
    try:
        return data.decode("utf-8-sig")  # strips the BOM spreadsheet exports put in front
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        result.problems.append(
            CsvProblem(line, "not UTF-8 text; save the file as 'CSV UTF-8' and import it again")
        )
        return None


def _header(row: list[str], line: int, result: CsvResult) -> dict[str, int] | None:
    names = [cell.strip().lower() for cell in row]
    if any("@" in cell for cell in names):
        result.problems.append(
            CsvProblem(line, "missing header row; the first line must be 'email,tier,alias'")
        )
        return None
    columns: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in columns:
            result.problems.append(CsvProblem(line, f"column {name!r} appears twice in the header"))
        elif name in KNOWN_COLUMNS:
            columns[name] = index
        elif name:
            result.problems.append(
                CsvProblem(line, f"unknown column {name!r}; the columns are {','.join(KNOWN_COLUMNS)}")
            )
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        result.problems.append(
            CsvProblem(
                line, f"missing column {', '.join(map(repr, missing))} in the header 'email,tier,alias'"
            )
        )
        return None
    return columns


def parse_users_csv(data: bytes, known_tiers: set[str] | None) -> CsvResult:
    """Every row checked; `known_tiers` None skips the tier check (nothing to check against)."""
    result = CsvResult()
    text = _decode(data, result)
    if text is None:
        return result
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: dict[str, int] | None = None
    first_seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            if columns is None:
                columns = _header(row, line, result)
                if columns is None:
                    return result
                continue
            _row(row, line, columns, known_tiers, first_seen, result)
    except csv.Error as error:
        result.problems.append(CsvProblem(reader.line_num, f"malformed CSV: {error}"))
    if columns is None and not result.problems:
        result.problems.append(
            CsvProblem(1, "empty file; expected a header 'email,tier,alias' and one row a user")
        )
    return result


def _row(
    row: list[str],
    line: int,
    columns: dict[str, int],
    known_tiers: set[str] | None,
    first_seen: dict[str, int],
    result: CsvResult,
) -> None:
    width = max(columns.values()) + 1
    if len(row) > width and any(cell.strip() for cell in row[width:]):
        result.problems.append(
            CsvProblem(line, f"{len(row)} fields, expected {width}; quote values that contain commas")
        )
        return
    missing = [name for name, index in columns.items() if index >= len(row) and name in REQUIRED_COLUMNS]
    if missing:
        result.problems.append(CsvProblem(line, f"missing column {', '.join(map(repr, missing))}"))
        return
    email = row[columns["email"]].strip()
    tier = row[columns["tier"]].strip().lower()
    alias_index = columns.get("alias")
    alias = row[alias_index].strip() if alias_index is not None and alias_index < len(row) else ""
    problems_before = len(result.problems)
    problem = email_problem(email)
    if problem:
        result.problems.append(CsvProblem(line, problem))
    if not tier:
        result.problems.append(CsvProblem(line, "tier is empty"))
    elif known_tiers is not None and tier not in known_tiers:
        choices = ", ".join(sorted(known_tiers)) or "none defined"
        result.problems.append(CsvProblem(line, f"unknown tier {tier!r} (known: {choices})"))
    if len(alias) > MAX_ALIAS:
        result.problems.append(CsvProblem(line, f"alias is longer than {MAX_ALIAS} characters"))
    if problem is None:
        key = normalize_email(email)
        if key in first_seen:
            result.problems.append(
                CsvProblem(line, f"duplicate email {email!r} (first on line {first_seen[key]})")
            )
        else:
            first_seen[key] = line
    if len(result.problems) == problems_before:
        result.users.append(CsvUser(line, email, tier, alias or None, name_for_email(email)))
