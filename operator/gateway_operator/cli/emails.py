"""E-mail syntax check shared by `users add`, `users import` and `validate`."""

from __future__ import annotations

import re

# Stricter than the CRD's pattern (models.EMAIL_PATTERN), never looser: no leading, trailing or double dots,
# a letters-only top-level domain. ASCII only, like the CRD.
EMAIL_RE = re.compile(
    r"[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
MAX_EMAIL = 254


def email_problem(value: str) -> str | None:
    """None when `value` is a usable address, else the reason in a few words."""
    if not value:
        return "email is empty"
    if len(value) > MAX_EMAIL:
        return f"email is longer than {MAX_EMAIL} characters"
    if EMAIL_RE.fullmatch(value) is None:
        return f"bad email {value!r}: expected name@domain.tld (ASCII, no spaces)"
    return None
