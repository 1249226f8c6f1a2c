"""Which process burned the CPU: per-component CPU seconds over a time window (the stack records each
component's process group; children such as LiteLLM's Node Prisma engine share their parent's group)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from tests.stack.common import load_pids

TICKS = os.sysconf("SC_CLK_TCK")


def _groups() -> dict[int, dict[str, float]]:
    """Process group -> {command name: CPU seconds (user + system)} for every live process."""
    out: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        pgrp = int(fields[2])
        out[pgrp][comm] += (int(fields[11]) + int(fields[12])) / TICKS
    return out


class CpuMeter:
    """``CpuMeter({pid: "name"})``: start(), then stop() -> {component (command): CPU seconds used}."""

    def __init__(self, extra: dict[int, str] | None = None) -> None:
        self.names = {int(str(e["pid"])): str(e["name"]) for e in load_pids()}
        self.names.update(extra or {})
        self._before: dict[int, dict[str, float]] = {}
        self._self_before = 0.0

    def start(self) -> CpuMeter:
        self._before = _groups()
        times = os.times()
        self._self_before = times.user + times.system
        return self

    def stop(self) -> dict[str, float]:
        after = _groups()
        used: dict[str, float] = {}
        for pgrp, name in self.names.items():
            for comm, seconds in after.get(pgrp, {}).items():
                delta = seconds - self._before.get(pgrp, {}).get(comm, 0.0)
                if delta >= 0.05:
                    label = name if comm in ("python", "python3") or comm == name else f"{name} ({comm})"
                    used[label] = used.get(label, 0.0) + delta
        times = os.times()
        used["bench client"] = times.user + times.system - self._self_before
        return dict(sorted(used.items(), key=lambda item: -item[1]))


def describe(used: dict[str, float], seconds: float) -> str:
    total = sum(used.values())
    parts = ", ".join(f"{name} {value:.1f}" for name, value in used.items() if value >= 0.1)
    return f"{total:.0f} CPU-s in {seconds:.0f} s ({total / max(seconds, 1e-9):.2f} cores busy): {parts}"
