"""README.md's doc test: every fenced block of the README is classified below and exercised.

Shell, Python and JavaScript blocks run in document order in one scratch working directory (a copy of
`manifests/`, the chart reachable as `charts/`, the stack's env file as `.stack/env`), with the real
kubectl, helm and gatewayctl first on PATH and the environment carried from one command to the next, as
a reader pasting them into one terminal. What cannot run here is run as far as it goes: the EKS install
against a scratch namespace with `helm install --dry-run=server`, `make` targets with `make -n` (make
test would recurse into this test). YAML examples are applied with `--dry-run=server` to the real
kube-apiserver and validated by gatewayctl; the sample outputs are reproduced where they are
deterministic. A block this file does not classify fails the test: add it to HANDLERS.

Key values never reach the output: everything shown on failure is masked.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.readme_blocks import (
    Block,
    Hidden,
    Masker,
    Ran,
    Shell,
    base_path,
    nonempty_env,
    parse_blocks,
    split_commands,
)
from tests.stack import kubectl as k
from tests.stack.common import CACHE_DIR, ENV_FILE, REPO_ROOT

README = REPO_ROOT / "README.md"
BLOCKS = parse_blocks(README)
PYTHON = sys.executable
# What `npm install openai` resolved to when this test was written; pinned so the run is repeatable.
OPENAI_NPM = "openai@7.59.0"
# GatewayUsers the README's commands create in `demo`; removed before and after the run.
README_USERS = ["dana-company-com", "frank-company-com", "grace-company-com", "heidi-company-com"]


@dataclass
class Ctx:
    shell: Shell
    stack: dict[str, str] = field(repr=False)  # holds the master key: never in a traceback
    scratch_namespace: str = ""
    attempted: set[int] = field(default_factory=set)  # README lines of the blocks already run


Handler = Callable[[Ctx, Block], None]


@dataclass(frozen=True)
class Entry:
    handler: Handler
    needs_stack: bool
    how: str


HANDLERS: dict[tuple[str, str], Entry] = {}


def handles(lang: str, fingerprint: str, how: str, *, stack: bool = True) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        key = (lang, fingerprint)
        assert key not in HANDLERS, f"classified twice: {key}"
        HANDLERS[key] = Entry(handler, stack, how)
        return handler

    return register


def following_block(block: Block, lang: str) -> Block:
    after = [b for b in BLOCKS if b.line > block.line]
    assert after and after[0].lang == lang, f"{block}: expected a ```{lang} block right after it"
    return after[0]


def only(results: list[Ran], count: int) -> list[Ran]:
    assert len(results) == count, f"expected {count} commands, ran {[r.command for r in results]}"
    return results


def is_secret_key(value: Hidden, secret: str) -> bool:
    """Compared here, not in an assert, so a mismatch never prints a key."""
    return value.startswith("sk-") and value == k.read_secret_value(secret, "demo", "api-key")


# --- shell blocks, in README order -------------------------------------------------------------------


def make_dry_run(ctx: Ctx, block: Block) -> None:
    for command in split_commands(block.text):
        words = command.split("#")[0].split()
        assert words[0] == "make" and len(words) == 2, f"{block}: not a plain `make TARGET`: {command}"
        result = subprocess.run(
            ["make", "-n", words[1]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"`make -n {words[1]}` failed: {result.stderr}"


handles(
    "bash",
    "make demo    # the main job end to end on a local stack, then stops it",
    "make -n on each target (make test would recurse into this test)",
    stack=False,
)(make_dry_run)
handles(
    "bash", "make install      # the project and dev tools into .venv", "make -n on each target", stack=False
)(make_dry_run)


@handles("bash", "kubectl get gatewayusers -n demo", "run; its header and rows checked against the sample")
def get_gatewayusers(ctx: Ctx, block: Block) -> None:
    (ran,) = only(ctx.shell.run_block(block), 1)
    sample = following_block(block, "text").text.splitlines()
    lines = ran.stdout.splitlines()
    assert lines[0].split() == sample[0].split(), f"header differs from the README sample:\n{ran.stdout}"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for row in sample[1:]:
        name, email, tier = row.split()[:3]
        assert rows[name][1:3] == [email, tier], f"{name}: {rows.get(name)} vs README {row}"
    assert rows["alice"][5] == "True"


@handles(
    "bash",
    "export OPENAI_API_KEY=$(kubectl get secret alice-llm-key -n demo -o jsonpath='{.data.api-key}' "
    "| base64 -d)",
    "run; the exported values equal alice's Secret",
)
def export_key(ctx: Ctx, block: Block) -> None:
    only(ctx.shell.run_block(block), 2)
    env = nonempty_env(ctx.shell.env, "OPENAI_API_KEY", "OPENAI_BASE_URL")
    ctx.shell.mask.add(env["OPENAI_API_KEY"])
    assert is_secret_key(Hidden(env["OPENAI_API_KEY"]), "alice-llm-key"), (
        "OPENAI_API_KEY is not alice's api-key"
    )
    assert env["OPENAI_BASE_URL"] == ctx.stack["LLM_GATEWAY_URL"] and env["OPENAI_BASE_URL"].endswith("/v1")


@handles("bash", 'curl -sS "$OPENAI_BASE_URL/chat/completions" \\', "run; a chat completion comes back")
def curl_chat(ctx: Ctx, block: Block) -> None:
    (ran,) = only(ctx.shell.run_block(block), 1)
    body = json.loads(ran.stdout)
    assert body["choices"][0]["message"]["content"], body
    assert body["usage"]["total_tokens"] > 0


def json_documents(text: str) -> list[dict[str, Any]]:
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
        while at < len(text) and text[at].isspace():
            at += 1
    return docs


@handles(
    "bash",
    'curl -sS "${OPENAI_BASE_URL%/v1}/user/info" -H "Authorization: Bearer $OPENAI_API_KEY"',
    "run; the fields the README names are there, with alice's tier values",
)
def curl_info(ctx: Ctx, block: Block) -> None:
    user, key = (json_documents(ran.stdout)[0] for ran in only(ctx.shell.run_block(block), 2))
    assert user["user_id"] == "alice@company.com"
    info = user["user_info"]
    assert (info["max_budget"], info["rpm_limit"]) == (500.0, 100), info
    assert "model-reasoning" in info["models"] and info["budget_reset_at"] and "spend" in info
    assert isinstance(user["keys"], list)
    assert key["info"]["key_alias"] == "llmgw.demo.alice" and key["info"]["max_budget"] == 500.0


@handles(
    "bash",
    "source .stack/env          # KUBECONFIG, LITELLM_ADMIN_URL, LITELLM_MASTER_KEY, OPERATOR_HEALTH_URL",
    "run; the four variables are set and health is green",
)
def health(ctx: Ctx, block: Block) -> None:
    assert "LITELLM_MASTER_KEY" not in ctx.shell.env  # it must come from `source .stack/env`
    _, ran = only(ctx.shell.run_block(block), 2)
    nonempty_env(
        ctx.shell.env, "KUBECONFIG", "LITELLM_ADMIN_URL", "LITELLM_MASTER_KEY", "OPERATOR_HEALTH_URL"
    )
    lines = ran.stdout.splitlines()
    status_at = lines[0].index("STATUS")
    checks = {line[:status_at].strip(): line[status_at:].split()[0] for line in lines[1:-1] if line.strip()}
    for name in (
        "kubernetes",
        "operator",
        "litellm liveness",
        "litellm readiness",
        "database",
        "bedrock route",
    ):
        assert checks.get(name) == "OK", ran.stdout
    assert ran.stdout.splitlines()[-1].strip() == "healthy", ran.stdout


@handles(
    "bash",
    "gatewayctl tiers apply     # drafting $2/10 RPM, coding $20/50 RPM, architect $500/100 RPM; idempotent",
    "run; the three tiers applied and listed with the budgets the comment names",
)
def tiers(ctx: Ctx, block: Block) -> None:
    applied, listed = only(ctx.shell.run_block(block), 2)
    for tier in ("drafting", "coding", "architect"):
        assert f"GatewayTier/{tier} unchanged" in applied.stdout, applied.stdout  # already as manifests/
        assert tier in listed.stdout
    assert all(money in listed.stdout for money in ("$2.00", "$20.00", "$500.00")), listed.stdout


@handles(
    "bash",
    "gatewayctl users add --email dana@company.com --tier coding --namespace demo --display-name "
    '"Dana Diaz" --wait',
    "run; dana's key printed by the second command is the one in her Secret",
)
def users_add(ctx: Ctx, block: Block) -> None:
    added, key = only(ctx.shell.run_block(block), 2)
    assert "GatewayUser/demo/dana-company-com created" in added.stdout, ctx.shell.mask(added.stdout)
    value = Hidden(key.stdout.strip())
    ctx.shell.mask.add(value)
    assert is_secret_key(value, "dana-company-com-llm-key"), "the printed value is not dana's api-key"


@handles(
    "bash",
    "gatewayctl users add --email erin@company.com --tier drafting --namespace demo -o yaml",
    "run; the printed manifest passes a server-side dry run and nothing was created",
)
def users_add_yaml(ctx: Ctx, block: Block) -> None:
    (ran,) = only(ctx.shell.run_block(block), 1)
    doc = yaml.safe_load(ran.stdout)
    assert (doc["kind"], doc["metadata"]["name"], doc["spec"]["email"]) == (
        "GatewayUser",
        "erin-company-com",
        "erin@company.com",
    )
    assert k.get_json("gatewayuser", "erin-company-com", "demo") is None
    assert "(server dry run)" in k.kubectl("apply", "--dry-run=server", "-f", "-", stdin=ran.stdout)


@handles("bash", "cat > users.csv <<'EOF'", "run; YAML written, users created, the re-run changes nothing")
def csv_import(ctx: Ctx, block: Block) -> None:
    results = only(ctx.shell.run_block(block), 5)
    _, check, out, apply, again = results
    for name in ("frank-company-com", "grace-company-com", "heidi-company-com"):
        assert name in check.stdout, check.stdout
    written = sorted(p.name for p in (ctx.shell.cwd / "gitops" / "users").glob("*.yaml"))
    assert written == ["frank-company-com.yaml", "grace-company-com.yaml", "heidi-company-com.yaml"], (
        out.stdout
    )
    assert "3 created" in apply.stdout, apply.stdout
    assert "0 created, 0 updated, 3 unchanged" in again.stdout, again.stdout
    heidi = k.get_json("gatewayuser", "heidi-company-com", "demo")
    assert heidi and heidi["spec"]["displayName"] == "Heidi Weiß"


@handles(
    "bash",
    "gatewayctl users list --namespace demo         # email, tier, spend, budget, remaining, RPM, "
    "ready, key age",
    "run; each output format parsed",
)
def users_list_usage(ctx: Ctx, block: Block) -> None:
    table, csv_out, usage, usage_json = only(ctx.shell.run_block(block), 4)
    header = table.stdout.lower()
    for column in ("email", "tier", "spend", "budget", "remaining", "rpm", "ready", "key age"):
        assert column in header, table.stdout
    assert "alice@company.com" in table.stdout and "dana@company.com" in table.stdout
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    alice = next(row for row in rows if row["email"] == "alice@company.com")
    assert (alice["namespace"], alice["tier"], alice["ready"]) == ("demo", "architect", "True"), alice
    assert "by tier" in usage.stdout and "by user" in usage.stdout, usage.stdout
    month = json.loads(usage_json.stdout)
    assert month["month"] == datetime.now(UTC).strftime("%Y-%m")
    # LITELLM_* come from `source .stack/env` above, so usage reads LiteLLM's spend records, as README says.
    assert month["source"] == "litellm", month["source"]
    spent = {user["email"]: user["spendUSD"] for user in month["users"]}
    assert spent["alice@company.com"] > 0, "alice's calls above (curl, Python, Node) were not counted"


@handles(
    "bash", "gatewayctl validate manifests/ gitops/", "run on manifests/ plus the YAML the CSV import wrote"
)
def validate(ctx: Ctx, block: Block) -> None:
    (ran,) = only(ctx.shell.run_block(block), 1)
    assert ran.stdout.startswith("OK: 9 file(s), 3 tier(s), 6 user(s); 0 error(s)"), ran.stdout


# The chart's values a reader writes as my-values.yaml (manifests/aws/README.md step 8, one replica, so no
# Redis): only what the schema requires, with the Secret names the README creates.
MY_VALUES = {
    "aws": {"irsa": {"roleArn": "arn:aws:iam::123456789012:role/llm-gateway-litellm"}},
    "litellm": {
        "image": {"digest": "sha256:" + "0" * 64},
        "masterKeySecret": {"name": "llm-gateway-litellm-keys"},
        "database": {"existingSecret": {"name": "llm-gateway-rds"}},
    },
    "operator": {"gatewayPublicUrl": "https://llm.example.com/v1"},
}


def rendered_docs(helm_output: str) -> list[dict[str, Any]]:
    text = helm_output.split("\nNOTES:")[0]
    text = "\n".join(line for line in text.splitlines() if line not in ("HOOKS:", "MANIFEST:"))
    start = text.index("---")
    return [doc for doc in yaml.safe_load_all(text[start:]) if isinstance(doc, dict)]


def secret_refs(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    refs = set()
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec") or (
            doc["spec"] if doc["kind"] == "Pod" else {}
        )
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    refs.add((ref["name"], ref["key"]))
    return refs


@handles(
    "bash",
    "# 1. IAM role for LiteLLM's ServiceAccount with manifests/aws/bedrock-invoke-policy.json (see "
    "the guide)",
    "in a scratch namespace: Secrets created for real, helm install --dry-run=server",
)
def eks_install(ctx: Ctx, block: Block) -> None:
    namespace = ctx.scratch_namespace
    (ctx.shell.cwd / "my-values.yaml").write_text(yaml.safe_dump(MY_VALUES))

    def rewrite(command: str) -> str:
        command = re.sub(r"(-n |create namespace )llm-gateway\b", rf"\g<1>{namespace}", command)
        if command.startswith("helm install"):
            command += " --dry-run=server"
        return command

    results = [ctx.shell.run(command, rewrite=rewrite) for command in split_commands(block.text)]
    helm = next(r for r in results if r.command.startswith("helm install"))
    assert "STATUS: pending-install" in helm.stdout, ctx.shell.mask(helm.stdout[-2000:])
    secrets = json.loads(k.kubectl("get", "secrets", "-n", namespace, "-o", "json"))["items"]
    for secret in secrets:
        for value in secret.get("data", {}).values():
            ctx.shell.mask.add(value)
    have = {(s["metadata"]["name"], key) for s in secrets for key in s.get("data", {})}
    needed = secret_refs(rendered_docs(helm.stdout))
    assert needed, "the rendered chart reads no Secret at all?"
    missing = sorted(needed - have)
    assert not missing, f"the chart reads Secret keys the README's commands do not create: {missing}"


# --- Python and JavaScript, with alice's key exported by the README's own commands ---------------------


@handles("python", "from openai import OpenAI", "run with .venv's python and the exported OPENAI_* variables")
def python_sdk(ctx: Ctx, block: Block) -> None:
    assert "OPENAI_API_KEY" in ctx.shell.env, "run after the README's export block"
    (ctx.shell.cwd / "readme_example.py").write_text(block.text)
    ran = ctx.shell.run(f"{PYTHON} readme_example.py")
    assert ran.stdout.strip(), "no answer printed"


def node_modules() -> Path:
    folder = CACHE_DIR / "readme-npm" / OPENAI_NPM.replace("@", "-")
    if not (folder / "node_modules" / "openai" / "package.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text('{"name": "readme-example", "private": true}\n')
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", OPENAI_NPM],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"npm install {OPENAI_NPM} failed (npm registry reachable?): {result.stderr}"
        )
    return folder / "node_modules"


@handles("javascript", "import OpenAI from 'openai';", f"run with node and {OPENAI_NPM} from npm")
def node_sdk(ctx: Ctx, block: Block) -> None:
    assert "OPENAI_API_KEY" in ctx.shell.env, "run after the README's export block"
    link = ctx.shell.cwd / "node_modules"
    if not link.exists():
        link.symlink_to(node_modules())
    (ctx.shell.cwd / "readme_example.mjs").write_text(block.text)
    ran = ctx.shell.run("node readme_example.mjs")
    assert ran.stdout.strip(), "no answer printed"


# --- YAML examples ----------------------------------------------------------------------------------


def dry_run_and_validate(ctx: Ctx, text: str, *extra: str) -> None:
    out = k.kubectl("apply", "--dry-run=server", "-f", "-", stdin=text)
    assert "(server dry run)" in out
    path = ctx.shell.cwd / f"example-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    ctx.shell.run(f"gatewayctl validate {path.name} {' '.join(extra)}")


@handles(
    "yaml",
    "apiVersion: llmgateway.io/v1alpha1 / kind: GatewayTier",
    "kubectl apply --dry-run=server and gatewayctl validate",
)
def tier_example(ctx: Ctx, block: Block) -> None:
    dry_run_and_validate(ctx, block.text)


@handles(
    "yaml",
    "apiVersion: llmgateway.io/v1alpha1 / kind: GatewayUser",
    "kubectl apply --dry-run=server and gatewayctl validate (with the standard tiers)",
)
def user_example(ctx: Ctx, block: Block) -> None:
    dry_run_and_validate(ctx, block.text, "manifests/tiers.yaml")


@handles(
    "yaml",
    "containers: / - name: app",
    "inside a Pod: kubectl apply --dry-run=server; alice's Secret holds the two variables",
)
def env_from(ctx: Ctx, block: Block) -> None:
    spec = yaml.safe_load(block.text)
    for container in spec["containers"]:
        container.setdefault("image", "registry.example.com/app:1")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "readme-app", "namespace": "demo"},
        "spec": spec,
    }
    assert "(server dry run)" in k.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    name = spec["containers"][0]["envFrom"][0]["secretRef"]["name"]
    secret = k.get_json("secret", name, "demo")
    assert secret and {"OPENAI_API_KEY", "OPENAI_BASE_URL"} <= set(secret["data"])


def gitops_folder(root: Path, broken: bool) -> None:
    gateway = root / "gateway"
    shutil.rmtree(gateway, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "manifests", gateway, ignore=shutil.ignore_patterns("aws"))
    if broken:
        (gateway / "users" / "zed.yaml").write_text(
            "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayUser\nmetadata: {name: zed, namespace: demo}\n"
            "spec:\n  email: zed@company.com\n  tier: gold\n"
        )


@handles(
    "yaml",
    "repos: / - repo: https://github.com/<org>/llm-gateway-operator",
    "parsed; the hook id exists; its entry with the README's args run on a gateway/ folder",
    stack=False,
)
def pre_commit(ctx: Ctx, block: Block) -> None:
    (hook,) = yaml.safe_load(block.text)["repos"][0]["hooks"]
    published = {h["id"]: h for h in yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hook["id"] in published, f"hook {hook['id']} not in .pre-commit-hooks.yaml"
    assert published[hook["id"]]["pass_filenames"] is False  # so `args` alone name what is checked
    gitops_folder(ctx.shell.cwd, broken=False)
    ctx.shell.run(" ".join([published[hook["id"]]["entry"], *hook["args"]]))


@handles(
    "yaml",
    "name: gateway manifests / on:",
    "parsed; the validate step run on a clean and a broken gateway/ folder",
    stack=False,
)
def github_actions(ctx: Ctx, block: Block) -> None:
    workflow = yaml.safe_load(block.text)
    runs = [step["run"] for step in workflow["jobs"]["validate"]["steps"] if "run" in step]
    project = re.search(r'^name = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert project and runs[0].startswith(f'pip install "{project.group(1)} @ '), runs[0]
    gitops_folder(ctx.shell.cwd, broken=False)
    ctx.shell.run(runs[-1])
    gitops_folder(ctx.shell.cwd, broken=True)
    ran = ctx.shell.run(runs[-1], expect_rc=1)
    assert re.search(r"^::error file=gateway/users/zed\.yaml,line=\d+::", ran.stdout, re.M), ran.stdout


# --- outputs and prose -------------------------------------------------------------------------------

VALIDATE_SAMPLE = {
    "tiers.yaml": "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayTier\nmetadata: {name: premium}\n"
    "spec: {monthlyBudgetUSD: 100, rpmLimit: 60, models: [model-balanced, gpt-9]}\n---\n"
    "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayTier\nmetadata: {name: bulk}\n"
    "spec: {monthlyBudgetUSD: 10, rpmLimit: 100, tpmLimit: 50, models: [model-cheap]}\n",
    "users/dave.yaml": "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayUser\n"
    "metadata: {name: dave, namespace: demo}\nspec: {email: dave@company.com, tier: gold}\n",
    "users/erin.yaml": "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayUser\n"
    "metadata: {name: erin, namespace: demo}\nspec: {email: erin@company.com, tier: premium}\n",
    "users/erin2.yaml": "apiVersion: llmgateway.io/v1alpha1\nkind: GatewayUser\n"
    "metadata: {name: erin2, namespace: demo}\nspec: {email: erin@company.com, tier: bulk}\n",
}

CSV_SAMPLE = (
    "email,tier,alias\ngrace@company.com,coding,Grace Hopper\nfrank@company,drafting,Frank\n"
    "heidi@company.com,gold,Heidi\nGrace@company.com,coding,G\nivan@company.com\n"
)


@handles(
    "text",
    "tiers.yaml:0: GatewayTier/premium: spec.models[1]: model 'gpt-9' is not served by the gateway "
    "(served: model-balanced, model-cheap, model-embed, model-reasoning, model-reasoning-opus)",
    "reproduced: gatewayctl validate on files that have these four problems",
    stack=False,
)
def validate_sample(ctx: Ctx, block: Block) -> None:
    folder = ctx.shell.cwd / "validate-sample"
    for name, text in VALIDATE_SAMPLE.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    ran = ctx.shell.run("cd validate-sample && gatewayctl validate tiers.yaml users/", expect_rc=1)
    assert ran.stdout == block.text, f"README sample differs from the real output:\n{ran.stdout}"


@handles(
    "text",
    "users.csv:3: bad email 'frank@company': expected name@domain.tld (ASCII, no spaces)",
    "reproduced: gatewayctl users import on a CSV with these four problems",
    stack=False,
)
def csv_sample(ctx: Ctx, block: Block) -> None:
    folder = ctx.shell.cwd / "csv-sample"
    folder.mkdir(exist_ok=True)
    (folder / "users.csv").write_text(CSV_SAMPLE)
    ran = ctx.shell.run("cd csv-sample && gatewayctl users import users.csv --namespace demo", expect_rc=1)
    assert ran.stdout + ran.stderr == block.text, f"README sample differs:\n{ran.stdout}{ran.stderr}"


def not_a_command(ctx: Ctx, block: Block) -> None:
    """Prose in a fence: nothing to run."""


handles("", "admin: kubectl apply / GitOps / gatewayctl", "the architecture diagram", stack=False)(
    not_a_command
)
handles(
    "text",
    "NAME      EMAIL                 TIER        SPEND      BUDGET   READY   AGE",
    "checked by the `kubectl get gatewayusers` block before it (header, names, emails, tiers)",
    stack=False,
)(not_a_command)


# --- fixtures and tests ------------------------------------------------------------------------------


def scratch_dir(root: Path) -> Path:
    shutil.copytree(REPO_ROOT / "manifests", root / "manifests")
    (root / "charts").symlink_to(REPO_ROOT / "charts")
    return root


@pytest.fixture(scope="module")
def offline_ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    root = scratch_dir(tmp_path_factory.mktemp("readme-offline"))
    env = {"PATH": base_path(REPO_ROOT), "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    return Ctx(Shell(root, env, Masker()), {}, "")


def delete_readme_users() -> None:
    k.kubectl(
        "delete",
        "gatewayuser",
        *README_USERS,
        "-n",
        "demo",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=90s",
    )


@pytest.fixture(scope="module")
def stack_ctx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    """The demo tiers and users Ready (as `make demo` applies them), README-created users gone, and a
    reader's terminal with only KUBECONFIG set until the README sources .stack/env."""
    # Not a parameter: pytest prints a failing fixture's arguments, and this dict holds the master key.
    stack_env: dict[str, str] = request.getfixturevalue("stack_env")
    root = scratch_dir(tmp_path_factory.mktemp("readme"))
    (root / ".stack").mkdir()
    shutil.copy(ENV_FILE, root / ".stack" / "env")
    k.apply(REPO_ROOT / "manifests" / "tiers.yaml")
    k.apply(REPO_ROOT / "manifests" / "users")
    delete_readme_users()
    for tier in ("drafting", "coding", "architect"):
        k.wait_ready("gatewaytier", tier, timeout=60)
    for user in ("alice", "bob", "charlie"):
        k.wait_ready("gatewayuser", user, "demo", timeout=90)
    mask = Masker()
    mask.add(stack_env.get("LITELLM_MASTER_KEY", ""))
    env = {
        "PATH": base_path(REPO_ROOT),
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8",
        "KUBECONFIG": stack_env["KUBECONFIG"],
    }
    namespace = f"readme-eks-{uuid.uuid4().hex[:6]}"
    try:
        yield Ctx(Shell(root, env, mask), stack_env, namespace)
    finally:
        k.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
        delete_readme_users()


def entry(block: Block) -> Entry:
    found = HANDLERS.get((block.lang, block.fingerprint))
    if found is None:
        pytest.fail(
            f"{block} is not classified: add it to HANDLERS in {Path(__file__).name} (run or check it)"
        )
    return found


def test_every_readme_block_is_classified() -> None:
    present = {(b.lang, b.fingerprint) for b in BLOCKS}
    unclassified = [str(b) for b in BLOCKS if (b.lang, b.fingerprint) not in HANDLERS]
    stale = sorted(f"```{lang} [{fp}]" for lang, fp in HANDLERS if (lang, fp) not in present)
    assert not unclassified, "README blocks this test neither runs nor classifies:\n" + "\n".join(
        unclassified
    )
    assert not stale, "HANDLERS entries whose block is no longer in README.md:\n" + "\n".join(stale)


def block_id(block: Block) -> str:
    return f"L{block.line}-{block.lang or 'plain'}"


OFFLINE = [
    b
    for b in BLOCKS
    if (b.lang, b.fingerprint) not in HANDLERS or not HANDLERS[(b.lang, b.fingerprint)].needs_stack
]
ON_STACK = [
    b for b in BLOCKS if (b.lang, b.fingerprint) in HANDLERS and HANDLERS[(b.lang, b.fingerprint)].needs_stack
]


@pytest.mark.parametrize("block", OFFLINE, ids=block_id)
def test_offline_block(block: Block, offline_ctx: Ctx) -> None:
    entry(block).handler(offline_ctx, block)


@pytest.mark.stack
@pytest.mark.parametrize("block", ON_STACK, ids=block_id)
def test_block_on_the_stack(block: Block, stack_ctx: Ctx) -> None:
    """In README order: later blocks use what earlier ones exported or created, as for a reader. Earlier
    blocks a `-k` selection left out run first, so any one block can be run alone."""
    for earlier in ON_STACK:
        if earlier.line >= block.line:
            break
        if earlier.line not in stack_ctx.attempted:
            stack_ctx.attempted.add(earlier.line)
            entry(earlier).handler(stack_ctx, earlier)
    stack_ctx.attempted.add(block.line)
    entry(block).handler(stack_ctx, block)


# --- commands shown inline in the prose --------------------------------------------------------------

InlineCheck = Callable[[Ctx], None]
INLINE: dict[str, InlineCheck] = {}


def inline(snippet: str) -> Callable[[InlineCheck], InlineCheck]:
    def register(check: InlineCheck) -> InlineCheck:
        INLINE[snippet] = check
        return check

    return register


@inline("`kubectl get gwtier` shows Budget, RPM, Models, Users, Ready")
def get_gwtier(ctx: Ctx) -> None:
    header = ctx.shell.run("kubectl get gwtier").stdout.splitlines()[0].split()
    assert {"BUDGET", "RPM", "MODELS", "USERS", "READY"} <= set(header), header


@inline("`tiers apply -f my-tiers.yaml` applies your own GatewayTier manifests instead; `-o yaml` prints")
def tiers_apply_file(ctx: Ctx) -> None:
    printed = ctx.shell.run("gatewayctl tiers apply -o yaml").stdout
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(printed) if d]
    assert names == ["drafting", "coding", "architect"], names
    name = f"readme-{uuid.uuid4().hex[:6]}"
    (ctx.shell.cwd / "my-tiers.yaml").write_text(
        f"apiVersion: llmgateway.io/v1alpha1\nkind: GatewayTier\nmetadata: {{name: {name}}}\n"
        "spec: {monthlyBudgetUSD: 5, rpmLimit: 5, models: [model-cheap]}\n"
    )
    try:
        assert (
            f"GatewayTier/{name} created" in ctx.shell.run("gatewayctl tiers apply -f my-tiers.yaml").stdout
        )
        assert k.get_json("gatewaytier", name) is not None
    finally:
        k.kubectl("delete", "gatewaytier", name, "--ignore-not-found", "--wait=false", check=False)


@inline("`kubectl describe gwuser NAME -n NS`")
def describe_gwuser(ctx: Ctx) -> None:
    out = ctx.shell.run("kubectl describe gwuser alice -n demo").stdout
    assert "Conditions:" in out and "Ready" in out, out


@inline("`kubectl get gwuser NAME -o jsonpath='{.status.conditions}'`")
def conditions_jsonpath(ctx: Ctx) -> None:
    out = ctx.shell.run("kubectl get gwuser alice -n demo -o jsonpath='{.status.conditions}'").stdout
    assert any(c["type"] == "Ready" for c in json.loads(out)), out


@inline("`kubectl describe gwtier NAME`")
def describe_gwtier(ctx: Ctx) -> None:
    assert "Conditions:" in ctx.shell.run("kubectl describe gwtier architect").stdout


@inline("`GET /v1/models` with your key")
def list_models(ctx: Ctx) -> None:
    api_key, base_url = k.user_key(k.get_json("gatewayuser", "alice", "demo") or {})
    ctx.shell.mask.add(api_key)
    ctx.shell.env["ALICE_KEY"] = api_key  # the shell's env never shows in a traceback
    try:
        out = ctx.shell.run(f'curl -sS "{base_url}/models" -H "Authorization: Bearer $ALICE_KEY"')
    finally:
        ctx.shell.env.pop("ALICE_KEY", None)
    served = sorted(m["id"] for m in json.loads(out.stdout)["data"])
    assert served == ["model-embed", "model-reasoning", "model-reasoning-opus"], served


@inline("`2` bad command line, `3` Kubernetes or LiteLLM unreachable")
def exit_codes(ctx: Ctx) -> None:
    ctx.shell.run("gatewayctl users add --tier coding", expect_rc=2)
    dead = ctx.shell.cwd / "dead-kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: d, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: d, user: {token: x}}]\ncontexts: [{name: d, context: {cluster: d, user: d}}]\n"
        "current-context: d\n"
    )
    ran = ctx.shell.run("gatewayctl tiers list", expect_rc=3, env_add={"KUBECONFIG": str(dead)})
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr  # "Errors are one line"


@inline("`--context NAME` to pick another")
def context_flag(ctx: Ctx) -> None:
    current = ctx.shell.run("kubectl config current-context").stdout.strip()
    assert "architect" in ctx.shell.run(f"gatewayctl --context {current} tiers list").stdout


@inline("`.github/workflows/e2e-kind.yaml` runs it on GitHub")
def e2e_workflow(ctx: Ctx) -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "e2e-kind.yaml").read_text())
    assert "make e2e-kind" in json.dumps(workflow), "the workflow does not run `make e2e-kind`"


@pytest.mark.stack
@pytest.mark.parametrize("snippet", list(INLINE))
def test_inline_command(snippet: str, stack_ctx: Ctx) -> None:
    flat = " ".join(README.read_text().split())
    assert snippet in flat, f"no longer in README.md (update INLINE): {snippet}"
    INLINE[snippet](stack_ctx)
