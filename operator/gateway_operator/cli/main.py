"""gatewayctl: admin and developer command line of the LLM gateway.

Exit codes: 0 ok, 1 problems found (invalid input, unhealthy, failed apply), 2 bad command line,
3 Kubernetes or LiteLLM unreachable."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway_operator.cli import cmd_health, cmd_keys, cmd_tiers, cmd_usage, cmd_users, cmd_validate
from gateway_operator.cli.common import Options

app = typer.Typer(
    name="gatewayctl",
    help=__doc__,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    context: Annotated[
        str | None, typer.Option("--context", help="kubeconfig context [default: the current one]")
    ] = None,
) -> None:
    """Kubernetes settings come from the current kubeconfig context (KUBECONFIG or ~/.kube/config);
    LiteLLM's from LITELLM_ADMIN_URL and LITELLM_MASTER_KEY."""
    ctx.obj = Options(context=context)


app.add_typer(cmd_users.app, name="users")
app.add_typer(cmd_tiers.app, name="tiers")
app.add_typer(cmd_keys.app, name="keys")
app.command("health")(cmd_health.health)
app.command("validate")(cmd_validate.validate)
app.command("usage")(cmd_usage.usage)

if __name__ == "__main__":
    app()
