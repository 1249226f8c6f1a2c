"""The chart rendered by the real helm for each value set (default, production, kind), and policy
assertions on what it renders. No cluster needed; tests/chart/test_chart_apiserver.py sends the same
objects to a real kube-apiserver."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, VALUE_SETS, Rendered, env_of, helm, render
from tests.stack.common import REPO_ROOT

SHARED_CONFIG = CHART / "files" / "litellm-config.yaml"
LITELLM_REPOSITORY = "ghcr.io/berriai/litellm-non_root"
DIGEST = re.compile(r"@sha256:[a-f0-9]{64}$")
VERSION_TAG = re.compile(r":v?\d+(\.\d+)*([-+._][0-9A-Za-z.-]+)?$")
STATIC_AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}

# What the Ingress may route, and what it must never route (LiteLLM's admin and UI surface).
PUBLIC_ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/model-cheap",
    "/health",
    "/health/liveliness",
    "/health/readiness",
    "/user/info",
    "/key/info",
]
ADMIN_ROUTES = [
    "/key/generate",
    "/key/update",
    "/key/delete",
    "/key/list",
    "/key/regenerate",
    "/key/block",
    "/key/info/../generate",
    "/team/new",
    "/team/info",
    "/team/list",
    "/team/update",
    "/team/delete",
    "/team/member_add",
    "/user/new",
    "/user/update",
    "/user/delete",
    "/user/list",
    "/config/update",
    "/config/yaml",
    "/model/new",
    "/model/info",
    "/v1/model/info",
    "/global/spend",
    "/spend/logs",
    "/ui",
    "/sso/key/generate",
    "/health/services",
    "/health/test_connection",
    "/health/readiness/details",
    "/organization/new",
    "/customer/new",
    "/budget/new",
    "/cache/flushall",
    "/chat/completions",
    "/v1/modelsx",
    "/",
    "/metrics",
]


@cache
def rendered(value_set: str) -> Rendered:
    return render(VALUE_SETS[value_set])


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def litellm_container(r: Rendered) -> dict[str, Any]:
    container: dict[str, Any] = r.one("Deployment", "-litellm")["spec"]["template"]["spec"]["containers"][0]
    return container


def test_helm_lint_strict(value_set: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUE_SETS[value_set]:
        args += ["-f", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_value_set_renders_the_core_objects(value_set: str) -> None:
    r = rendered(value_set)
    kinds = {doc["kind"] for doc in r.docs}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Job",
        "ServiceAccount",
        "ClusterRole",
        "NetworkPolicy",
        "Pod",
    } <= kinds
    names = {doc["metadata"]["name"] for doc in r.of_kind("Deployment")}
    assert {"gw-llm-gateway-litellm", "gw-llm-gateway-operator"} <= names


def test_no_floating_image_tags(value_set: str) -> None:
    for owner, container, _ in rendered(value_set).containers():
        image = container["image"]
        assert DIGEST.search(image) or VERSION_TAG.search(image), f"{owner}: floating image {image}"
        assert not image.endswith((":latest", ":main-latest", ":main-stable", ":lts")), owner


def test_litellm_runs_the_official_non_root_image_by_digest(value_set: str) -> None:
    r = rendered(value_set)
    for owner, container, _ in r.containers():
        if container["name"] in ("litellm", "migrate"):
            repository, _, digest = container["image"].partition("@")
            assert repository == LITELLM_REPOSITORY, owner
            assert re.fullmatch(r"sha256:[a-f0-9]{64}", digest), owner


def test_every_container_has_resources(value_set: str) -> None:
    for owner, container, _ in rendered(value_set).containers():
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{owner}: requests missing"
        assert "memory" in resources.get("limits", {}), f"{owner}: memory limit missing"


def test_everything_runs_non_root_without_privileges(value_set: str) -> None:
    for owner, container, pod in rendered(value_set).containers():
        pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, owner
        assert (sc.get("runAsUser") or pod_sc.get("runAsUser") or 1) != 0, owner
        assert sc.get("allowPrivilegeEscalation") is False, owner
        assert sc.get("privileged") in (None, False), owner
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], owner
        assert not sc.get("capabilities", {}).get("add"), owner
        assert (sc.get("seccompProfile") or pod_sc.get("seccompProfile", {})).get(
            "type"
        ) == "RuntimeDefault", owner
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), owner


def test_read_only_root_filesystem_wherever_the_image_allows(value_set: str) -> None:
    for owner, container, _ in rendered(value_set).containers():
        if container["name"] in ("litellm", "migrate"):
            continue  # litellm.readOnlyRootFilesystem, off by default (why: values.yaml)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, owner


def test_probes_never_hit_health_which_calls_every_model(value_set: str) -> None:
    r = rendered(value_set)
    for owner, container, _ in r.containers():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container.get(probe, {}).get("httpGet", {}).get("path")
            assert path != "/health", f"{owner} {probe} on /health"
    litellm = litellm_container(r)
    assert litellm["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert litellm["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    for ingress in r.of_kind("Ingress"):
        assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"] != "/health"


def test_no_static_aws_credentials(value_set: str) -> None:
    r = rendered(value_set)
    stub = value_set == "kind"
    for owner, container, _ in r.containers():
        env = env_of(container)
        leaked = STATIC_AWS_ENV & set(env)
        if not stub or container["name"] != "litellm":
            assert not leaked, f"{owner} has static AWS credentials {leaked}"
            continue
        # kind: the stub's fake temporary credential, only together with the stub endpoint.
        assert env["AWS_BEDROCK_RUNTIME_ENDPOINT"]["value"].startswith("http://gw-llm-gateway-bedrock-stub:")
        for name in leaked:
            assert env[name]["valueFrom"]["secretKeyRef"]["name"].endswith("-bedrock-stub-fake-credentials")
    for secret in r.of_kind("Secret"):
        data = {**secret.get("data", {}), **secret.get("stringData", {})}
        assert not any(re.match(r"AKIA[0-9A-Z]{16}", str(v)) for v in data.values())
        assert secret["metadata"]["name"].endswith("-bedrock-stub-fake-credentials") and stub


def test_litellm_gets_region_keys_and_database_from_existing_secrets(value_set: str) -> None:
    r = rendered(value_set)
    env = env_of(litellm_container(r))
    assert env["AWS_REGION"]["value"] == env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"]["value"] == "True"
    assert env["DISABLE_SCHEMA_UPDATE"]["value"] == "true"
    master, salt = env["LITELLM_MASTER_KEY"]["valueFrom"], env["LITELLM_SALT_KEY"]["valueFrom"]
    assert master["secretKeyRef"]["name"] == salt["secretKeyRef"]["name"] == "llm-gateway-litellm-keys"
    assert master["secretKeyRef"]["key"] != salt["secretKeyRef"]["key"]
    if value_set == "kind":
        assert "$(POSTGRES_PASSWORD)@gw-llm-gateway-postgresql:5432/" in env["DATABASE_URL"]["value"]
    else:
        assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"]
    assert not [s for s in r.of_kind("Secret") if "master" in str(s)], "the chart must not mint keys"


def test_irsa_service_account_and_no_token_for_litellm() -> None:
    r = rendered("production")
    sa = r.one("ServiceAccount", "-litellm")
    annotations = sa["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/llm-gateway-litellm"
    assert sa["automountServiceAccountToken"] is False
    pod = r.one("Deployment", "-litellm")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gw-llm-gateway-litellm"
    assert pod["automountServiceAccountToken"] is False
    assert "eks.amazonaws.com/role-arn" not in rendered("default").one("ServiceAccount", "-litellm")[
        "metadata"
    ].get("annotations", {})


def test_config_is_the_shared_file_plus_only_redis_coordination(value_set: str) -> None:
    shared = yaml.safe_load(SHARED_CONFIG.read_text())
    config_map = rendered(value_set).one("ConfigMap", "-litellm-config")
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    if value_set != "production":
        assert config == shared
        return
    general = dict(config["general_settings"])
    coordination = general.pop("coordination_redis")
    assert general.pop("fail_closed_rate_limit_enforcement") is True
    assert general == shared["general_settings"]
    assert coordination == {
        "host": "llm-gateway.abc123.ng.0001.use1.cache.amazonaws.com",
        "port": 6379,
        "ssl": True,
        "password": "os.environ/REDIS_PASSWORD",
    }
    assert config.pop("router_settings") == {
        "redis_host": coordination["host"],
        "redis_port": 6379,
        "redis_password": "os.environ/REDIS_PASSWORD",
        # Without it the Router would talk plaintext to a TLS-only ElastiCache.
        "cache_kwargs": {"ssl": True},
    }
    assert {k: v for k, v in config.items() if k != "general_settings"} == {
        k: v for k, v in shared.items() if k != "general_settings"
    }


def test_public_health_hook_is_shipped_and_loaded(value_set: str) -> None:
    r = rendered(value_set)
    config_map = r.one("ConfigMap", "-litellm-config")
    assert config_map["data"]["gateway_asgi.py"] == (CHART / "files" / "gateway_asgi.py").read_text()
    env = env_of(litellm_container(r))
    assert env["LITELLM_WORKER_STARTUP_HOOKS"]["value"] == "gateway_asgi:install"
    assert env["PYTHONPATH"]["value"] == "/etc/litellm"
    mounts = {m["name"]: m["mountPath"] for m in litellm_container(r)["volumeMounts"]}
    assert mounts["config"] == "/etc/litellm"


def test_config_change_rolls_the_litellm_pods() -> None:
    base = rendered("default").one("Deployment", "-litellm")
    other = render(VALUE_SETS["default"], {"litellm.redis.enabled": "true", "litellm.redis.host": "r"})
    key = "checksum/config"
    assert (
        base["spec"]["template"]["metadata"]["annotations"][key]
        != other.one("Deployment", "-litellm")["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_chart_crds_are_exactly_the_repository_crds() -> None:
    source = {p.name: p.read_bytes() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    copy = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "no CRDs in crds/"
    assert copy == source, (
        "charts/llm-gateway/crds/ differs from crds/: cp crds/*.yaml charts/llm-gateway/crds/"
    )


def test_migrations_run_once_per_release_before_pods_and_fail_loudly(value_set: str) -> None:
    r = rendered(value_set)
    job = r.one("Job", "-migrations")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "hook-failed" not in annotations["helm.sh/hook-delete-policy"]  # a failed Job stays for its logs
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    migrate = pod["containers"][0]
    assert migrate["command"] == ["python", "litellm/proxy/prisma_migration.py"]
    assert env_of(migrate)["DISABLE_SCHEMA_UPDATE"]["value"] == "false"
    # The Job's ServiceAccount is a hook too (weight below the Job), or it would not exist yet on install.
    sa = [d for d in r.of_kind("ServiceAccount") if d["metadata"]["name"] == pod["serviceAccountName"]]
    assert sa and int(sa[0]["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    if value_set == "kind":  # the bundled Postgres must exist before the hook: it is an earlier hook
        for kind in ("Deployment", "Service"):
            postgres = r.one(kind, "-postgresql")["metadata"]["annotations"]
            assert postgres["helm.sh/hook"] == "pre-install"
            assert int(postgres["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])


def _route_matches(paths: list[dict], route: str) -> bool:  # type: ignore[type-arg]
    """Kubernetes Ingress matching: Exact is string equality, Prefix matches whole path elements."""
    for path in paths:
        if path["pathType"] == "Exact" and route == path["path"]:
            return True
        if path["pathType"] == "Prefix":
            prefix = path["path"].rstrip("/").split("/")
            if route.rstrip("/").split("/")[: len(prefix)] == prefix:
                return True
        assert path["pathType"] in ("Exact", "Prefix"), "ImplementationSpecific paths are not allowed"
    return False


def test_ingress_exposes_the_openai_routes_and_never_the_admin_api() -> None:
    ingress = rendered("production").one("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "llm.example.com"
    paths = rule["http"]["paths"]
    for route in PUBLIC_ROUTES:
        assert _route_matches(paths, route), f"{route} is not routed"
    for route in ADMIN_ROUTES:
        assert not _route_matches(paths, route), f"admin route {route} is exposed"
    backends = {p["backend"]["service"]["name"] for p in paths}
    assert backends == {"gw-llm-gateway-litellm"}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
    assert annotations["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert not rendered("default").of_kind("Ingress")


def test_only_the_operator_and_allowed_clients_reach_litellm(value_set: str) -> None:
    r = rendered(value_set)
    policy = r.one("NetworkPolicy", "-litellm")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "litellm"
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    components = [
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers if "podSelector" in p
    ]
    assert components == ["operator", "test"]
    extra = [p for p in peers if "podSelector" not in p]
    assert extra == ([{"ipBlock": {"cidr": "10.0.0.0/16"}}] if value_set == "production" else [])
    assert rule["ports"] == [{"protocol": "TCP", "port": 4000}]


def test_operator_single_replica_recreate_with_its_settings(value_set: str) -> None:
    from gateway_operator.settings import Settings

    r = rendered(value_set)
    deployment = r.one("Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "gateway_operator"]
    env = env_of(container)
    known = {
        str(alias)
        for field in Settings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", [])
    }
    assert set(env) <= known, f"env the operator does not read: {set(env) - known}"
    assert env["LITELLM_ADMIN_URL"]["value"] == "http://gw-llm-gateway-litellm.llm-gateway.svc:4000"
    assert env["LITELLM_MASTER_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "llm-gateway-litellm-keys"
    assert env["LITELLM_MAX_CONCURRENCY"]["value"] == "10"
    assert env["GATEWAY_PUBLIC_URL"]["value"].endswith("/v1")
    if value_set == "production":
        assert env["GATEWAY_PUBLIC_URL"]["value"] == "https://llm.example.com/v1"
        assert env["WATCH_NAMESPACES"]["value"] == "team-a,team-b"


def _rules(r: Rendered) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    """(role kind/name, binding scope, rule) for every rule bound to the operator's ServiceAccount."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in r.docs if d["kind"] in ("ClusterRole", "Role")}
    found = []
    for binding in r.docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        assert [s["name"] for s in binding["subjects"]] == ["gw-llm-gateway-operator"]
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        scope = binding["metadata"].get("namespace", "*")
        found += [(role["metadata"]["name"], scope, rule) for rule in role["rules"]]
    return found


def test_rollout_permission_can_be_withheld(value_set: str) -> None:
    sets = {"operator.rbac.rolloutDeployments": "false"}
    rules = _rules(render(VALUE_SETS[value_set], sets))
    assert rules and not [r for _, _, r in rules if "deployments" in r["resources"]]
    assert [r for _, _, r in rules if "secrets" in r["resources"]], "the rest of the RBAC stays"


def test_operator_rbac_is_least_privilege(value_set: str) -> None:
    rules = _rules(rendered(value_set))
    for _, _, rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]
    secrets = [(scope, set(rule["verbs"])) for _, scope, rule in rules if "secrets" in rule["resources"]]
    # Exactly what clients/kubernetes.py calls (read/create/replace/delete) plus kopf's watch of the
    # operator's labelled Secrets (handlers.user_secret_event).
    assert secrets and all(
        verbs == {"get", "list", "watch", "create", "update", "delete"} for _, verbs in secrets
    )
    granted = {(g, res) for _, _, rule in rules for g in rule["apiGroups"] for res in rule["resources"]}
    assert granted <= {
        ("llmgateway.io", "gatewaytiers"),
        ("llmgateway.io", "gatewaytiers/status"),
        ("llmgateway.io", "gatewayusers"),
        ("llmgateway.io", "gatewayusers/status"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "secrets"),
        ("", "events"),
        ("", "namespaces"),
        ("apps", "deployments"),
    }
    for _, _, rule in rules:
        if rule["resources"] == ["customresourcedefinitions"]:
            assert set(rule["verbs"]) == {"list", "watch"}
        if rule["resources"] == ["events"]:
            assert rule["verbs"] == ["create"]
        if rule["resources"] == ["namespaces"]:
            assert set(rule["verbs"]) == {"list", "watch"}
    # Deployments: only what a rollout of the ones that opt in to key rotation needs (no create/delete),
    # and only where the Secrets are.
    deployments = [(scope, set(r["verbs"])) for _, scope, r in rules if "deployments" in r["resources"]]
    assert deployments and all(verbs == {"get", "list", "patch"} for _, verbs in deployments)
    assert {scope for scope, _ in deployments} == {scope for scope, _ in secrets}
    if value_set == "production":  # watchNamespaces: Secrets only in those namespaces (+ its own for events)
        assert {scope for scope, _ in secrets} == {"team-a", "team-b", "llm-gateway"}
    else:
        assert {scope for scope, _ in secrets} == {"*"}


def test_replicas_and_autoscaling_come_with_redis_hpa_and_pdb() -> None:
    r = rendered("production")
    deployment = r.one("Deployment", "-litellm")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = r.one("HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert r.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    env = env_of(litellm_container(r))
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm-gateway-redis",
        "key": "auth-token",
    }
    assert rendered("default").one("Deployment", "-litellm")["spec"]["replicas"] == 1
    assert not rendered("default").of_kind("HorizontalPodAutoscaler")


def test_default_tiers_are_the_standard_ones_and_survive_uninstall() -> None:
    standard = {
        d["metadata"]["name"]: d["spec"]
        for d in yaml.safe_load_all((REPO_ROOT / "manifests" / "tiers.yaml").read_text())
        if d and d.get("kind") == "GatewayTier"
    }
    tiers = rendered("production").of_kind("GatewayTier")
    assert {t["metadata"]["name"]: t["spec"] for t in tiers} == standard
    assert all(t["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for t in tiers)
    assert not rendered("default").of_kind("GatewayTier")


def test_bedrock_stub_only_in_kind() -> None:
    kind = rendered("kind")
    stub = kind.one("Deployment", "-bedrock-stub")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(stub)["BEDROCK_STUB_SIGV4"]["value"] == "shape"
    assert env_of(litellm_container(kind))["AWS_BEDROCK_RUNTIME_ENDPOINT"]["value"] == (
        "http://gw-llm-gateway-bedrock-stub:8090"
    )
    for value_set in ("default", "production"):
        r = rendered(value_set)
        assert "AWS_BEDROCK_RUNTIME_ENDPOINT" not in env_of(litellm_container(r))
        assert not [d for d in r.docs if "bedrock-stub" in d["metadata"]["name"]]
        assert not [d for d in r.docs if "postgresql" in d["metadata"]["name"]]


def test_helm_test_pod_checks_readiness_through_the_service(value_set: str) -> None:
    pod = rendered(value_set).one("Pod", "-test-readiness")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert "/health/readiness" in container["command"][2]
    assert container["command"][3] == "http://gw-llm-gateway-litellm.llm-gateway.svc:4000"


def test_nothing_changes_between_two_renders(value_set: str) -> None:
    """GitOps: no random or time-based value, so a re-render is byte-identical."""
    files: tuple[Path, ...] = VALUE_SETS[value_set]
    args = ["template", "gw", str(CHART), "--namespace", "llm-gateway"] + [
        a for f in files for a in ("-f", str(f))
    ]
    assert helm(*args).stdout == helm(*args).stdout


def test_notes_explain_the_endpoint_and_a_first_key() -> None:
    from tests.chart.helm import RELEASE

    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "-n",
        "llm-gateway",
        "-f",
        str(VALUE_SETS["production"][0]),
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "https://llm.example.com/v1" in notes
    assert "kubectl apply" in notes and "GatewayUser" in notes and "api-key" in notes
    kind_notes = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "-n",
        "llm-gateway",
        "-f",
        str(VALUE_SETS["kind"][0]),
    ).stdout.split("NOTES:", 1)[1]
    assert "STUB" in kind_notes and "port-forward" in kind_notes
