"""Fakes for FAULT INJECTION in unit tests (crash at any write, 5xx bursts). They model the LiteLLM
1.108.7 behaviours the operator's safety depends on (see /work/shared/reference/litellm-notes.md):
duplicate key_alias -> 400; a re-sent custom key value is silently ignored (upsert with update={});
/key/delete of missing keys -> 404; deleted keys stay visible in /key/info with status "deleted";
/user/new auto-creates a key unless auto_create_key is false; /team/delete deletes the team's keys.
Behaviour against the real LiteLLM is covered by tests/integration/test_operator*.py."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from gateway_operator.clients.kubernetes import K8sConflict, SecretView


class Crash(BaseException):
    """The operator process 'dies' here (BaseException: nothing in the code under test catches it)."""


@dataclass
class CrashPlan:
    """Crash at the n-th write (0-based) counted across LiteLLM and Kubernetes, before or after it."""

    at: int | None = None
    after: bool = False
    seen: int = 0

    def check(self, apply: Any) -> Any:
        index = self.seen
        self.seen += 1
        if self.at is not None and index == self.at and not self.after:
            raise Crash(f"before write {index}")
        result = apply()
        if self.at is not None and index == self.at and self.after:
            raise Crash(f"after write {index}")
        return result


def _next_month() -> str:
    now = datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00Z"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": "x", "param": None, "code": str(status)}}
    )


@dataclass
class FakeLiteLLM:
    crash: CrashPlan = field(default_factory=CrashPlan)
    teams: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)  # statuses for the next requests (fault injection)
    down: bool = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # --- request dispatch -----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.fail_with:
            return _error(self.fail_with.pop(0), "injected failure")
        path = request.url.path
        if request.method == "GET":
            self.reads.append(path)
            params = dict(request.url.params)
            return getattr(self, "get_" + path.strip("/").replace("/", "_"))(params)
        body = json.loads(request.content or b"{}")
        handler = getattr(self, "post_" + path.strip("/").replace("/", "_"))
        response: httpx.Response = self.crash.check(lambda: handler(body))
        if response.status_code < 400:
            self.writes.append(path)
        return response

    # --- teams ----------------------------------------------------------------------------------------

    def post_team_new(self, body: dict[str, Any]) -> httpx.Response:
        if body["team_id"] in self.teams:
            return _error(400, f"Team id = {body['team_id']} already exists. Please use a different team id.")
        self.teams[body["team_id"]] = dict(body)
        return httpx.Response(200, json=body)

    def post_team_update(self, body: dict[str, Any]) -> httpx.Response:
        team = self.teams.get(body["team_id"])
        if team is None:
            return _error(404, "team not found")
        team.update(body)
        return httpx.Response(200, json={"team_id": body["team_id"], "data": team})

    def post_team_delete(self, body: dict[str, Any]) -> httpx.Response:
        if any(t not in self.teams for t in body["team_ids"]):
            return _error(404, "team not found")
        for team_id in body["team_ids"]:
            del self.teams[team_id]
            for token in [t for t, k in self.keys.items() if k.get("team_id") == team_id]:
                self.deleted[token] = self.keys.pop(token)
        return httpx.Response(200, json={"deleted_teams": body["team_ids"]})

    def get_team_info(self, params: dict[str, str]) -> httpx.Response:
        team = self.teams.get(params["team_id"])
        if team is None:
            return _error(404, "team not found")
        # Like LiteLLM 1.108.7: every key of the team, unpaginated, token included.
        keys = [copy.deepcopy(k) for k in self.keys.values() if k.get("team_id") == team["team_id"]]
        return httpx.Response(200, json={"team_id": team["team_id"], "team_info": team, "keys": keys})

    # --- users ----------------------------------------------------------------------------------------

    def post_user_new(self, body: dict[str, Any]) -> httpx.Response:
        if body["user_id"] in self.users:
            return _error(409, f"User with id {body['user_id']} already exists")
        self.users[body["user_id"]] = {k: v for k, v in body.items() if k != "auto_create_key"}
        if body.get("auto_create_key", True):
            self._store_key("sk-auto-" + body["user_id"], {"user_id": body["user_id"]})
        return httpx.Response(200, json=body)

    def post_user_update(self, body: dict[str, Any]) -> httpx.Response:
        user = self.users.get(body["user_id"])
        if user is None:
            return _error(404, "user not found")
        user.update(body)
        return httpx.Response(200, json=user)

    def post_user_delete(self, body: dict[str, Any]) -> httpx.Response:
        found = [u for u in body["user_ids"] if u in self.users]
        if not found:
            return _error(404, "user not found")
        for user_id in found:
            del self.users[user_id]
            for token in [t for t, k in self.keys.items() if k.get("user_id") == user_id]:
                self.deleted[token] = self.keys.pop(token)
        return httpx.Response(200, json=len(found))

    def get_user_info(self, params: dict[str, str]) -> httpx.Response:
        user = self.users.get(params["user_id"])
        if user is None:
            return _error(404, f"User {params['user_id']} not found")
        return httpx.Response(200, json={"user_id": user["user_id"], "user_info": user, "keys": []})

    # --- keys -----------------------------------------------------------------------------------------

    def _store_key(self, value: str, fields: dict[str, Any]) -> dict[str, Any]:
        row = {
            "token": _hash(value),
            "spend": 0.0,
            "created_at": datetime.now(UTC).isoformat(),
            "budget_reset_at": _next_month(),
            **{k: v for k, v in fields.items() if k != "key"},
        }
        self.keys[row["token"]] = row
        return row

    def post_key_generate(self, body: dict[str, Any]) -> httpx.Response:
        alias = body.get("key_alias")
        if alias and any(k.get("key_alias") == alias for k in self.keys.values()):
            return _error(
                400,
                f"Key with alias '{alias}' already exists. Unique key aliases across all keys are required.",
            )
        value = body["key"]
        token = _hash(value)
        if token not in self.keys:  # the upsert trap: an existing value is silently left as is
            self._store_key(value, body)
        return httpx.Response(200, json={**body, "token": token, "key": value})

    def post_key_update(self, body: dict[str, Any]) -> httpx.Response:
        token = body["key"] if not body["key"].startswith("sk-") else _hash(body["key"])
        row = self.keys.get(token)
        if row is None:
            return _error(404, "key not found")
        if "team_id" in body and body["team_id"] != row.get("team_id") and row.get("team_id"):
            # LiteLLM validates a team move against the CURRENT row: its models must be in the new
            # team and its user must be a team member (the fake has no members).
            if row.get("models"):
                return _error(403, f"The requested model '{row['models'][0]}' is not available")
            if row.get("user_id"):
                return _error(403, f"User={row['user_id']} is not a member of the team")
        alias = body.get("key_alias")
        if alias and any(k.get("key_alias") == alias and t != token for t, k in self.keys.items()):
            return _error(400, f"Key with alias '{alias}' already exists.")
        duration = body.get("budget_duration")
        if duration:
            # LiteLLM recomputes budget_reset_at unless the same duration is re-sent while a reset is due.
            due = str(row.get("budget_reset_at") or "9999") <= datetime.now(UTC).isoformat()
            if duration != row.get("budget_duration") or not due:
                row["budget_reset_at"] = _next_month()
        row.update({k: v for k, v in body.items() if k != "key"})
        return httpx.Response(200, json={**row})

    def post_key_delete(self, body: dict[str, Any]) -> httpx.Response:
        tokens = [t if not t.startswith("sk-") else _hash(t) for t in body.get("keys", [])]
        aliases = set(body.get("key_aliases", []))
        found = [t for t, k in self.keys.items() if t in tokens or k.get("key_alias") in aliases]
        if not found:
            return _error(404, "No keys found")
        for token in found:
            self.deleted[token] = self.keys.pop(token)
        return httpx.Response(200, json={"deleted_keys": found})

    def get_key_list(self, params: dict[str, str]) -> httpx.Response:
        rows = list(self.keys.values())
        for name in ("key_alias", "team_id", "user_id"):
            if name in params:
                rows = [r for r in rows if r.get(name) == params[name]]
        rows.sort(key=lambda r: r["created_at"])
        size, page = int(params.get("size", 10)), int(params.get("page", 1))
        chunk = rows[(page - 1) * size : page * size]
        return httpx.Response(
            200,
            json={
                "keys": copy.deepcopy(chunk),
                "total_count": len(rows),
                "current_page": page,
                "total_pages": -(-len(rows) // size),
            },
        )

    def get_key_info(self, params: dict[str, str]) -> httpx.Response:
        token = params["key"]
        if token in self.keys:
            return httpx.Response(200, json={"key": token, "info": {**self.keys[token], "status": "active"}})
        if token in self.deleted:
            return httpx.Response(
                200, json={"key": token, "info": {**self.deleted[token], "status": "deleted"}}
            )
        return _error(404, "key not found")

    # --- helpers for assertions -----------------------------------------------------------------------

    def live_keys(self, prefix: str = "llmgw.") -> list[dict[str, Any]]:
        return [k for k in self.keys.values() if str(k.get("key_alias", "")).startswith(prefix)]


@dataclass
class FakeKube:
    """In-memory Secrets and custom-object status, with the same crash plan as the LiteLLM fake."""

    crash: CrashPlan
    secrets: dict[tuple[str, str], SecretView] = field(default_factory=dict)
    statuses: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    writes: list[str] = field(default_factory=list)

    def _next(self) -> str:
        self.version += 1
        return str(self.version)

    async def get_secret(self, namespace: str, name: str) -> SecretView | None:
        return self.secrets.get((namespace, name))

    async def create_secret(self, namespace: str, name: str, **kwargs: Any) -> SecretView:
        def apply() -> SecretView:
            if (namespace, name) in self.secrets:
                raise K8sConflict("exists")
            view = SecretView(
                name=name,
                namespace=namespace,
                uid=f"uid-{name}-{self._next()}",
                resource_version=self._next(),
                labels=dict(kwargs["labels"]),
                annotations=dict(kwargs["annotations"]),
                owner_references=tuple(kwargs["owner_references"]),
                data=dict(kwargs["data"]),
            )
            self.secrets[(namespace, name)] = view
            self.writes.append(f"create secret {name}")
            return view

        result: SecretView = self.crash.check(apply)
        return result

    async def replace_secret(self, current: SecretView, **kwargs: Any) -> SecretView:
        def apply() -> SecretView:
            stored = self.secrets.get((current.namespace, current.name))
            if stored is None or stored.resource_version != current.resource_version:
                raise K8sConflict("changed")
            view = SecretView(
                name=current.name,
                namespace=current.namespace,
                uid=current.uid,
                resource_version=self._next(),
                labels={**current.labels, **kwargs["labels"]},
                annotations={**current.annotations, **kwargs["annotations"]},
                owner_references=tuple(kwargs["owner_references"]),
                data=dict(kwargs["data"]),
            )
            self.secrets[(current.namespace, current.name)] = view
            self.writes.append(f"replace secret {current.name}")
            return view

        result: SecretView = self.crash.check(apply)
        return result

    async def delete_secret(self, namespace: str, name: str, uid: str | None = None) -> bool:
        def apply() -> bool:
            self.writes.append(f"delete secret {name}")
            return self.secrets.pop((namespace, name), None) is not None

        result: bool = self.crash.check(apply)
        return result

    async def get_object(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return None
        return {**obj, "status": copy.deepcopy(self.statuses.get((plural, namespace, name), {}))}

    async def patch_status(
        self, plural: str, name: str, namespace: str | None, status: dict[str, Any]
    ) -> bool:
        def apply() -> bool:
            self.statuses.setdefault((plural, namespace, name), {}).update(copy.deepcopy(status))
            self.writes.append(f"status {name}")
            return True

        result: bool = self.crash.check(apply)
        return result
