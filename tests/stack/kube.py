"""The stack's Kubernetes API: a real etcd + kube-apiserver (envtest-style: no nodes, no pods), plus
kube-controller-manager running only the garbage-collector, namespace and serviceaccount controllers when
it was built, so ownerReference GC and namespace deletion behave as in a cluster.

Binaries come from KUBEBUILDER_ASSETS (setup-envtest users) or .cache/kubebuilder-assets (`make k8s-assets`).
Every start is a fresh cluster: new certificates, an empty etcd. It writes .stack/kube/kubeconfig (context
`llmgw-local`, admin = CN=admin, O=system:masters), applies crds/*.yaml, creates the `llm-gateway` and `demo`
namespaces and returns KUBECONFIG and KUBEBUILDER_ASSETS.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.stack.common import CACHE_DIR, REPO_ROOT, StackContext, StackError, free_port, say

CONTEXT_NAME = "llmgw-local"
NAMESPACES = ("llm-gateway", "demo")
CRD_DIR = REPO_ROOT / "crds"
DEFAULT_ASSETS = CACHE_DIR / "kubebuilder-assets"
REQUIRED_ASSETS = ("kube-apiserver", "etcd", "kubectl")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
# The apiserver refuses a loopback advertise address; with --endpoint-reconciler-type=none it is only
# recorded, never dialled. TEST-NET-1 (RFC 5737) so it can never be a real host.
ADVERTISE_ADDRESS = "192.0.2.10"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KCM_CONTROLLERS = "garbage-collector-controller,namespace-controller,serviceaccount-controller"


def assets_dir() -> Path:
    """KUBEBUILDER_ASSETS when it holds the binaries, else the folder `make k8s-assets` fills."""
    configured = os.environ.get("KUBEBUILDER_ASSETS")
    if configured and all(os.access(Path(configured) / name, os.X_OK) for name in REQUIRED_ASSETS):
        return Path(configured).resolve()
    missing = [name for name in REQUIRED_ASSETS if not os.access(DEFAULT_ASSETS / name, os.X_OK)]
    if missing:
        raise StackError(
            f"{', '.join(missing)} missing from {DEFAULT_ASSETS}: run `make k8s-assets` "
            "(or set KUBEBUILDER_ASSETS to a setup-envtest folder)"
        )
    return DEFAULT_ASSETS


def controller_manager(assets: Path) -> Path | None:
    for folder in (assets, DEFAULT_ASSETS):
        candidate = folder / "kube-controller-manager"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


# --- certificates -----------------------------------------------------------------------------------------


@dataclass
class Pki:
    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / name


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names or server_ips:
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in server_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def make_pki(folder: Path) -> Pki:
    """CA, apiserver serving cert, admin and controller-manager client certs, service-account key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("llmgw-local-ca")
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write(pki.path("ca.crt"), ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, subject: x509.Name, **kwargs: object) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, ca_name, ca_key, **kwargs)  # type: ignore[arg-type]
        _write(pki.path(f"{stem}.crt"), cert.public_bytes(serialization.Encoding.PEM))
        _write(pki.path(f"{stem}.key"), _pem_key(key), private=True)

    issue(
        "apiserver",
        _name("kube-apiserver"),
        server_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        server_ips=("127.0.0.1", SERVICE_IP),
    )
    issue("admin", _name("admin", "system:masters"), client=True)
    # Its controllers delete arbitrary objects (GC, namespace cleanup): in a real cluster they would use
    # per-controller service accounts; here the controller-manager is simply a cluster admin.
    issue("controller-manager", _name("system:kube-controller-manager", "system:masters"), client=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.path("sa.key"), _pem_key(sa_key), private=True)
    _write(
        pki.path("sa.pub"),
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki, user: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode(pki.path(name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT_NAME, "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{user}.crt"),
                    "client-key-data": b64(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
    }
    # JSON is YAML; kubectl, kopf and kubernetes_asyncio all read it.
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


# --- processes --------------------------------------------------------------------------------------------


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.status == 200)


def spawn_etcd(ctx: StackContext, etcd: Path, data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    client_port, peer_port = free_port(), free_port()
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    process = ctx.spawn(
        "etcd",
        [
            str(etcd),
            "--name=llmgw",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=llmgw={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    return client_url, process


def spawn_apiserver(
    ctx: StackContext, apiserver: Path, pki: Pki, etcd_url: str, state: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    cert_dir = state / "apiserver-certs"
    cert_dir.mkdir(exist_ok=True)
    process = ctx.spawn(
        "kube-apiserver",
        [
            str(apiserver),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={pki.path('apiserver.crt')}",
            f"--tls-private-key-file={pki.path('apiserver.key')}",
            f"--client-ca-file={pki.path('ca.crt')}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.path('sa.pub')}",
            f"--service-account-signing-key-file={pki.path('sa.key')}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
        ],
    )
    return f"https://127.0.0.1:{port}", process


def spawn_controller_manager(
    ctx: StackContext, binary: Path, kubeconfig: Path, pki: Pki, state: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    cert_dir = state / "controller-manager-certs"
    cert_dir.mkdir(exist_ok=True)
    process = ctx.spawn(
        "kube-controller-manager",
        [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--controllers={KCM_CONTROLLERS}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={cert_dir}",
            f"--root-ca-file={pki.path('ca.crt')}",
            f"--service-account-private-key-file={pki.path('sa.key')}",
            "--use-service-account-credentials=false",
            "--profiling=false",
        ],
    )
    return f"https://127.0.0.1:{port}/healthz", process


def run_kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"kubectl {' '.join(args[:2])} timed out after {error.timeout:.0f}s") from error
    if result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def apply_crds(kubectl: Path, kubeconfig: Path) -> int:
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        return 0
    file_args = [arg for path in files for arg in ("-f", str(path))]
    run_kubectl(kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", *file_args)
    run_kubectl(kubectl, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *file_args)
    return len(files)


def create_namespaces(kubectl: Path, kubeconfig: Path) -> None:
    manifest = "\n---\n".join(
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for name in NAMESPACES
    )
    run_kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=manifest)


def start(ctx: StackContext) -> dict[str, str]:
    started = time.monotonic()
    assets = assets_dir()
    state = ctx.state_dir("kube")
    for leftover in ("etcd-data", "pki", "apiserver-certs", "controller-manager-certs"):
        shutil.rmtree(state / leftover, ignore_errors=True)  # every start is a fresh cluster
    pki = make_pki(state / "pki")

    # The apiserver retries etcd until it answers, so both start at once.
    etcd_url, etcd = spawn_etcd(ctx, assets / "etcd", state / "etcd-data")
    server, apiserver = spawn_apiserver(ctx, assets / "kube-apiserver", pki, etcd_url, state)
    ctx.wait_until("etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout=30, process=etcd, interval=0.05)
    admin = ssl.create_default_context(cafile=str(pki.path("ca.crt")))
    admin.load_cert_chain(str(pki.path("admin.crt")), str(pki.path("admin.key")))
    ctx.wait_until(
        "kube-apiserver", lambda: _http_ok(f"{server}/readyz", admin), timeout=90, process=apiserver
    )
    kubeconfig = state / "kubeconfig"
    write_kubeconfig(kubeconfig, server, pki, "admin")
    say(f"kube: API ready at {server} after {time.monotonic() - started:.1f}s; kubeconfig {kubeconfig}")

    kcm_binary = controller_manager(assets)
    kcm: tuple[str, subprocess.Popen[bytes]] | None = None
    if kcm_binary is not None:
        kcm_config = state / "controller-manager.kubeconfig"
        write_kubeconfig(kcm_config, server, pki, "controller-manager")
        kcm = spawn_controller_manager(ctx, kcm_binary, kcm_config, pki, state)
    else:
        say("kube: no kube-controller-manager built; ownerReference GC and namespace deletion will not run")

    kubectl = assets / "kubectl"
    applied = apply_crds(kubectl, kubeconfig)
    say(f"kube: {applied} CRD file(s) from crds/ applied and Established")
    create_namespaces(kubectl, kubeconfig)

    if kcm is not None:
        healthz, process = kcm
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving cert; /healthz carries no data
        ctx.wait_until(
            "kube-controller-manager", lambda: _http_ok(healthz, insecure), timeout=60, process=process
        )
    return {"KUBECONFIG": str(kubeconfig), "KUBEBUILDER_ASSETS": str(assets)}
