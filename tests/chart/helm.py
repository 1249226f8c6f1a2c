"""Rendering the chart with the real, pinned helm (bin/helm from `make tools`) for the chart tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.stack.common import REPO_ROOT

CHART = REPO_ROOT / "charts" / "llm-gateway"
HELM = REPO_ROOT / "bin" / "helm"
KUBECTL = REPO_ROOT / "bin" / "kubectl"
RELEASE = "gw"
NAMESPACE = "llm-gateway"

# The value sets every check runs over: name -> values files (on top of the chart's values.yaml).
VALUE_SETS: dict[str, tuple[Path, ...]] = {
    "default": (REPO_ROOT / "tests" / "chart" / "values" / "default.yaml",),
    "production": (REPO_ROOT / "tests" / "chart" / "values" / "production.yaml",),
    "kind": (REPO_ROOT / "tests" / "kind" / "values.yaml",),
}

Doc = dict[str, Any]


class HelmFailed(AssertionError):
    pass


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run `make tools`")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise HelmFailed(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def _value_args(files: Sequence[Path], sets: Mapping[str, str] | None) -> list[str]:
    args: list[str] = []
    for path in files:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def template_text(
    files: Sequence[Path], sets: Mapping[str, str] | None = None, *, include_crds: bool = False
) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *_value_args(files, sets)]
    if include_crds:
        args.append("--include-crds")
    return helm(*args).stdout


def template_error(files: Sequence[Path], sets: Mapping[str, str] | None = None) -> str:
    """Render values that must be rejected; returns helm's error text (fails if helm accepted them)."""
    result = helm("template", RELEASE, str(CHART), *_value_args(files, sets), check=False)
    if result.returncode == 0:
        raise AssertionError(f"helm accepted values it must reject: {dict(sets or {})}")
    return result.stderr


@dataclass(frozen=True)
class Rendered:
    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> Doc:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, (
            f"expected one {kind} named *{name_suffix}, found {[d['metadata']['name'] for d in found]}"
        )
        return found[0]

    def pod_specs(self) -> Iterator[tuple[str, Doc]]:
        """(object name, pod spec) of every workload: Deployments, Jobs, bare Pods."""
        for doc in self.docs:
            kind = doc["kind"]
            if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield f"{kind}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
            elif kind == "Pod":
                yield f"Pod/{doc['metadata']['name']}", doc["spec"]

    def containers(self) -> Iterator[tuple[str, Doc, Doc]]:
        """(object/container name, container, its pod spec) of every container and init container."""
        for owner, spec in self.pod_specs():
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield f"{owner}/{container['name']}", container, spec


class StrictLoader(yaml.SafeLoader):
    """YAML as the apiserver's decoder reads it: a key defined twice in a mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse(text: str) -> Rendered:
    return Rendered([doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc])


def render(
    files: Sequence[Path], sets: Mapping[str, str] | None = None, *, include_crds: bool = False
) -> Rendered:
    return parse(template_text(files, sets, include_crds=include_crds))


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}
