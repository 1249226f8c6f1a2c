"""Object names derived from e-mail addresses: lowercase DNS-1123 labels, deterministic, collision-free.

A "plain" address (local part of [a-z0-9] only, dotted [a-z0-9] domain labels, nothing else) maps
to `local-domain-labels` (alice@company.com -> alice-company-com). That mapping can be undone (the first
hyphen is the @, the others are dots), so two plain addresses never share a name. Every other address
(dots, hyphens, plus signs in the local part, long addresses...) gets a readable slug plus 8 hex digits
of the SHA-256 of the lowercased address. A plain name never ends in such a suffix (see _looks_hashed),
so the two families cannot collide either. Case is folded: e-mail addresses are compared
case-insensitively everywhere (LiteLLM too).
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
HASH_LEN = 8

_PLAIN_LOCAL = re.compile(r"[a-z0-9]+")
_PLAIN_DOMAIN = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)+")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_HEX_SUFFIX = re.compile(rf"-[0-9a-f]{{{HASH_LEN}}}$")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _looks_hashed(name: str) -> bool:
    return _HEX_SUFFIX.search(name) is not None


def name_for_email(email: str) -> str:
    """The GatewayUser object name for an e-mail address (see the module docstring)."""
    address = normalize_email(email)
    local, _, domain = address.rpartition("@")
    plain = f"{local}-{domain.replace('.', '-')}"
    if (
        _PLAIN_LOCAL.fullmatch(local)
        and _PLAIN_DOMAIN.fullmatch(domain)
        and len(plain) <= MAX_LABEL
        and not _looks_hashed(plain)
    ):
        return plain
    digest = hashlib.sha256(address.encode("utf-8")).hexdigest()[:HASH_LEN]
    slug = _NON_ALNUM.sub("-", address).strip("-")[: MAX_LABEL - HASH_LEN - 1].rstrip("-")
    return f"{slug}-{digest}" if slug else f"user-{digest}"


def is_dns1123_label(value: str) -> bool:
    return len(value) <= MAX_LABEL and DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and DNS1123_SUBDOMAIN.fullmatch(value) is not None
