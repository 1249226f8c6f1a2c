"""Files the CLI ships inside the package (cli/data/): the CRDs, the standard tiers and the gateway's
LiteLLM config. In the repository they are symlinks to crds/, manifests/tiers.yaml and the chart's
litellm-config.yaml, so there is one source of truth; wheels carry the resolved files."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from gateway_operator.cli.errors import CliError
from gateway_operator.models import GROUP, TIER_KIND


def data_dir() -> Traversable:
    return resources.files("gateway_operator.cli") / "data"


def _read(source: Traversable | Path, what: str) -> str:
    try:
        return source.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError) as error:
        raise CliError(
            f"{what} not found at {source}", fix="reinstall gatewayctl or pass the path explicitly"
        ) from error


def load_crds(crd_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition of our API group in the directory (packaged copy by default)."""
    directory: Traversable | Path = crd_dir if crd_dir is not None else data_dir() / "crds"
    if not directory.is_dir():
        raise CliError(
            f"CRD directory {directory} not found", fix="pass --crds DIR pointing at the crds/ folder"
        )
    crds = []
    for entry in sorted(directory.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(_read(entry, "CRD file")):
            is_crd = isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
            if is_crd and doc.get("spec", {}).get("group") == GROUP:
                crds.append(doc)
    if not crds:
        raise CliError(f"no {GROUP} CustomResourceDefinitions in {directory}", fix="pass --crds DIR")
    return crds


def load_yaml_documents(source: Traversable | Path, what: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(_read(source, what)) if isinstance(doc, dict)]


def standard_tiers() -> list[dict[str, Any]]:
    docs = load_yaml_documents(data_dir() / "tiers.yaml", "standard tiers (manifests/tiers.yaml)")
    return [doc for doc in docs if doc.get("kind") == TIER_KIND]


def gateway_models(config: Path | None = None) -> set[str]:
    """The logical model names the gateway serves (`model_name` entries of the LiteLLM config)."""
    source: Traversable | Path = config if config is not None else data_dir() / "litellm-config.yaml"
    docs = load_yaml_documents(source, "LiteLLM config")
    models: set[str] = set()
    for doc in docs:
        for entry in doc.get("model_list") or []:
            if isinstance(entry, dict) and isinstance(entry.get("model_name"), str):
                models.add(entry["model_name"])
    return models
