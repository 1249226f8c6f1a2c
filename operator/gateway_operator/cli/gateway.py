"""The few LiteLLM admin calls the CLI makes directly: health probes, the served model list, and the
daily spend records behind `usage`. Base URL and master key from LITELLM_ADMIN_URL / LITELLM_MASTER_KEY;
the key is sent as a header only, never printed or put in an error."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from gateway_operator.cli.errors import CliError, UnavailableError

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
PAGE_SIZE = 1000  # the endpoint's maximum


@dataclass
class LiteLLM:
    url: str
    master_key: str | None

    @classmethod
    def from_env(cls, url: str | None = None) -> LiteLLM | None:
        base = url or os.environ.get("LITELLM_ADMIN_URL")
        if not base:
            return None
        return cls(base.rstrip("/"), os.environ.get("LITELLM_MASTER_KEY") or None)

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.master_key}"} if self.master_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def get(self, path: str, params: dict[str, Any] | None = None, auth: bool = True) -> httpx.Response:
        if auth and not self.master_key:
            raise CliError(f"{path} needs the master key", fix="export LITELLM_MASTER_KEY")
        try:
            with self._client() as http:
                return http.get(path, params=params)
        except httpx.HTTPError as error:
            raise UnavailableError(
                f"cannot reach LiteLLM at {self.url} ({error.__class__.__name__})",
                fix="check LITELLM_ADMIN_URL (kubectl port-forward svc/<release>-litellm 4000 in a cluster)",
            ) from error

    def model_routes(self) -> dict[str, str]:
        """logical model name -> the deployment's provider model (bedrock/...), from /model/info."""
        response = self.get("/model/info")
        _raise_for(response, "/model/info")
        routes: dict[str, str] = {}
        for entry in response.json().get("data", []):
            name = entry.get("model_name")
            params = entry.get("litellm_params") or {}
            if isinstance(name, str):
                routes[name] = str(params.get("model", ""))
        return routes

    def daily_user_spend(self, start: str, end: str) -> Iterator[dict[str, Any]]:
        """Every day record of /user/daily/activity between the dates (YYYY-MM-DD, inclusive), page by page.
        Unlike the users' `spend` counters, these records survive monthly budget resets."""
        page = 1
        while True:
            response = self.get(
                "/user/daily/activity",
                {"start_date": start, "end_date": end, "page": page, "page_size": PAGE_SIZE},
            )
            _raise_for(response, "/user/daily/activity")
            body = response.json()
            yield from body.get("results", [])
            if not body.get("metadata", {}).get("has_more"):
                return
            page += 1


def _raise_for(response: httpx.Response, path: str) -> None:
    if response.status_code == 401:
        raise CliError(f"LiteLLM refused {path} (401)", fix="check LITELLM_MASTER_KEY")
    if response.status_code >= 400:
        detail = response.text[:200].replace("\n", " ")
        raise CliError(f"LiteLLM answered {response.status_code} on {path}: {detail}")
