"""values.schema.json, enforced by the real helm: unsafe values are rejected before anything renders."""

from __future__ import annotations

import pytest

from tests.chart.helm import VALUE_SETS, render, template_error

DEFAULT = VALUE_SETS["default"]


def test_chart_values_alone_are_rejected_naming_what_is_missing() -> None:
    error = template_error(())
    assert "/litellm/image/digest" in error
    assert "/litellm/masterKeySecret/name" in error
    assert "/litellm/database/existingSecret/name" in error
    assert "/operator/gatewayPublicUrl" in error


@pytest.mark.parametrize("replicas", ["2", "3"])
def test_more_than_one_replica_requires_redis(replicas: str) -> None:
    error = template_error(DEFAULT, {"litellm.replicas": replicas})
    assert "/litellm/redis/enabled" in error and "must be true" in error
    # With Redis it renders, and the config carries the coordination block.
    ok = render(
        DEFAULT,
        {
            "litellm.replicas": replicas,
            "litellm.redis.enabled": "true",
            "litellm.redis.host": "redis.internal",
        },
    )
    assert ok.one("Deployment", "-litellm")["spec"]["replicas"] == int(replicas)
    assert "coordination_redis" in ok.one("ConfigMap")["data"]["config.yaml"]


def test_autoscaling_requires_redis() -> None:
    assert "/litellm/redis/enabled" in template_error(DEFAULT, {"litellm.autoscaling.enabled": "true"})


def test_redis_enabled_requires_a_host() -> None:
    assert "/litellm/redis/host" in template_error(DEFAULT, {"litellm.redis.enabled": "true"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("litellm.image.digest", "latest"),
        ("litellm.image.digest", "sha256:abc"),
        ("operator.image.tag", "latest"),
        ("operator.image.tag", "main"),
        ("bedrockStub.image.tag", "latest"),
        ("postgresql.image.tag", "bookworm"),
    ],
)
def test_floating_tags_and_bad_digests_are_rejected(key: str, value: str) -> None:
    assert "/" + key.replace(".", "/") in template_error(DEFAULT, {key: value})


def test_version_tags_are_accepted() -> None:
    r = render(DEFAULT, {"postgresql.image.tag": "16.4-bookworm", "operator.image.tag": "v0.2.0-rc.1"})
    images = {c["image"] for _, c, _ in r.containers()}
    assert "ghcr.io/llm-gateway/llm-gateway-operator:v0.2.0-rc.1" in images


@pytest.mark.parametrize("name", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
@pytest.mark.parametrize("where", ["litellm", "operator"])
def test_static_aws_credentials_are_rejected_in_extra_env(name: str, where: str) -> None:
    error = template_error(DEFAULT, {f"{where}.extraEnv[0].name": name, f"{where}.extraEnv[0].value": "x"})
    assert f"/{where}/extraEnv/0" in error


def test_unknown_keys_are_rejected() -> None:
    assert "replica" in template_error(DEFAULT, {"litellm.replica": "3"})
    assert "additional properties" in template_error(DEFAULT, {"surprise": "1"}).lower()


def test_root_is_not_an_option() -> None:
    assert "/litellm/podSecurityContext/runAsNonRoot" in template_error(
        DEFAULT, {"litellm.podSecurityContext.runAsNonRoot": "false"}
    )


def test_ingress_needs_a_host_and_the_load_balancer_in_allowed_clients() -> None:
    error = template_error(DEFAULT, {"ingress.enabled": "true"})
    assert "/ingress/host" in error and "/networkPolicy/allowedClients" in error


def test_public_url_must_end_in_v1() -> None:
    assert "/operator/gatewayPublicUrl" in template_error(
        DEFAULT, {"operator.gatewayPublicUrl": "https://llm.example.com"}
    )


def test_bundled_postgres_needs_its_password_secret() -> None:
    assert "/postgresql/auth/existingSecret" in template_error(DEFAULT, {"postgresql.enabled": "true"})


def test_master_and_salt_keys_must_differ() -> None:
    error = template_error(DEFAULT, {"litellm.masterKeySecret.saltKeyKey": "master-key"})
    assert "salt key must be a separate key" in error


def test_irsa_role_arn_shape() -> None:
    assert "/aws/irsa/roleArn" in template_error(DEFAULT, {"aws.irsa.roleArn": "llm-gateway-role"})
