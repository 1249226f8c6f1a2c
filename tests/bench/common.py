"""Shared pieces of the benchmarks: statistics, the machine, result rows, tables, and BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.stack.common import REPO_ROOT

BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- statistics -----------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 50 samples p99 is the largest one."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class Spread:
    """Median and spread of a sample set, in the unit the samples carry."""

    n: int
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    stdev: float

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        return cls(
            n=len(samples),
            p50=statistics.median(samples) if samples else float("nan"),
            p90=percentile(samples, 90),
            p99=percentile(samples, 99),
            min=min(samples) if samples else float("nan"),
            max=max(samples) if samples else float("nan"),
            stdev=statistics.stdev(samples) if len(samples) > 1 else 0.0,
        )

    def text(self, unit: str = "ms", digits: int = 1) -> str:
        f = f"{{:.{digits}f}}"
        return (
            f"p50 {f.format(self.p50)} {unit}, p90 {f.format(self.p90)}, p99 {f.format(self.p99)} "
            f"(min {f.format(self.min)}, max {f.format(self.max)}, sd {f.format(self.stdev)}; n={self.n})"
        )


# --- the machine ----------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def memory_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def machine() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count() or "?"),
        "cpu": cpu_model(),
        "memory": f"{memory_total_gib():.0f} GiB",
        "os": _os_name(),
        "python": platform.python_version(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


# --- process memory -------------------------------------------------------------------------------------


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc/<pid>/status (VmRSS, VmHWM)."""
    values = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in values:
            values[key] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- results --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured number. ``met`` is None when the row has no goal."""

    metric: str
    value: str
    goal: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Result:
    name: str
    title: str
    command: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    load_before: str = field(default_factory=load_average)
    load_after: str = ""
    seconds: float = 0.0

    def add(self, metric: str, value: str, goal: str = "", met: bool | None = None, note: str = "") -> None:
        self.rows.append(Row(metric, value, goal, met, note))
        mark = "" if met is None else ("  [goal met]" if met else "  [GOAL MISSED]")
        goal_text = f"  (goal {goal})" if goal else ""
        say(f"  {metric}: {value}{goal_text}{mark}" + (f"\n[bench]     ({note})" if note else ""))

    def note(self, text: str) -> None:
        self.notes.append(text)
        say(f"  note: {text}")


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**missed**")


def print_table(result: Result) -> None:
    rows = [("Metric", "Value", "Goal", "Met")] + [
        (r.metric, r.value, r.goal, "" if r.met is None else ("yes" if r.met else "NO")) for r in result.rows
    ]
    widths = [min(70, max(len(row[i]) for row in rows)) for i in range(4)]
    print()
    print(f"== {result.title} ==")
    print(f"command: {result.command}")
    print(
        f"started {result.started}; load average (1/5/15 min) before {result.load_before}, after "
        f"{result.load_after}; took {result.seconds:.0f} s"
    )
    for index, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for text in result.notes:
        print(f"  * {text}")
    print(flush=True)


def markdown_section(result: Result) -> str:
    lines = [
        f"<!-- bench:{result.name} -->",
        f"### {result.title}",
        "",
        f"`{result.command}` — {result.started}, took {result.seconds:.0f} s; load average (1/5/15 min) "
        f"{result.load_before} before, {result.load_after} after.",
        "",
        "| Metric | Value | Goal | Met |",
        "|---|---|---|---|",
    ]
    for row in result.rows:
        value = row.value + (f" ({row.note})" if row.note else "")
        lines.append(f"| {row.metric} | {value} | {row.goal} | {_verdict(row.met)} |")
    if result.notes:
        lines.append("")
        lines.extend(f"- {text}" for text in result.notes)
    payload = json.dumps(asdict(result), separators=(",", ":")).replace("--", "\\u002d\\u002d")
    lines += ["", f"<!-- data: {payload} -->", f"<!-- /bench:{result.name} -->"]
    return "\n".join(lines)


SECTION_ORDER = ["latency", "bulk", "calls", "memory", "overhead"]
_SECTION = re.compile(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", re.S)
_NOTES = re.compile(r"<!-- notes -->.*?<!-- /notes -->", re.S)
_DATA = re.compile(r"<!-- data: (.*?) -->")

DEFAULT_NOTES = """<!-- notes -->
## Reading these numbers

Fill in after a run: what limits each number (operator, LiteLLM, Postgres, the load generator sharing the
two cores). This block is kept as is when `--markdown` rewrites the tables.
<!-- /notes -->"""


def _sections(text: str) -> dict[str, str]:
    return {match.group(1): match.group(0) for match in _SECTION.finditer(text)}


def _result_of(section: str) -> dict[str, Any] | None:
    match = _DATA.search(section)
    if not match:
        return None
    try:
        return dict(json.loads(match.group(1)))
    except json.JSONDecodeError:
        return None


def write_markdown(results: list[Result], path: Path = BENCHMARKS_MD) -> None:
    """Rewrite BENCHMARKS.md: sections of the benchmarks just run replace their old ones, the others and
    the hand-written notes block are kept."""
    old = path.read_text() if path.exists() else ""
    sections = _sections(old)
    for result in results:
        sections[result.name] = markdown_section(result)
    notes_match = _NOTES.search(old)
    notes = notes_match.group(0) if notes_match else DEFAULT_NOTES
    info = machine()
    summary = ["| # | Goal | Measured | Met | When |", "|---|---|---|---|---|"]
    number = 0
    for name in SECTION_ORDER:
        data = _result_of(sections.get(name, ""))
        for row in (data or {}).get("rows", []):
            if row.get("met") is None:
                continue
            number += 1
            summary.append(
                f"| {number} | {row['metric']}: {row['goal']} | {row['value']} | {_verdict(row['met'])} "
                f"| {data['started'] if data else ''} |"
            )
    ordered = [sections[n] for n in SECTION_ORDER if n in sections]
    ordered += [s for n, s in sections.items() if n not in SECTION_ORDER]
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Numbers printed by `make bench` (`python -m tests.bench`, package `tests/bench/`) against the "
            "local stack (`python -m tests.stack up`: real kube-apiserver + etcd, real LiteLLM 1.108.7 on "
            "Postgres, "
            "the Bedrock stub, the operator). They are measurements of this machine at that moment, not "
            "timed tests; each section says the command, the date and the load average around the run.",
            "",
            f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}, "
            f"Python {info['python']}; revision {git_revision()}.",
            "",
            "**Noise:** the machine is shared (other jobs ran builds and test suites at the same time), and "
            "the "
            "load generator, the operator, LiteLLM, Postgres, etcd and the apiserver all share the same 2 "
            "cores. Compare load averages before trusting a difference of a few milliseconds.",
            "",
            "## Goals",
            "",
            *summary,
            "",
            notes,
            "",
            "## Results",
            "",
            "\n\n".join(ordered),
            "",
        ]
    )
    path.write_text(text)
    say(f"wrote {path}")


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started
