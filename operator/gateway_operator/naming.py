"""Deterministic names shared by the operator and gatewayctl. Changing any of these orphans existing
LiteLLM objects, so they are part of the product's contract."""

from __future__ import annotations

import hashlib

from gateway_operator.models import MANAGED_BY

TEAM_ID_PREFIX = "llmgw-tier-"
KEY_ALIAS_PREFIX = "llmgw."
# ':' cannot appear in a Kubernetes name, so a retired alias never equals a live one.
RETIRED_SUFFIX = ":retired"
SECRET_SUFFIX = "-llm-key"
KEY_PREFIX = "sk-"
KEY_ID_LENGTH = 12

# Secret data keys (an app can envFrom the Secret and use the OpenAI SDK as is).
SECRET_API_KEY = "api-key"
SECRET_BASE_URL = "base-url"
SECRET_OPENAI_API_KEY = "OPENAI_API_KEY"
SECRET_OPENAI_BASE_URL = "OPENAI_BASE_URL"
# During a rotation's grace period: the key that was replaced (still valid until the annotation's time).
SECRET_PREVIOUS_API_KEY = "previous-api-key"
# Between the first and the last step of a rotation: the next key, minted but not yet the live one.
SECRET_PENDING_API_KEY = "pending-api-key"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "llmgateway.io/component"
ANNOTATION_USER = "llmgateway.io/gateway-user"
ANNOTATION_KEY_ALIAS = "llmgateway.io/key-alias"
FINALIZER = "llmgateway.io/finalizer"


def team_id(tier_name: str) -> str:
    return f"{TEAM_ID_PREFIX}{tier_name}"


def tier_from_team_id(value: str) -> str | None:
    return value[len(TEAM_ID_PREFIX) :] if value.startswith(TEAM_ID_PREFIX) else None


def key_alias(namespace: str, name: str) -> str:
    """`llmgw.<namespace>.<name>`: namespaces have no dots, so the first dot after the prefix splits
    unambiguously (a dash would not: a-b/c and a/b-c would collide)."""
    return f"{KEY_ALIAS_PREFIX}{namespace}.{name}"


def retired_alias(alias: str, key_id: str | None = None) -> str:
    """Alias of a replaced key. Without ``key_id``: the one-off alias of a key revoked at once (lost
    Secret). With it: a key rotated out and still in its grace period; one alias per old key, so
    renaming is idempotent and several rotations can overlap."""
    return f"{alias}{RETIRED_SUFFIX}" if key_id is None else f"{alias}{RETIRED_SUFFIX}-{key_id}"


def is_retired_alias(alias: str | None) -> bool:
    return bool(alias) and str(alias).startswith(KEY_ALIAS_PREFIX) and RETIRED_SUFFIX in str(alias)


def parse_key_alias(alias: str) -> tuple[str, str] | None:
    """(namespace, name) of a live alias we made, None for anything else (including retired aliases)."""
    if not alias.startswith(KEY_ALIAS_PREFIX) or RETIRED_SUFFIX in alias:
        return None
    namespace, dot, name = alias[len(KEY_ALIAS_PREFIX) :].partition(".")
    if not dot or not namespace or not name:
        return None
    return namespace, name


def is_managed_alias(alias: str | None) -> bool:
    return bool(alias) and str(alias).startswith(KEY_ALIAS_PREFIX)


def user_id(email: str) -> str:
    """LiteLLM user id: the email, lower-cased (LiteLLM treats emails case-insensitively)."""
    return email.strip().lower()


def secret_name(name: str, override: str | None = None) -> str:
    if override:
        return override
    candidate = f"{name}{SECRET_SUFFIX}"
    if len(candidate) <= 253:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: 253 - len(SECRET_SUFFIX) - 11]}-{digest}{SECRET_SUFFIX}"


def hash_key(value: str) -> str:
    """LiteLLM's token: sha256 hex of the raw key."""
    return hashlib.sha256(value.encode()).hexdigest()


def key_id(token: str | None) -> str | None:
    """Short, non-secret identifier of a key for status and logs: a prefix of LiteLLM's hash."""
    return token[:KEY_ID_LENGTH] if token else None


def managed_metadata(**extra: str) -> dict[str, str]:
    return {"managed-by": MANAGED_BY, **extra}
