#!/usr/bin/env bash
# `make litellm`: the pinned LiteLLM proxy and its offline database engine, for the local stack.
#   1. .cache/litellm-venv: litellm[proxy]==1.108.7 + prisma-client-python, exact pins from litellm-requirements.txt
#      (a venv of its own: LiteLLM's dependency pins must not clash with the operator's).
#   2. tests/stack/prisma_engine/node_modules: `npm ci` from the committed lockfile (Prisma's query engine as
#      WebAssembly, the pg driver adapter, and the Prisma 5.17.0 CLI that prisma-client-python drives).
#   3. `prisma generate` for LiteLLM's schema, with no engine download: the CLI only asks our stand-in
#      executables for `--version`.
# Idempotent: a stamp holding the inputs' hash makes a re-run a no-op.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${LLMGW_CACHE_DIR:-$REPO/.cache}"
VENV="$CACHE/litellm-venv"
ENGINE="$REPO/tests/stack/prisma_engine"
REQS="$REPO/tests/stack/litellm-requirements.txt"
STAMP="$VENV/.llmgw-installed"
PYTHON="${PYTHON:-python3}"

say() { printf '[litellm-install] %s\n' "$*"; }
die() { printf '[litellm-install] ERROR: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node (>= 18) is required for the offline Prisma engine: apt-get install nodejs npm"
command -v npm >/dev/null || die "npm is required: apt-get install npm"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node >= 18 needed, found $(node --version)"

inputs_hash="$(cat "$REQS" "$ENGINE/package.json" "$ENGINE/package-lock.json" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && [ -x "$VENV/bin/litellm" ] \
    && [ -d "$ENGINE/node_modules/@prisma/query-engine-wasm" ]; then
  say "up to date ($VENV)"
  exit 0
fi
rm -f "$STAMP"
t0=$SECONDS

# 1. The venv.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
say "installing LiteLLM (pinned, $(grep -c '==' "$REQS") packages) into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
case "$installed" in
  1.108.7) ;;
  1.82.7|1.82.8|1.107.0) die "litellm $installed is a known-compromised release; refusing" ;;
  *) die "expected litellm 1.108.7, got $installed" ;;
esac
say "venv ready in $((SECONDS - t0))s (litellm $installed)"

# 2. The Node engine.
t1=$SECONDS
say "npm ci in tests/stack/prisma_engine (from the committed lockfile)"
(cd "$ENGINE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
say "engine packages ready in $((SECONDS - t1))s"
version="$("$ENGINE/query-engine" --version)"
[ "$version" = "query-engine 393aa359c9ad4a4bb28630fb5613f9c281cde053" ] || die "engine stand-in answered: $version"

# 3. The Prisma client for LiteLLM's schema.
t2=$SECONDS
SCHEMA="$("$VENV/bin/python" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("litellm")
print(pathlib.Path(spec.origin).parent / "proxy" / "schema.prisma")
EOF
)"
say "prisma generate for $SCHEMA (offline)"
(
  cd "$CACHE"
  export PATH="$VENV/bin:$PATH"
  export PRISMA_QUERY_ENGINE_BINARY="$ENGINE/query-engine"
  export PRISMA_SCHEMA_ENGINE_BINARY="$ENGINE/schema-engine"
  export PRISMA_BINARY_CACHE_DIR="$ENGINE"   # the Prisma CLI from our lockfile, not a fresh `npm install`
  export PRISMA_HIDE_UPDATE_MESSAGE=true CHECKPOINT_DISABLE=1 PRISMA_GENERATE_SKIP_AUTOINSTALL=true
  "$VENV/bin/prisma" generate --schema "$SCHEMA" 2>&1 | grep -v "binaryTargets option is not officially" \
    | sed 's/^/[litellm-install]   /'
  exit "${PIPESTATUS[0]}"
)
# The generated client is ~15 MB of Python; compile it once here rather than at every LiteLLM start
# (PYTHONDONTWRITEBYTECODE may be set in the environment).
PRISMA_PKG="$(ls -d "$VENV"/lib/python3*/site-packages/prisma | tail -1)"
grep -q "$ENGINE/query-engine" "$PRISMA_PKG/client.py" || die "prisma client was not generated for the offline engine"
"$VENV/bin/python" -m compileall -q "$PRISMA_PKG" >/dev/null
say "prisma client generated in $((SECONDS - t2))s"

echo "$inputs_hash" > "$STAMP"
say "done in $((SECONDS - t0))s"
