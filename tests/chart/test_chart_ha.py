"""operator.highAvailability: active/standby operator replicas through kopf peering.

Rendered with the real helm: off, the chart renders exactly one standalone replica (Recreate) whatever the
other HA values say; on, N replicas with RollingUpdate, KOPF_PEERING, a PodDisruptionBudget, a preferred
anti-affinity, kopf's peering object in the operator's scope (ClusterKopfPeering cluster-wide, a KopfPeering
per watched namespace) and RBAC for it; the schema refuses unsafe values.

Against the local stack's real kube-apiserver (stack marker): the HA render passes a server-side dry run
with kopf's CRDs from crds/kopf/, `kubectl auth can-i` shows the operator's ServiceAccount can do what kopf
peering needs on its own peering object and nothing more, and two operator replicas authenticated as that
ServiceAccount (chart RBAC only, random priorities as in the chart) never act together: only the one kopf
made active handles a new GatewayUser, and when it exits cleanly (a rollout) the standby takes over."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.chart.helm import (
    CHART,
    NAMESPACE,
    VALUE_SETS,
    Doc,
    Rendered,
    env_of,
    helm,
    parse,
    render,
    template_error,
    template_text,
)
from tests.chart.test_operator_under_chart_rbac import (
    apply_tier,
    apply_user,
    get,
    kubectl,
    ready,
    service_account_kubeconfig,
    wait_for,
)
from tests.integration.test_operator import Admin, sha
from tests.stack.common import REPO_ROOT

DEFAULT = VALUE_SETS["default"]
HA = {"operator.highAvailability.enabled": "true"}
KOPF_CRDS = CHART / "crds" / "kopf" / "peering.yaml"
PEERING_ENV = ("KOPF_PEERING", "KOPF_PEERING_PRIORITY", "KOPF_PEERING_LIFETIME_SECONDS", "POD_ID")
RUN = secrets.token_hex(3)


def operator_deployment(r: Rendered) -> Doc:
    return r.one("Deployment", "-operator")


def operator_container(r: Rendered) -> Doc:
    return cast(Doc, operator_deployment(r)["spec"]["template"]["spec"]["containers"][0])


def kopf_rules(r: Rendered) -> dict[str, list[Doc]]:
    """ClusterRole name -> its rules on kopf.dev resources."""
    return {
        role["metadata"]["name"]: [rule for rule in role["rules"] if "kopf.dev" in rule["apiGroups"]]
        for role in r.of_kind("ClusterRole")
    }


def peering_objects(r: Rendered) -> list[Doc]:
    return [d for d in r.docs if d["apiVersion"].startswith("kopf.dev/")]


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --- off: today's single standalone replica -----------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_off_by_default_one_standalone_replica_recreated(value_set: str) -> None:
    r = render(VALUE_SETS[value_set])
    deployment = operator_deployment(r)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not set(PEERING_ENV) & set(env_of(operator_container(r)))
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert [
        p["metadata"]["name"]
        for p in r.of_kind("PodDisruptionBudget")
        if p["metadata"]["name"].endswith("-operator")
    ] == []
    assert peering_objects(r) == []
    assert all(rules == [] for rules in kopf_rules(r).values())


def test_off_the_other_ha_values_change_nothing() -> None:
    """Disabled means disabled: the render is byte-identical whatever replicas/peeringName/lifetime say."""
    ignored = {
        "operator.highAvailability.replicas": "5",
        "operator.highAvailability.peeringName": "elsewhere",
        "operator.highAvailability.lifetimeSeconds": "30",
    }
    assert template_text(DEFAULT, ignored) == template_text(DEFAULT)
    ns = {"operator.watchNamespaces": "{team-a,team-b}"}
    assert template_text(DEFAULT, {**ns, **ignored}) == template_text(DEFAULT, ns)


# --- on -----------------------------------------------------------------------------------------------------


def test_on_cluster_wide_two_peered_replicas_with_their_peering_object_pdb_and_rbac() -> None:
    r = render(DEFAULT, HA)
    deployment = operator_deployment(r)
    spec = deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }

    env = env_of(operator_container(r))
    name = env["KOPF_PEERING"]["value"]
    assert name == "gw-llm-gateway-operator"
    assert env["KOPF_PEERING_LIFETIME_SECONDS"]["value"] == "60"
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "KOPF_PEERING_PRIORITY" not in env, "a pinned priority is shared by all pods: kopf pauses them all"
    assert env["WATCH_NAMESPACES"]["value"] == ""

    # The peering object kopf needs for a cluster-wide operator, named as the operator is told.
    assert [
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in peering_objects(r)
    ] == [("ClusterKopfPeering", name, None)]
    # RBAC: see every peering object, write only ours.
    rules = kopf_rules(r)
    assert rules["gw-llm-gateway-operator"] == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings"],
            "resourceNames": [name],
            "verbs": ["get", "patch"],
        },
    ]

    pdb = r.one("PodDisruptionBudget", "-operator")
    assert pdb["spec"]["minAvailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items() and selector["app.kubernetes.io/component"] == "operator"
    # The LiteLLM PDB selector does not catch the operator pods and vice versa.
    assert all(
        p is pdb or p["spec"]["selector"]["matchLabels"] != selector for p in r.of_kind("PodDisruptionBudget")
    )

    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector


def test_on_with_watch_namespaces_a_kopf_peering_in_each_watched_namespace() -> None:
    r = render(DEFAULT, {**HA, "operator.watchNamespaces": "{team-a,team-b}"})
    name = env_of(operator_container(r))["KOPF_PEERING"]["value"]
    assert sorted(
        (d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in peering_objects(r)
    ) == [
        ("KopfPeering", name, "team-a"),
        ("KopfPeering", name, "team-b"),
    ]
    rules = kopf_rules(r)
    assert rules["gw-llm-gateway-operator"] == [], "no cluster-wide peering rights for a namespaced operator"
    assert rules["gw-llm-gateway-operator-namespaced"] == [
        {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "resourceNames": [name],
            "verbs": ["get", "patch"],
        },
    ]
    # ...and those rules are bound exactly where the peering objects are (plus the release namespace).
    bound = {
        b["metadata"]["namespace"]
        for b in r.of_kind("RoleBinding")
        if b["roleRef"]["name"] == "gw-llm-gateway-operator-namespaced"
    }
    assert bound == {"team-a", "team-b", NAMESPACE}


def test_on_values_reach_the_objects() -> None:
    r = render(
        DEFAULT,
        {
            **HA,
            "operator.highAvailability.replicas": "3",
            "operator.highAvailability.peeringName": "llmgw.peering",
            "operator.highAvailability.lifetimeSeconds": "20",
        },
    )
    env = env_of(operator_container(r))
    assert operator_deployment(r)["spec"]["replicas"] == 3
    assert env["KOPF_PEERING"]["value"] == "llmgw.peering"
    assert env["KOPF_PEERING_LIFETIME_SECONDS"]["value"] == "20"
    assert [d["metadata"]["name"] for d in peering_objects(r)] == ["llmgw.peering"]
    assert kopf_rules(r)["gw-llm-gateway-operator"][1]["resourceNames"] == ["llmgw.peering"]


def test_on_user_affinity_is_kept_and_own_anti_affinity_wins(tmp_path: Path) -> None:
    node = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}
            ]
        }
    }
    merged = render((*DEFAULT, values_file(tmp_path, {"operator": {"affinity": {"nodeAffinity": node}}})), HA)
    affinity = operator_deployment(merged)["spec"]["template"]["spec"]["affinity"]
    assert affinity["nodeAffinity"] == node and "podAntiAffinity" in affinity
    # Not when HA is off (today's render: the user's affinity alone).
    off = render((*DEFAULT, values_file(tmp_path, {"operator": {"affinity": {"nodeAffinity": node}}})))
    assert operator_deployment(off)["spec"]["template"]["spec"]["affinity"] == {"nodeAffinity": node}

    hard = {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "topologyKey": "topology.kubernetes.io/zone",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
            }
        ]
    }
    own = render((*DEFAULT, values_file(tmp_path, {"operator": {"affinity": {"podAntiAffinity": hard}}})), HA)
    assert operator_deployment(own)["spec"]["template"]["spec"]["affinity"] == {"podAntiAffinity": hard}


def test_on_notes_say_how_to_see_the_active_replica() -> None:
    def notes(*sets: str) -> str:
        out = helm(
            "install",
            "gw",
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
            *[a for f in DEFAULT for a in ("-f", str(f))],
            *sets,
        ).stdout
        return out[out.index("NOTES:") :]

    assert "peering" not in notes()
    text = notes("--set", "operator.highAvailability.enabled=true")
    assert "2 replicas, active/standby" in text
    assert "kubectl get clusterkopfpeering gw-llm-gateway-operator" in text
    text = notes(
        "--set", "operator.highAvailability.enabled=true", "--set", "operator.watchNamespaces={team-a}"
    )
    assert "kubectl -n team-a get kopfpeering gw-llm-gateway-operator" in text


@pytest.mark.parametrize("watch", [None, "team-a"])
def test_on_helm_lint_strict(watch: str | None) -> None:
    sets = ["--set", "operator.highAvailability.enabled=true"]
    sets += ["--set", f"operator.watchNamespaces={{{watch}}}"] if watch else []
    result = helm("lint", "--strict", str(CHART), *[a for f in DEFAULT for a in ("-f", str(f))], *sets)
    assert "0 chart(s) failed" in result.stdout


# --- schema -------------------------------------------------------------------------------------------------


def test_schema_ha_needs_two_replicas() -> None:
    error = template_error(DEFAULT, {**HA, "operator.highAvailability.replicas": "1"})
    assert "/operator/highAvailability/replicas" in error and "want 2" in error
    # Off, the value is unused and any positive count renders (one replica).
    off = render(DEFAULT, {"operator.highAvailability.replicas": "1"})
    assert operator_deployment(off)["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("operator.highAvailability.lifetimeSeconds", "5", "/operator/highAvailability/lifetimeSeconds"),
        ("operator.highAvailability.lifetimeSeconds", "7200", "/operator/highAvailability/lifetimeSeconds"),
        ("operator.highAvailability.peeringName", "Not_A_Name", "/operator/highAvailability/peeringName"),
        ("operator.highAvailability.replicas", "0", "/operator/highAvailability/replicas"),
        ("operator.highAvailability.enabled", "yes", "/operator/highAvailability/enabled"),
        ("operator.highAvailability.replica", "3", "replica"),
    ],
)
def test_schema_rejects_bad_ha_values(key: str, value: str, where: str) -> None:
    error = template_error(DEFAULT, {**HA, key: value})
    assert where in error, error


@pytest.mark.parametrize("name", PEERING_ENV)
def test_schema_keeps_peering_settings_out_of_extra_env(name: str) -> None:
    """A pinned KOPF_PEERING_PRIORITY would pause every replica; KOPF_PEERING on the single Recreate replica
    without a peering object would pause the only operator. Peering is highAvailability's alone."""
    error = template_error(DEFAULT, {"operator.extraEnv[0].name": name, "operator.extraEnv[0].value": "1"})
    assert "/operator/extraEnv/0" in error


# --- CRDs ---------------------------------------------------------------------------------------------------


def test_kopf_peering_crds_ship_with_the_chart_as_kopf_defines_them() -> None:
    crds = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all(helm("show", "crds", str(CHART)).stdout) if d
    }
    assert {"gatewaytiers.llmgateway.io", "gatewayusers.llmgateway.io"} <= crds.keys()
    cluster, namespaced = crds["clusterkopfpeerings.kopf.dev"], crds["kopfpeerings.kopf.dev"]
    for crd, scope, kind in (
        (cluster, "Cluster", "ClusterKopfPeering"),
        (namespaced, "Namespaced", "KopfPeering"),
    ):
        assert crd["spec"]["scope"] == scope and crd["spec"]["names"]["kind"] == kind
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    # The resilience suite applies its own copy of the cluster-scoped one to the same API server: keep one
    # definition.
    resilience = yaml.safe_load((REPO_ROOT / "tests" / "resilience" / "kopf-peering.yaml").read_text())
    assert resilience["spec"] == cluster["spec"]
    # The chart's own crds/*.yaml stay an exact copy of the repository's (test_chart_render checks the bytes).
    assert [p.name for p in (CHART / "crds").glob("*.yaml") if "kopf.dev" in p.read_text()] == []


# --- against the real kube-apiserver ------------------------------------------------------------------------

RELEASE = "ha-op"
SERVICE_ACCOUNT = f"{RELEASE}-llm-gateway-operator"
SUBJECT = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def ha_render(peering: str, watch: str | None, lifetime: int = 60) -> Rendered:
    sets = [
        "--set",
        "operator.highAvailability.enabled=true",
        "--set",
        f"operator.highAvailability.peeringName={peering}",
        "--set",
        f"operator.highAvailability.lifetimeSeconds={lifetime}",
    ]
    if watch:
        sets += ["--set", f"operator.watchNamespaces={{{watch}}}"]
    text = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *[a for f in DEFAULT for a in ("-f", str(f))],
        *sets,
    ).stdout
    return parse(text)


def ensure_namespace(name: str) -> None:
    """The namespace exists and is Active: one left Terminating by an earlier test (deleted without
    waiting) is waited out first, or it would vanish under the test that reuses its name."""
    existing = get("namespace", name, None)
    if existing is not None and existing.get("status", {}).get("phase") == "Terminating":
        kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=120s")
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )


@pytest.fixture(scope="module")
def kopf_crds(stack_env: dict[str, str]) -> dict[str, str]:
    """Our CRDs and kopf's peering CRDs (from the chart) established on the stack's API server. Left in place,
    like test_chart_apiserver leaves ours: the resilience suite applies the same ClusterKopfPeering CRD."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(KOPF_CRDS))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusterkopfpeerings.kopf.dev",
        "crd/kopfpeerings.kopf.dev",
        "crd/gatewaytiers.llmgateway.io",
        "crd/gatewayusers.llmgateway.io",
    )
    ensure_namespace(NAMESPACE)
    return stack_env


@pytest.fixture(params=["all-namespaces", "watch-namespaces"])
def applied(
    request: pytest.FixtureRequest, kopf_crds: dict[str, str]
) -> Iterator[tuple[str, str, str, Rendered]]:
    """(mode, user namespace, peering name, render): the HA render's ServiceAccount, RBAC and peering
    objects applied for real (the workloads are not: replicas run as local processes)."""
    mode = str(request.param)
    # A fresh namespace per use: the previous test's one is deleted without waiting, and a namespace still
    # Terminating looks present to ensure_namespace and then vanishes under the test (seen in CI).
    user_ns = f"ha-{RUN}-{mode[:3]}-{uuid.uuid4().hex[:6]}"
    peering = f"ha-{RUN}-{mode[:3]}"
    ensure_namespace(user_ns)
    r = ha_render(peering, user_ns if mode == "watch-namespaces" else None, lifetime=15)
    objects = [
        d
        for d in r.docs
        if d["kind"]
        in ("ClusterRole", "ClusterRoleBinding", "RoleBinding", "ClusterKopfPeering", "KopfPeering")
        or (d["kind"] == "ServiceAccount" and d["metadata"]["name"] == SERVICE_ACCOUNT)
    ]
    manifest = yaml.safe_dump_all(objects)
    kubectl("apply", "-f", "-", stdin=manifest)
    try:
        yield mode, user_ns, peering, r
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=manifest, check=False)
        kubectl("delete", "namespace", user_ns, "--wait=false", "--ignore-not-found", check=False)


pytest_stack = pytest.mark.stack


@pytest_stack
@pytest.mark.parametrize("watch", [None, "team-a"])
def test_ha_render_passes_a_server_side_dry_run(kopf_crds: dict[str, str], watch: str | None) -> None:
    for namespace in ("team-a",):
        ensure_namespace(namespace)
    sets = {**HA, **({"operator.watchNamespaces": f"{{{watch}}}"} if watch else {})}
    text = template_text(DEFAULT, sets)
    objects = parse(text).docs
    assert any(d["apiVersion"] == "kopf.dev/v1" for d in objects)
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=text)
    accepted = [line for line in result.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(objects), result


def can_i(verb: str, resource: str, namespace: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", SUBJECT]
    args += ["-n", namespace] if namespace else []
    return kubectl(*args, check=False).strip() == "yes"


@pytest_stack
def test_chart_rbac_grants_kopf_peering_on_its_own_object_only(
    applied: tuple[str, str, str, Rendered],
) -> None:
    mode, ns, peering, _ = applied
    other_ns = f"ha-{RUN}-elsewhere"
    if mode == "all-namespaces":
        kind = "clusterkopfpeerings.kopf.dev"
        allowed = [
            ("list", kind),
            ("watch", kind),
            ("get", f"{kind}/{peering}"),
            ("patch", f"{kind}/{peering}"),
        ]
        denied = [
            ("patch", f"{kind}/someone-else"),
            ("get", f"{kind}/someone-else"),
            ("create", kind),
            ("delete", f"{kind}/{peering}"),
            ("update", f"{kind}/{peering}"),
        ]
        assert all(can_i(v, res) for v, res in allowed), [(v, res) for v, res in allowed if not can_i(v, res)]
        assert not any(can_i(v, res) for v, res in denied), [(v, res) for v, res in denied if can_i(v, res)]
        assert not can_i("list", "kopfpeerings.kopf.dev", ns)
    else:
        kind = "kopfpeerings.kopf.dev"
        for verb, res in [
            ("list", kind),
            ("watch", kind),
            ("get", f"{kind}/{peering}"),
            ("patch", f"{kind}/{peering}"),
        ]:
            assert can_i(verb, res, ns), (verb, res, ns)
        for verb, res, where in [
            ("patch", f"{kind}/someone-else", ns),
            ("delete", f"{kind}/{peering}", ns),
            ("list", kind, other_ns),
            ("patch", f"{kind}/{peering}", other_ns),
        ]:
            assert not can_i(verb, res, where), (verb, res, where)
        assert not can_i("list", "clusterkopfpeerings.kopf.dev")
        assert not can_i("patch", f"clusterkopfpeerings.kopf.dev/{peering}")


def peering_records(mode: str, ns: str, peering: str) -> dict[str, Any]:
    obj = (
        get("clusterkopfpeering", peering, None)
        if mode == "all-namespaces"
        else get("kopfpeering", peering, ns)
    )
    return dict((obj or {}).get("status") or {})


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def handled(replica: Any, ns: str, name: str) -> bool:
    return f"[{ns}/{name}] Handler 'user_reconcile' succeeded" in replica.log_text()


@pytest_stack
def test_two_replicas_under_the_chart_rbac_never_act_together_and_hand_over_on_exit(
    applied: tuple[str, str, str, Rendered], kopf_crds: dict[str, str], tmp_path: Path
) -> None:
    from tests.stack.common import free_port
    from tests.stack.operator import OperatorProcess, healthy, operator_env, pause_stack_operator

    mode, ns, peering, r = applied
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h").strip()
    kubeconfig = service_account_kubeconfig(kopf_crds["KUBECONFIG"], token, tmp_path / "operator.kubeconfig")
    # The settings the chart gives the operator container (POD_ID is a fieldRef: the pod's name).
    chart_env = {
        name: item["value"]
        for name, item in env_of(operator_container(r)).items()
        if name in ("KOPF_PEERING", "KOPF_PEERING_LIFETIME_SECONDS", "WATCH_NAMESPACES")
    }
    assert chart_env["KOPF_PEERING"] == peering and "KOPF_PEERING_PRIORITY" not in env_of(
        operator_container(r)
    )
    pods = [f"{SERVICE_ACCOUNT}-{RUN}{i}" for i in range(2)]
    metrics_ports = [free_port() for _ in pods]
    replicas = [
        OperatorProcess(
            f"operator-ha-{RUN}-{mode[:3]}-{i}",
            operator_env(
                kopf_crds,
                0,
                KUBECONFIG=str(kubeconfig),
                RESYNC_INTERVAL_SECONDS="30",
                METRICS_PORT=str(metrics_ports[i]),
                POD_ID=pod,
                **chart_env,
            ),
        )
        for i, pod in enumerate(pods)
    ]
    tier, users = f"ha-{RUN}-{mode[:3]}", ["alice", "bob"]
    with cast(AbstractContextManager[object], pause_stack_operator()):
        try:
            for replica in replicas:
                replica.start()
            records = wait_for(
                "both replicas in the peering object",
                lambda: (rec := peering_records(mode, ns, peering)) and set(pods) <= rec.keys() and rec,
                timeout=60,
            )
            priorities = {pod: int(records[pod]["priority"]) for pod in pods}
            assert len(set(priorities.values())) == 2, f"random priorities collided: {priorities}"
            active_pod = max(pods, key=lambda p: priorities[p])
            active, standby = (
                (replicas[0], replicas[1]) if active_pod == pods[0] else (replicas[1], replicas[0])
            )
            kopf_log = "Pausing all operators"  # what kopf says when replicas share the top priority
            assert kopf_log not in active.log_text() + standby.log_text()

            apply_tier(tier)

            def apply(name: str) -> None:
                apply_user(name, ns, f"{name}-{RUN}-{mode[:3]}@example.com", tier)

            apply(users[0])
            wait_for("first user Ready", lambda: ready(get("gatewayuser", users[0], ns)), timeout=90)
            wait_for("the active replica logs the handler", lambda: handled(active, ns, users[0]), timeout=15)
            mine = (f"[{ns}/", f"[{tier}]")
            touched = [line for line in standby.log_text().splitlines() if any(m in line for m in mine)]
            assert touched == [], "the standby handled our objects:\n" + "\n".join(touched)
            # The standby is alive for its liveness probe, and exports no user gauges (no double count).
            assert healthy(standby.health_url)
            gauges = [
                line
                for line in metrics_text(metrics_ports[replicas.index(active)]).splitlines()
                if line.startswith("llmgw_users{") and f'tier="{tier}"' in line
            ]
            assert gauges, "the active replica exports the user gauge"
            assert "llmgw_users{" not in metrics_text(metrics_ports[replicas.index(standby)])

            # A rollout or drain: the active pod gets SIGTERM, leaves the peering, the standby takes over.
            resumed_before = standby.log_text().count("Resuming operations")
            stopped_at = time.monotonic()
            active.stop()
            wait_for(
                "the standby resumes",
                lambda: standby.log_text().count("Resuming operations") > resumed_before,
                timeout=60,
            )
            takeover = time.monotonic() - stopped_at
            assert active_pod not in peering_records(mode, ns, peering), "a clean exit removes its record"
            apply(users[1])
            wait_for("second user Ready", lambda: ready(get("gatewayuser", users[1], ns)), timeout=90)
            wait_for("the new active replica logs it", lambda: handled(standby, ns, users[1]), timeout=15)
            assert not handled(active, ns, users[1])
            # Whoever handled them, each user has exactly one key and it is the one in its Secret.
            admin = Admin(kopf_crds)
            for name in users:
                alias = f"llmgw.{ns}.{name}"
                keys = admin.keys(alias)
                assert [k["key_alias"] for k in keys] == [alias], f"{name}: exactly one key"
                secret = get("secret", f"{name}-llm-key", ns) or {}
                want = sha(base64.b64decode(secret["data"]["api-key"]).decode())
                token = keys[0]["token"]
                assert token == want, f"{name}: the Secret and LiteLLM disagree"
            print(
                f"\n[measure] {mode}: takeover after a clean exit of the active replica {takeover:.1f}s "
                f"(lifetime {chart_env['KOPF_PEERING_LIFETIME_SECONDS']}s); "
                f"priorities {sorted(priorities.values())}"
            )
            # The new active replica runs the finalizers: delete goes through.
            for name in users:
                kubectl("delete", "gatewayuser", name, "-n", ns, "--wait=false")
            wait_for("users gone", lambda: all(get("gatewayuser", n, ns) is None for n in users), timeout=60)
        finally:
            for name in users:
                kubectl(
                    "delete", "gatewayuser", name, "-n", ns, "--ignore-not-found", "--wait=false", check=False
                )
            kubectl("delete", "gatewaytier", tier, "--ignore-not-found", "--wait=false", check=False)
            with contextlib.suppress(AssertionError):  # its finalizer needs a running replica
                wait_for("tier gone", lambda: get("gatewaytier", tier, None) is None, timeout=60)
            for replica in replicas:
                replica.stop()
    for replica in replicas:
        log = replica.log_text()
        for denied in ("Forbidden", "forbidden", "Not enough permissions"):
            assert denied not in log, f"{mode}: a replica hit a permission error:\n{replica.log_tail(60)}"


@pytest_stack
def test_helm_upgrade_turns_ha_on_and_off(kopf_crds: dict[str, str]) -> None:
    """A real `helm install` / `upgrade` against the API server (hooks skipped: no kubelet runs the
    migration Job): the existing kopf CRDs are skipped, HA on adds the peering object, PDB and a
    RollingUpdate strategy, HA off takes them away again (the API server accepts the switch back to
    Recreate: the rendered rollingUpdate block is removed with it)."""
    ns, release = f"ha-upg-{RUN}", f"upg{RUN}"
    ensure_namespace(ns)
    name = f"{release}-llm-gateway-operator"
    base = ["--namespace", ns, "--no-hooks", *[a for f in DEFAULT for a in ("-f", str(f))]]

    def state() -> tuple[int, str, bool, bool]:
        deployment = get("deployment", name, ns) or {}
        spec = deployment.get("spec", {})
        return (
            int(spec.get("replicas", 0)),
            str(spec.get("strategy", {}).get("type")),
            get("clusterkopfpeering", name, None) is not None,
            get("poddisruptionbudget", name, ns) is not None,
        )

    try:
        helm("install", release, str(CHART), *base)
        assert state() == (1, "Recreate", False, False)
        helm("upgrade", release, str(CHART), *base, "--set", "operator.highAvailability.enabled=true")
        assert state() == (2, "RollingUpdate", True, True)
        helm("upgrade", release, str(CHART), *base)
        assert state() == (1, "Recreate", False, False)
    finally:
        helm("uninstall", release, "--namespace", ns, check=False)
        kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest_stack
def test_a_namespaced_operator_waits_for_the_kopf_peering_object_the_chart_renders(
    kopf_crds: dict[str, str],
) -> None:
    """Why the chart renders a KopfPeering in every watched namespace: with KOPF_PEERING set, kopf keeps a
    namespaced operator paused (silently, at INFO) until the peering object exists in its namespace."""
    from tests.stack.operator import OperatorProcess, operator_env, pause_stack_operator

    ns = f"ha-{RUN}-obj"
    peering = f"ha-{RUN}-obj"
    ensure_namespace(ns)
    r = ha_render(peering, ns, lifetime=15)
    (peering_object,) = peering_objects(r)
    chart_env = {n: i["value"] for n, i in env_of(operator_container(r)).items() if n.startswith("KOPF_")}
    chart_env["WATCH_NAMESPACES"] = env_of(operator_container(r))["WATCH_NAMESPACES"]["value"]
    assert chart_env["WATCH_NAMESPACES"] == ns and chart_env["KOPF_PEERING"] == peering
    tier = f"ha-{RUN}-obj"
    replica = OperatorProcess(f"operator-ha-{RUN}-obj", operator_env(kopf_crds, 0, **chart_env))
    apply_tier(tier)
    with cast(AbstractContextManager[object], pause_stack_operator()):
        replica.start()
        try:
            apply_user("carol", ns, f"carol-{RUN}@example.com", tier)
            time.sleep(15)  # Ready takes 1-3 s here when the operator acts
            assert not ready(get("gatewayuser", "carol", ns))
            assert f"[{ns}/carol]" not in replica.log_text()
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump(peering_object))
            wait_for(
                "Ready once the peering object exists", lambda: ready(get("gatewayuser", "carol", ns)), 60
            )
            kubectl("delete", "gatewayuser", "carol", "-n", ns, "--wait=false")
            wait_for("user gone", lambda: get("gatewayuser", "carol", ns) is None, timeout=60)
        finally:
            kubectl(
                "delete", "gatewayuser", "carol", "-n", ns, "--ignore-not-found", "--wait=false", check=False
            )
            kubectl("delete", "gatewaytier", tier, "--ignore-not-found", "--wait=false", check=False)
            with contextlib.suppress(AssertionError):
                wait_for("tier gone", lambda: get("gatewaytier", tier, None) is None, timeout=60)
            replica.stop()
            kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
