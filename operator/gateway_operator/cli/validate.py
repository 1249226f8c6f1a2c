"""Offline validation of GatewayTier / GatewayUser manifests, as the API server would judge them plus the
checks that span objects.

Per document: apiVersion/kind known to the CRDs, metadata.name, the CRD's openAPIV3Schema (jsonschema,
after translating the Kubernetes extensions), unknown fields (kubectl's strict field validation), and
every `x-kubernetes-validations` CEL rule. Across documents: a user's tier exists (in the set, or in the
cluster when asked), e-mails and object names are unique, tiers only use models the gateway serves.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from gateway_operator.cli import cel
from gateway_operator.cli.names import is_dns1123_label, is_dns1123_subdomain, normalize_email
from gateway_operator.models import GROUP, TIER_KIND, USER_KIND

FieldPath = list[str | int]
Severity = Literal["error", "warning"]


def format_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass(frozen=True)
class Finding:
    source: str
    doc: int | None
    ref: str
    field: str
    reason: str
    severity: Severity = "error"
    line: int | None = None

    def format(self) -> str:
        location = self.source if self.doc is None else f"{self.source}:{self.doc}"
        parts = [location, self.ref or "-", self.field or "-", self.reason]
        text = ": ".join(parts)
        return text if self.severity == "error" else f"{text} (warning)"

    def github(self) -> str:
        where = f"file={self.source}" + (f",line={self.line}" if self.line else "")
        level = "error" if self.severity == "error" else "warning"
        message = f"{self.ref}: {self.field}: {self.reason}".replace("%", "%25").replace("\n", "%0A")
        return f"::{level} {where}::{message}"


@dataclass
class Document:
    source: str
    index: int
    obj: Any
    node: yaml.Node | None = None

    @property
    def ref(self) -> str:
        if not isinstance(self.obj, dict):
            return "-"
        meta = self.obj.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        kind = self.obj.get("kind", "?")
        name = meta.get("name", "<no name>")
        return f"{kind}/{meta['namespace']}/{name}" if meta.get("namespace") else f"{kind}/{name}"

    def line_of(self, path: FieldPath) -> int | None:
        """1-based line of the field (or of its nearest existing parent) in the source file."""
        node = self.node
        if node is None:
            return None
        for part in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                child = next((value for key, value in node.value if key.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node = child
        return node.start_mark.line + 1


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    documents: int = 0
    files: int = 0
    tiers: int = 0
    users: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]


# ---------------------------------------------------------------- loading


SKIPPED_DIRS = {"node_modules", "__pycache__"}


def iter_manifest_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files given, and the *.yaml / *.yml under the folders given (hidden folders such as .git or
    .venv, and node_modules, skipped)."""
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            inner = found.relative_to(path).parts[:-1]
            if any(part.startswith(".") or part in SKIPPED_DIRS for part in inner):
                continue
            if found.suffix in (".yaml", ".yml") and found.is_file():
                yield found


def load_documents(path: Path, report: Report, display: str | None = None) -> list[Document]:
    source = display or str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        report.findings.append(Finding(source, None, "-", "-", "file not found"))
        return []
    except (OSError, UnicodeDecodeError) as error:
        report.findings.append(Finding(source, None, "-", "-", f"cannot read: {error}"))
        return []
    return parse_documents(text, source, report)


def parse_documents(text: str, source: str, report: Report) -> list[Document]:
    loader = yaml.SafeLoader(text)
    documents: list[Document] = []
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            obj = loader.construct_document(node) if node is not None else None
            if obj is not None:
                documents.append(Document(source, index, obj, node))
            index += 1
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        where = f" at line {line}" if line else ""
        # Folders of a GitOps repository also hold templates (Helm) and other tools' files that are not plain
        # YAML: only a non-template file that mentions our API group is an error.
        severity: Severity = "error" if GROUP in text and "{{" not in text else "warning"
        report.findings.append(
            Finding(source, index, "-", "-", f"invalid YAML{where}: {problem}", severity, line=line)
        )
    finally:
        loader.dispose()
    return documents


# ---------------------------------------------------------------- schema


def _kube_to_jsonschema(schema: Any) -> Any:
    """OpenAPI v3 with Kubernetes extensions -> something jsonschema's Draft 4 validator judges alike."""
    if isinstance(schema, list):
        return [_kube_to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: _kube_to_jsonschema(value) for key, value in schema.items() if key != "x-kubernetes-validations"
    }
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@dataclass
class KindSchema:
    kind: str
    namespaced: bool
    versions: dict[str, dict[str, Any]]  # version -> openAPIV3Schema

    def validator(self, version: str) -> jsonschema.Draft4Validator:
        schema = _kube_to_jsonschema(self.versions[version])
        return jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def schemas_from_crds(crds: list[dict[str, Any]]) -> dict[str, KindSchema]:
    kinds: dict[str, KindSchema] = {}
    for crd in crds:
        spec = crd.get("spec", {})
        kind = spec.get("names", {}).get("kind")
        if not kind:
            continue
        versions = {
            v["name"]: v.get("schema", {}).get("openAPIV3Schema", {})
            for v in spec.get("versions", [])
            if v.get("served", True)
        }
        kinds[kind] = KindSchema(kind, spec.get("scope", "Namespaced") == "Namespaced", versions)
    return kinds


def _schema_message(error: jsonschema.ValidationError) -> tuple[FieldPath, str]:
    path: FieldPath = list(error.absolute_path)
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        return [*path, missing], "required field is missing"
    if error.validator == "type":
        return path, f"must be of type {error.validator_value}, got {error.instance!r}"
    if error.validator == "enum":
        allowed = error.validator_value
        choices = ", ".join(map(str, allowed)) if isinstance(allowed, list) else str(allowed)
        return path, f"unsupported value {error.instance!r}: must be one of {choices}"
    if error.validator == "pattern":
        return path, f"invalid value {error.instance!r}: must match {error.validator_value}"
    limit = error.validator_value
    bounds = {
        "minimum": f"must be greater than or equal to {limit}",
        "maximum": f"must be less than or equal to {limit}",
        "minItems": f"must have at least {limit} item(s)",
        "maxItems": f"must have at most {limit} item(s)",
        "minLength": f"must be at least {limit} character(s) long",
        "maxLength": f"must be at most {limit} character(s) long",
    }
    if error.validator in bounds:
        return path, f"invalid value {error.instance!r}: {bounds[str(error.validator)]}"
    if error.validator == "format":
        return path, f"invalid value {error.instance!r}: not a valid {error.validator_value}"
    return path, error.message


def _unknown_fields(value: Any, schema: dict[str, Any], path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                yield from _unknown_fields(item, properties[key], [*path, key])
            elif isinstance(additional, dict):
                yield from _unknown_fields(item, additional, [*path, key])
            elif properties is not None and additional is not True:
                yield [*path, key], "unknown field (the API server rejects it with --validate=strict)"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], [*path, index])


def _cel_rules(
    value: Any, schema: dict[str, Any], path: FieldPath
) -> Iterator[tuple[FieldPath, str, Severity]]:
    if not isinstance(schema, dict) or value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        if cel.is_transition_rule(rule):
            continue
        outcome = cel.evaluate_rule(rule, value, schema)
        if outcome.passed:
            continue
        rule_path = list(path)
        field_path = rule.get("fieldPath")
        if isinstance(field_path, str) and field_path.startswith("."):
            rule_path += [part for part in field_path[1:].split(".") if part]
        yield rule_path, outcome.message, ("error" if outcome.checkable else "warning")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key) or (additional if isinstance(additional, dict) else None)
            if sub is not None:
                yield from _cel_rules(item, sub, [*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _cel_rules(item, schema["items"], [*path, index])


# ---------------------------------------------------------------- the validator


@dataclass
class Validator:
    schemas: dict[str, KindSchema]
    gateway_models: set[str] | None = None  # None: unknown, skip the model check
    cluster_tiers: set[str] | None = None  # None: do not look at the cluster
    report: Report = field(default_factory=Report)
    _validators: dict[tuple[str, str], jsonschema.Draft4Validator] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        self.report.findings.append(finding)

    def _finding(self, doc: Document, path: FieldPath, reason: str, severity: Severity = "error") -> None:
        self.add(
            Finding(doc.source, doc.index, doc.ref, format_path(path), reason, severity, doc.line_of(path))
        )

    def check_document(self, doc: Document) -> bool:
        """Single-document checks; True when the document is one of ours (tier or user)."""
        self.report.documents += 1
        obj = doc.obj
        api_version = obj.get("apiVersion") if isinstance(obj, dict) else None
        if not isinstance(api_version, str) or api_version.rpartition("/")[0] != GROUP:
            return False  # not ours (other kinds, values files, ...): somebody else's to check
        version = api_version.rpartition("/")[2]
        if not isinstance(obj.get("kind"), str):
            self._finding(doc, ["kind"], "required field is missing")
            return False
        kind = obj["kind"]
        schema = self.schemas.get(kind)
        if schema is None:
            known = ", ".join(sorted(self.schemas))
            self._finding(doc, ["kind"], f"unknown kind {kind!r} in {GROUP} (known: {known})")
            return False
        if version not in schema.versions:
            self._finding(
                doc, ["apiVersion"], f"{api_version} is not served; use {GROUP}/{next(iter(schema.versions))}"
            )
            return False
        self._check_metadata(doc, schema)
        self._check_schema(doc, schema, version)
        return True

    def _check_metadata(self, doc: Document, schema: KindSchema) -> None:
        meta = doc.obj.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            self._finding(doc, ["metadata", "name"], "required field is missing")
            return
        name = meta["name"]
        if not isinstance(name, str) or not is_dns1123_subdomain(name):
            self._finding(
                doc,
                ["metadata", "name"],
                f"invalid name {name!r}: lowercase letters, digits, '-' and '.' only",
            )
        namespace = meta.get("namespace")
        if namespace is not None and not schema.namespaced:
            self._finding(
                doc,
                ["metadata", "namespace"],
                f"{schema.kind} is cluster-scoped; namespace is ignored",
                "warning",
            )
        elif namespace is not None and (not isinstance(namespace, str) or not is_dns1123_label(namespace)):
            self._finding(doc, ["metadata", "namespace"], f"invalid namespace {namespace!r}")

    def _check_schema(self, doc: Document, schema: KindSchema, version: str) -> None:
        obj = copy.deepcopy(doc.obj)
        obj.pop("status", None)  # the status subresource: ignored on create/apply
        key = (schema.kind, version)
        if key not in self._validators:
            self._validators[key] = schema.validator(version)
        openapi = schema.versions[version]
        problems: list[tuple[FieldPath, str]] = [
            _schema_message(error) for error in self._validators[key].iter_errors(obj)
        ]
        problems += list(_unknown_fields({k: v for k, v in obj.items() if k != "metadata"}, openapi, []))
        for path, reason in sorted(problems, key=lambda item: format_path(item[0])):
            self._finding(doc, path, reason)
        if problems:
            return  # CEL rules assume a structurally valid object, as in the API server
        for path, reason, severity in _cel_rules(obj, openapi, []):
            self._finding(doc, path, reason, severity)

    def check_set(self, docs: list[Document]) -> None:
        """Cross-object checks over every tier and user of the whole set."""
        tiers = [d for d in docs if _kind(d) == TIER_KIND]
        users = [d for d in docs if _kind(d) == USER_KIND]
        self.report.tiers += len(tiers)
        self.report.users += len(users)
        self._duplicates(tiers + users)
        tier_names = {_name(d) for d in tiers}
        for doc in users:
            self._user_tier(doc, tier_names)
        self._duplicate_emails(users)
        if self.gateway_models is not None:
            for doc in tiers:
                self._tier_models(doc)

    def _duplicates(self, docs: list[Document]) -> None:
        seen: dict[tuple[str, str | None, str], Document] = {}
        for doc in docs:
            meta = doc.obj.get("metadata") or {}
            key = (_kind(doc), meta.get("namespace") if _kind(doc) == USER_KIND else None, _name(doc))
            if key in seen:
                first = seen[key]
                self._finding(
                    doc, ["metadata", "name"], f"defined twice (also in {first.source}:{first.index})"
                )
            else:
                seen[key] = doc

    def _user_tier(self, doc: Document, tier_names: set[str]) -> None:
        tier = (doc.obj.get("spec") or {}).get("tier")
        if not isinstance(tier, str) or not tier:
            return  # the schema check reported it
        if tier in tier_names or (self.cluster_tiers is not None and tier in self.cluster_tiers):
            return
        where = "these files or the cluster" if self.cluster_tiers is not None else "these files"
        known = sorted(tier_names | (self.cluster_tiers or set()))
        hint = f" (known: {', '.join(known)})" if known else ""
        fix = "" if self.cluster_tiers is not None else "; add its GatewayTier or pass --cluster"
        self._finding(doc, ["spec", "tier"], f"tier {tier!r} is not defined in {where}{hint}{fix}")

    def _duplicate_emails(self, users: list[Document]) -> None:
        seen: dict[str, Document] = {}
        for doc in users:
            email = (doc.obj.get("spec") or {}).get("email")
            if not isinstance(email, str) or not email:
                continue
            key = normalize_email(email)
            if key in seen:
                first = seen[key]
                self._finding(
                    doc,
                    ["spec", "email"],
                    f"duplicate email {email!r}: also used by {first.ref} ({first.source}:{first.index})",
                )
            else:
                seen[key] = doc

    def _tier_models(self, doc: Document) -> None:
        models = (doc.obj.get("spec") or {}).get("models")
        if not isinstance(models, list):
            return
        assert self.gateway_models is not None
        served = ", ".join(sorted(self.gateway_models))
        for index, model in enumerate(models):
            if isinstance(model, str) and model not in self.gateway_models:
                self._finding(
                    doc,
                    ["spec", "models", index],
                    f"model {model!r} is not served by the gateway (served: {served})",
                )


def _kind(doc: Document) -> str:
    return str(doc.obj.get("kind", "")) if isinstance(doc.obj, dict) else ""


def _name(doc: Document) -> str:
    meta = doc.obj.get("metadata") if isinstance(doc.obj, dict) else None
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


def validate_documents(validator: Validator, docs: list[Document]) -> Report:
    ours = [doc for doc in docs if validator.check_document(doc)]
    validator.check_set(ours)
    return validator.report


def validate_paths(validator: Validator, paths: Iterable[Path]) -> Report:
    docs: list[Document] = []
    seen: set[Path] = set()
    for path in iter_manifest_files(paths):
        if path.exists():
            real = path.resolve()
            if real in seen:
                continue  # the same file through a symlink
            seen.add(real)
        validator.report.files += 1
        docs.extend(load_documents(path, validator.report))
    return validate_documents(validator, docs)
