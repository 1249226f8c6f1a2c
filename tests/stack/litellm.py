"""The real, pinned LiteLLM proxy (installed by ``make litellm`` into .cache/litellm-venv) with its database
features, against the stack's Postgres, fully offline.

- Schema: LiteLLM's own migrations (``litellm_proxy_extras/migrations/*/migration.sql``), applied in order
  with psql and recorded in Prisma's ``_prisma_migrations`` table like ``prisma migrate deploy`` would;
  LiteLLM then runs with ``DISABLE_SCHEMA_UPDATE=true`` (otherwise it runs ``prisma migrate deploy``, which
  needs the native schema engine, and exits).
- Database layer: prisma-client-python spawns ``tests/stack/prisma_engine/query-engine``, Prisma's query
  engine compiled to WebAssembly behind the native binary's HTTP interface (see engine.mjs there).
- Configuration: exactly ``charts/llm-gateway/files/litellm-config.yaml`` (CONFIG_FILE_PATH);
  ``charts/llm-gateway/files/gateway_asgi.py`` is loaded as a LiteLLM worker startup hook so that
  ``GET /health`` answers without auth and without calling models, as in the chart.
- AWS: only what the sts/bedrock components exported (IRSA-style web identity); static keys are stripped.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.stack.common import CACHE_DIR, LITELLM_CONFIG, REPO_ROOT, StackContext, StackError, free_port, say

VENV = CACHE_DIR / "litellm-venv"
ENGINE_DIR = REPO_ROOT / "tests" / "stack" / "prisma_engine"
GATEWAY_ASGI = REPO_ROOT / "charts" / "llm-gateway" / "files" / "gateway_asgi.py"
STAMP = VENV / ".llmgw-installed"

# Forwarded from the stack's environment (set by the sts and bedrock components).
AWS_FORWARDED = (
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL_STS",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ROLE_SESSION_NAME",
    "AWS_STS_REGIONAL_ENDPOINTS",
)
# Never inherited: they would take precedence over IRSA.
AWS_STRIPPED = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def site_packages() -> Path:
    found = sorted((VENV / "lib").glob("python3*/site-packages"))
    if not found:
        raise StackError(f"no LiteLLM venv at {VENV}; run `make litellm`")
    return found[-1]


def migrations_dir() -> Path:
    return site_packages() / "litellm_proxy_extras" / "migrations"


def pending_migrations(applied: set[str]) -> list[Path]:
    folders = sorted(p for p in migrations_dir().iterdir() if (p / "migration.sql").is_file())
    return [p for p in folders if p.name not in applied]


_PRISMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
"""


def _psql(database_url: str, bin_dir: str | None, args: list[str], stdin: str | None = None) -> str:
    psql = str(Path(bin_dir) / "psql") if bin_dir else (shutil.which("psql") or "psql")
    result = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", database_url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise StackError(f"psql failed: {result.stderr.strip()[-3000:]}")
    return result.stdout


def apply_migrations(database_url: str, pg_bin_dir: str | None = None) -> int:
    """Apply LiteLLM's migrations not yet recorded in _prisma_migrations; returns how many were applied.

    One psql session runs them all; each file is run with psql's autocommit (statement by statement), which is
    also what the CREATE INDEX CONCURRENTLY migrations need.
    """
    _psql(database_url, pg_bin_dir, ["-c", _PRISMA_MIGRATIONS_DDL])
    done = _psql(
        database_url,
        pg_bin_dir,
        [
            "-c",
            'SELECT migration_name FROM "_prisma_migrations" '
            "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL",
        ],
    )
    todo = pending_migrations(set(done.split("\n")) - {""})
    if not todo:
        return 0
    lines = []
    for folder in todo:
        sql_file = folder / "migration.sql"
        if "'" in str(sql_file):
            raise StackError(f"unexpected quote in migration path {sql_file}")
        checksum = hashlib.sha256(sql_file.read_bytes()).hexdigest()
        name = folder.name.replace("'", "''")
        lines.append(f"\\echo applying {folder.name}")
        lines.append(f"\\i '{sql_file}'")
        lines.append(
            'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, '
            "applied_steps_count, started_at) "
            f"VALUES ('{uuid.uuid4()}', '{checksum}', now(), '{name}', 1, now());"
        )
    _psql(database_url, pg_bin_dir, ["-f", "-"], stdin="\n".join(lines) + "\n")
    return len(todo)


def engine_env() -> dict[str, str]:
    """What makes prisma-client-python (and the Prisma CLI) use the offline engine and never download."""
    return {
        "PRISMA_QUERY_ENGINE_BINARY": str(ENGINE_DIR / "query-engine"),
        "PRISMA_SCHEMA_ENGINE_BINARY": str(ENGINE_DIR / "schema-engine"),
        "PRISMA_BINARY_CACHE_DIR": str(ENGINE_DIR),
        "PRISMA_HIDE_UPDATE_MESSAGE": "true",
        "CHECKPOINT_DISABLE": "1",
    }


def _secret_file(path: Path, prefix: str) -> str:
    """A random secret kept for the life of this stack's state folder (the salt key must not change under a
    database that holds values encrypted with it)."""
    if not path.exists():
        path.write_text(prefix + secrets.token_urlsafe(36))
        path.chmod(0o600)
    return path.read_text().strip()


def proxy_env(ctx: StackContext, master_key: str, salt_key: str, port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "LITELLM_", "PRISMA_", "DATABASE_"))
    }
    for key in AWS_STRIPPED:
        env.pop(key, None)
    for key in AWS_FORWARDED:
        if ctx.env.get(key):
            env[key] = ctx.env[key]
    if ctx.env.get("BEDROCK_STUB_URL"):
        env["AWS_BEDROCK_RUNTIME_ENDPOINT"] = ctx.env["BEDROCK_STUB_URL"]
    env.update(engine_env())
    env.update(
        {
            "PATH": f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "DATABASE_URL": ctx.env["DATABASE_URL"],
            "LITELLM_MASTER_KEY": master_key,
            "LITELLM_SALT_KEY": salt_key,
            "DISABLE_SCHEMA_UPDATE": "true",
            # Spend reaches the database every N(+0..5) s: LiteLLM's default, as the chart runs it. Each flush
            # is a dozen engine round trips on the event loop; at 3 s they took ~10% of LiteLLM's CPU.
            "PROXY_BATCH_WRITE_AT": "10",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "CONFIG_FILE_PATH": str(LITELLM_CONFIG),
            # gateway_asgi.install adds the unauthenticated, model-free /health (as in the chart).
            "LITELLM_WORKER_STARTUP_HOOKS": "gateway_asgi:install",
            "LITELLM_LOG": env.get("LITELLM_LOG", "INFO"),
            "LITELLM_TELEMETRY": "False",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(GATEWAY_ASGI.parent),
            "PORT": str(port),
        }
    )
    return env


def uvicorn_argv(port: int) -> list[str]:
    """LiteLLM's app under uvicorn, as `litellm --config` runs it (same app, config, uvicorn options) minus
    the CLI's boot-time `prisma migrate diff`: informational only with DISABLE_SCHEMA_UPDATE, it needs the
    native schema engine, and costs ~15 s of Prisma CLI start-up for nothing here."""
    return [
        str(VENV / "bin" / "python"),
        "-m",
        "uvicorn",
        "litellm.proxy.proxy_server:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--no-server-header",
        "--timeout-graceful-shutdown",
        "5",
        "--log-level",
        "info",
    ]


def _get_json(url: str, timeout: float = 5.0) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def start(ctx: StackContext) -> dict[str, str]:
    if not STAMP.exists():
        raise StackError("LiteLLM is not installed; run `make litellm` (tests/stack/litellm_install.sh)")
    if "DATABASE_URL" not in ctx.env:
        raise StackError("litellm needs the postgres component (DATABASE_URL)")
    t0 = time.monotonic()
    applied = apply_migrations(ctx.env["DATABASE_URL"], ctx.env.get("PG_BIN_DIR"))
    say(f"litellm: schema up to date ({applied} migrations applied in {time.monotonic() - t0:.1f}s)")

    state = ctx.state_dir("litellm")
    master_key = "sk-" + secrets.token_urlsafe(36)
    salt_key = _secret_file(state / "salt-key", "")
    port = free_port()
    env = proxy_env(ctx, master_key, salt_key, port)
    process = ctx.spawn("litellm", uvicorn_argv(port), env=env, cwd=state)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        status, body = _get_json(f"{base}/health/readiness")
        return status == 200 and isinstance(body, dict) and body.get("db") == "connected"

    ctx.wait_until("litellm", ready, timeout=180, process=process, interval=0.25)
    return {"LITELLM_ADMIN_URL": base, "LLM_GATEWAY_URL": f"{base}/v1", "LITELLM_MASTER_KEY": master_key}
