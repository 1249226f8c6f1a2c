"""The kubeconfig context's namespace, read without importing the Kubernetes client (fast, offline)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def kubeconfig_path() -> Path:
    return Path((os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")).split(os.pathsep)[0])


def context_namespace(context: str | None = None) -> str:
    """Namespace of the named (or current) context; "default" when there is none or no kubeconfig."""
    try:
        data: Any = yaml.safe_load(kubeconfig_path().read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return "default"
    if not isinstance(data, dict):
        return "default"
    wanted = context or data.get("current-context")
    for entry in data.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name") == wanted:
            return str((entry.get("context") or {}).get("namespace") or "default")
    return "default"
