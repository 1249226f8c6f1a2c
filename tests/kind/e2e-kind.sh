#!/usr/bin/env bash
# `make e2e-kind`: the end-to-end suite (tests/e2e) against the Helm chart on a kind cluster.
#
#   build the operator and Bedrock-stub images -> create a kind cluster -> load the images ->
#   helm install (bundled Postgres + stub, tests/kind/values.yaml) -> helm test -> port-forward ->
#   pytest tests/e2e with LLMGW_E2E_EXTERNAL=1, KUBECONFIG and LLM_GATEWAY_URL pointing at the cluster.
#
# Needs docker, kind and network access to ghcr.io (the LiteLLM image) and Docker Hub (base images).
# Environment knobs:
#   LITELLM_DIGEST=sha256:...   use this digest instead of resolving v1.108.7 with `docker pull`
#   KIND_CLUSTER=name           cluster name (default llm-gateway-e2e)
#   KEEP_CLUSTER=1              leave the cluster running afterwards (default: delete it)
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '[e2e-kind] %s\n' "$*"; }
die() { printf '[e2e-kind] ERROR: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed (needed to build images and run kind); this machine cannot run the kind end-to-end test"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (is it running? may this user use it?)"
command -v kind >/dev/null 2>&1 || die "kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
HELM=bin/helm; KUBECTL=bin/kubectl
[ -x "$HELM" ] && [ -x "$KUBECTL" ] || die "bin/helm or bin/kubectl missing: run \`make tools\` first"
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || die ".venv missing: run \`make install\` first"

CLUSTER=${KIND_CLUSTER:-llm-gateway-e2e}
NAMESPACE=llm-gateway
RELEASE=gw
LOCAL_PORT=14000   # must match operator.gatewayPublicUrl in tests/kind/values.yaml
LITELLM_IMAGE=ghcr.io/berriai/litellm-non_root:v1.108.7
OPERATOR_IMAGE=llm-gateway-operator:0.1.0-kind
STUB_IMAGE=llm-gateway-bedrock-stub:0.1.0-kind
export KUBECONFIG="$PWD/.cache/kind-$CLUSTER.kubeconfig"
mkdir -p .cache

PF_PID=""
cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  if [ "${KEEP_CLUSTER:-}" = "1" ]; then
    say "keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG)"
  else
    say "deleting cluster $CLUSTER"; kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}

say "resolving the LiteLLM image digest"
if [ -z "${LITELLM_DIGEST:-}" ]; then
  docker pull -q "$LITELLM_IMAGE" >/dev/null
  LITELLM_DIGEST=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$LITELLM_IMAGE" \
    | grep '^ghcr.io/berriai/litellm-non_root@' | head -n1 | cut -d@ -f2)
fi
[[ "$LITELLM_DIGEST" =~ ^sha256:[a-f0-9]{64}$ ]] || die "could not resolve the digest of $LITELLM_IMAGE"
say "LiteLLM $LITELLM_IMAGE@$LITELLM_DIGEST"

say "building $OPERATOR_IMAGE and $STUB_IMAGE"
docker build -q -f operator/Dockerfile -t "$OPERATOR_IMAGE" . >/dev/null
docker build -q -t "$STUB_IMAGE" tests/stack/bedrock_stub >/dev/null

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
else
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
fi
trap cleanup EXIT
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$STUB_IMAGE"

say "creating the Secrets the chart expects (generated here, never by the chart)"
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n "$NAMESPACE" create secret generic llm-gateway-litellm-keys \
  --from-literal=master-key="sk-$(openssl rand -hex 24)" --from-literal=salt-key="$(openssl rand -hex 32)" \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n "$NAMESPACE" create secret generic llm-gateway-postgres \
  --from-literal=password="$(openssl rand -hex 16)" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

say "helm install (migrations run first as a hook)"
"$HELM" upgrade --install "$RELEASE" charts/llm-gateway -n "$NAMESPACE" -f tests/kind/values.yaml \
  --set "litellm.image.digest=$LITELLM_DIGEST" --wait --timeout 15m
"$HELM" test "$RELEASE" -n "$NAMESPACE" --logs --timeout 5m

say "port-forward 127.0.0.1:$LOCAL_PORT -> svc/$RELEASE-llm-gateway-litellm"
"$KUBECTL" -n "$NAMESPACE" port-forward "svc/$RELEASE-llm-gateway-litellm" "$LOCAL_PORT:4000" >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$LOCAL_PORT/health/liveliness" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$LOCAL_PORT/health" >/dev/null || die "the gateway does not answer through the port-forward"

say "running tests/e2e against the cluster"
LLMGW_E2E_EXTERNAL=1 LLM_GATEWAY_URL="http://127.0.0.1:$LOCAL_PORT/v1" \
  "$PYTHON" -m pytest tests/e2e -q -p no:cacheprovider
