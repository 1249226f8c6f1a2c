"""kopf wiring only: parse, look things up in the in-memory indexes, call a service, and map domain errors
to kopf retry semantics in exactly one place (``_kopf_errors``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
from pydantic import ValidationError

from gateway_operator import conditions as cond
from gateway_operator import kopf_scale, metrics, naming, rotation
from gateway_operator.clients.kubernetes import K8sConflict, K8sError, KubernetesClient
from gateway_operator.clients.litellm import InvalidRequest, LiteLLMClient, LiteLLMError
from gateway_operator.models import (
    API_VERSION,
    GROUP,
    MANAGED_BY,
    TIER_KIND,
    TIER_PLURAL,
    USER_KIND,
    USER_PLURAL,
    VERSION,
    GatewayTierSpec,
    GatewayTierStatus,
    GatewayUserSpec,
    GatewayUserStatus,
    ObjectRef,
    TierView,
    UserView,
)
from gateway_operator.services import sync as sync_service
from gateway_operator.services import tiers as tier_service
from gateway_operator.services import users as user_service
from gateway_operator.services.core import EventType, Services, looks_minted
from gateway_operator.settings import load as load_settings

log = logging.getLogger(__name__)

kopf_scale.install()  # before kopf.run builds its toggles: start-up at thousands of objects


# --- startup / shutdown ---------------------------------------------------------------------------------


def _post_event(kind: str, ref: ObjectRef, type_: EventType, reason: str, message: str) -> None:
    metadata: dict[str, Any] = {"name": ref.name, "uid": ref.uid}
    if ref.namespace:
        metadata["namespace"] = ref.namespace
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata}
    kopf.event(cast(Any, body), type=type_, reason=reason, message=message[:1000])


LIST_CHUNK = 500

# kopf's own client (aiohttp, no connection limit) opens a connection per concurrent request: in a burst of
# 1,000 users the process had ~170 sockets open, each TLS one with asyncio's 256 KiB read buffer, and peaked
# at 126-148 MiB; with this pool at most 57 and 111 MiB (tests/bench/burst_memory.py). It queues the requests
# instead, with room for the long-lived watch streams (users, tiers, Secrets and peering: up to
# WATCHES_PER_SCOPE per watched namespace, or for the whole cluster).
KOPF_CONNECTIONS = 32
WATCHES_PER_SCOPE = 4


@kopf.on.login()
async def login(
    settings: kopf.OperatorSettings, **kwargs: Any
) -> kopf.AiohttpSession | kopf.ConnectionInfo | None:
    """kopf's built-in logins (service account, then kubeconfig), through a bounded connection pool. With
    namespace patterns the number of watch streams is open-ended: kopf's own unbounded pool then."""
    info = kopf.login_with_service_account(settings=settings, **kwargs) or kopf.login_with_kubeconfig(
        settings=settings, **kwargs
    )
    namespaces = load_settings().namespaces
    if info is None or any(c in ns for ns in namespaces for c in "*?[!"):
        return info
    import aiohttp

    limit = KOPF_CONNECTIONS + WATCHES_PER_SCOPE * max(1, len(namespaces))
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = load_settings()
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # One Event per handler run would be noise (and API load) for hundreds of users; we post our own.
    settings.posting.level = logging.WARNING
    # kopf waits this long for the watch to deliver the version of its own last patch before it handles
    # an older event as if it were current. In a bulk the watch lags (minutes on a loaded 2-core box),
    # and after 5 s (kopf's default) it re-ran the create handler on a stale body for ~11% of 1,000
    # users: harmless (the handler re-reads the object) but 2 admin reads each.
    settings.persistence.consistency_timeout = 60.0
    settings.watching.server_timeout = 300
    settings.peering.lifetime = config.peering_lifetime_seconds
    settings.watching.client_timeout = 330
    # The start-up listing in pages: 10,000 users (~2.5 KiB of JSON each with managedFields) would otherwise
    # be one response of tens of MiB, held as bytes and text while it is parsed.
    settings.watching.chunk_size = LIST_CHUNK
    litellm = LiteLLMClient(
        config.litellm_admin_url,
        config.litellm_master_key,
        max_concurrency=config.litellm_max_concurrency,
        timeout=config.litellm_timeout_seconds,
        retries=config.litellm_retries,
        backoff=config.litellm_backoff_seconds,
    )
    kube = await KubernetesClient.connect()
    if config.peering:
        await warn_missing_peering(kube, config.peering, config.namespaces)
    memo.services = Services(litellm=litellm, kube=kube, settings=config, events=_post_event)
    metrics.serve(config.metrics_port, config.health_host)
    log.info(
        "LiteLLM admin %s, public base URL %s, max %d admin calls in flight, resync every %.0fs",
        config.litellm_admin_url,
        config.public_url,
        config.litellm_max_concurrency,
        config.resync_interval_seconds,
    )


async def warn_missing_peering(kube: KubernetesClient, name: str, namespaces: list[str]) -> list[str]:
    """kopf pauses a peered operator without a word while its peering object is missing (it waits for
    one to appear); say so once at start. Returns what is missing."""
    scopes: list[str | None] = list(namespaces) or [None]
    missing: list[str] = []
    for namespace in scopes:
        what = f"KopfPeering {namespace}/{name}" if namespace else f"ClusterKopfPeering {name}"
        try:
            found = await kube.get_kopf_peering(name, namespace)
        except K8sError as error:
            log.warning("cannot check that %s exists (%s); without it this operator is paused", what, error)
            continue
        if found is None:
            missing.append(what)
            log.warning(
                "%s does not exist: with KOPF_PEERING=%s this operator stays paused (handles nothing) until "
                "it is created (the Helm chart creates it with operator.highAvailability.enabled)",
                what,
                name,
            )
    return missing


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    svc: Services | None = getattr(memo, "services", None)
    if svc is not None:
        await svc.litellm.aclose()
        await svc.kube.aclose()


@kopf.on.probe(id="litellm_admin_calls")
def probe_calls(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    svc: Services | None = getattr(memo, "services", None)
    if svc is None:
        return {}
    return {
        "in_flight": svc.litellm.in_flight,
        "max_in_flight": svc.litellm.max_in_flight,
        "limit": svc.litellm.max_concurrency,
        "calls": dict(svc.litellm.calls),
    }


# --- error mapping (the one place) ----------------------------------------------------------------------


def _delay(retry: int) -> float:
    return float(min(60, 2 ** min(retry, 6)))


@asynccontextmanager
async def _kopf_errors(
    retry: int, on_error: Callable[[Exception], Awaitable[None]] | None = None
) -> AsyncIterator[None]:
    try:
        yield
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except tier_service.TierInUse as error:
        raise kopf.TemporaryError(str(error), delay=10) from None
    except InvalidRequest as error:
        if on_error is not None:
            await on_error(error)
        raise kopf.PermanentError(str(error)) from None
    except LiteLLMError as error:  # unavailable, unauthorized, a race (not found / conflict)
        if on_error is not None:
            await on_error(error)
        raise kopf.TemporaryError(str(error), delay=_delay(retry)) from None
    except K8sConflict as error:
        raise kopf.TemporaryError(str(error), delay=1) from None
    except K8sError as error:
        raise kopf.TemporaryError(str(error), delay=_delay(retry)) from None


# --- indexes --------------------------------------------------------------------------------------------


def _ref(body: kopf.Body) -> ObjectRef:
    meta = body.get("metadata", {})
    return ObjectRef(
        name=meta.get("name", ""),
        namespace=meta.get("namespace"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
    )


# Index functions are coroutines so kopf runs them in its event loop (a plain def goes through an executor
# thread per event: ~4% of the operator's CPU in a bulk of 1,000 users).
@kopf.index(GROUP, VERSION, TIER_PLURAL)
async def gw_tiers(body: kopf.Body, name: str, **_: Any) -> dict[str, dict[str, Any]]:
    return {name: {"spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}}


# Users are also filed under (EMAIL_KEY, LiteLLM user id): not a valid namespace name, so it never collides
# with (namespace, name). Every reconcile looks up its email's other holders, which would otherwise be a
# scan of all users (O(N) per reconcile, O(N^2) over a bulk).
EMAIL_KEY = "@email"


@kopf.index(GROUP, VERSION, USER_PLURAL)  # type: ignore[arg-type]
async def gw_users(
    body: kopf.Body, namespace: str, name: str, **_: Any
) -> dict[tuple[str, str], UserView | None]:
    """Parsed once per event (not once per lookup)."""
    try:
        view: UserView | None = UserView(
            ref=_ref(body),
            spec=GatewayUserSpec.model_validate(body.get("spec") or {}),
            status=GatewayUserStatus.model_validate(body.get("status") or {}),
            rotate_at=_rotate_at(body),
        )
    except ValidationError:
        view = None
    ready = cond.get_condition((view.status.conditions if view else ()), cond.READY)
    metrics.track_user(
        (namespace, name),
        None if view is None or view.ref.deleting else view.spec.tier,
        ready.status if ready else "Unknown",
        ready.reason if ready else "",
    )
    entries: dict[tuple[str, str], UserView | None] = {(namespace, name): view}
    if view is not None:
        entries[(EMAIL_KEY, naming.user_id(view.spec.email))] = view
    return entries


def _rotate_at(body: Any) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(rotation.ANNOTATION_ROTATE_AT)
    return str(value) if value else None


def _first(store: Iterable[Any]) -> Any:
    return next(iter(store), None)


# Tiers whose team this process provisioned, as reconciled. kopf updates a tier's index entry only when it
# processes the tier's next event, and that waits until the tier's handler returns, which propagates to
# every user of the tier (a minute for hundreds of users applied with their tier): until then the index
# says "not provisioned yet" and users retried meanwhile flipped Ready -> TierNotReady -> Ready.
_PROVISIONED_TIERS: dict[str, TierView] = {}


def _tier_view(name: str, gw_tiers: kopf.Index[str, dict[str, Any]]) -> TierView | None:
    entry = _first(gw_tiers.get(name, ()))
    if entry is None:
        return None
    try:
        spec = GatewayTierSpec.model_validate(entry["spec"])
        status = GatewayTierStatus.model_validate(entry["status"])
    except ValidationError:
        return None
    if status.team_id is None and name in _PROVISIONED_TIERS:
        return _PROVISIONED_TIERS[name]
    return TierView(name=name, spec=spec, team_ready=status.team_id is not None)


def _user_view(entry: UserView | None) -> UserView | None:
    return entry


def _all_users(gw_users: kopf.Index[tuple[str, str], UserView | None]) -> list[UserView]:
    views = (_user_view(entry) for key, store in gw_users.items() if key[0] != EMAIL_KEY for entry in store)
    return [view for view in views if view is not None]


def _same_email(email: str, gw_users: kopf.Index[tuple[str, str], UserView | None]) -> list[UserView]:
    """The users whose spec holds this email (the LiteLLM user id), from the index: no scan."""
    views = (_user_view(entry) for entry in gw_users.get((EMAIL_KEY, naming.user_id(email)), ()))
    return [view for view in views if view is not None]


def _email_owner(user: UserView, users: Iterable[UserView]) -> str | None:
    """The GatewayUser that owns this email's LiteLLM user: the oldest one (ties by namespace/name)."""
    email = naming.user_id(user.spec.email)
    same = [u for u in users if naming.user_id(u.spec.email) == email and not u.ref.deleting]
    same = [u for u in same if u.ref.uid != user.ref.uid] + [user]
    owner = min(same, key=lambda u: (u.ref.creation_timestamp, u.ref.namespace or "", u.ref.name))
    return None if owner.ref.uid == user.ref.uid else f"{owner.ref.namespace}/{owner.ref.name}"


# --- users ----------------------------------------------------------------------------------------------


async def _reconcile_user(
    svc: Services,
    namespace: str,
    name: str,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    retry: int = 0,
    tier_override: TierView | None = None,
    new_body: Mapping[str, Any] | None = None,
) -> None:
    """Serialised per object; reads the object fresh so the status it compares with is current, except
    ``new_body``: the watch's body of an object never reconciled (no status), nothing to be stale about."""
    async with svc.locked(user_service.lock_key(namespace, name)), svc.litellm.turns:
        body: Mapping[str, Any] | None = new_body
        if body is None:
            async with _kopf_errors(retry):
                body = await svc.kube.get_object(USER_PLURAL, name, namespace)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return
        ref = _ref(kopf.Body(cast(Any, body)))
        try:
            spec = GatewayUserSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            await _invalid_user(svc, ref, body, error)
            raise kopf.PermanentError(f"invalid spec: {_validation_summary(error)}") from None
        user = UserView(
            ref=ref,
            spec=spec,
            status=GatewayUserStatus.model_validate(body.get("status") or {}),
            rotate_at=_rotate_at(body),
        )
        tier = tier_override if tier_override is not None and tier_override.name == spec.tier else None
        tier = tier or _tier_view(spec.tier, gw_tiers)
        owner = _email_owner(user, _same_email(spec.email, gw_users))

        async def report(error: Exception) -> None:
            await user_service.report_error(svc, user, error)

        async with _kopf_errors(retry, report):
            with metrics.timed(USER_KIND):
                status = await user_service.reconcile_user(svc, user, tier, email_owner=owner)
    _hint_rotation(spec.tier, rotation.next_action_at(user.model_copy(update={"status": status}), _now()))
    _schedule_tier_count(svc, spec.tier, gw_tiers, gw_users)
    waiting = cond.get_condition(status.conditions, cond.READY)
    if waiting is not None and waiting.reason in (cond.TIER_NOT_FOUND, cond.TIER_NOT_READY):
        # The tier's handler also re-runs its users once the team exists; this retry closes the race
        # where both sides looked at each other just before the other was recorded.
        raise kopf.TemporaryError(waiting.message, delay=_delay(retry + 2))


def _validation_summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        field = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"spec.{field}: {item.get('msg')}")
    return "; ".join(parts)


async def _invalid_user(
    svc: Services, ref: ObjectRef, body: Mapping[str, Any], error: ValidationError
) -> None:
    status = GatewayUserStatus.model_validate(body.get("status") or {})
    spec = GatewayUserSpec.model_construct(email="", tier="")
    user = UserView.model_construct(ref=ref, spec=spec, status=status)
    await user_service.write_status(
        svc, user, user_service.not_ready(user, cond.INVALID_SPEC, _validation_summary(error))
    )


# A bulk of N user reconciles would otherwise count the index N times (O(N^2)) and patch the tier N times.
TIER_COUNT_DEBOUNCE_SECONDS = 1.0
_tier_count_pending: dict[str, asyncio.Task[None]] = {}


def _schedule_tier_count(
    svc: Services,
    tier_name: str,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
) -> None:
    """Coalesce: at most one pending count per tier; it reads the index when it runs, so it sees them all."""
    if tier_name in _tier_count_pending:
        return

    async def later() -> None:
        try:
            await asyncio.sleep(TIER_COUNT_DEBOUNCE_SECONDS)
        finally:
            _tier_count_pending.pop(tier_name, None)
        await _refresh_tier_count(svc, tier_name, gw_tiers, gw_users)

    _tier_count_pending[tier_name] = asyncio.create_task(later(), name=f"tier-count-{tier_name}")


async def _refresh_tier_count(
    svc: Services,
    tier_name: str,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
) -> None:
    entry = _first(gw_tiers.get(tier_name, ()))
    if entry is None:
        metrics.forget_tier(tier_name)
        return
    members = [u for u in _all_users(gw_users) if u.spec.tier == tier_name and not u.ref.deleting]
    count = len(members)
    try:
        status = GatewayTierStatus.model_validate(entry["status"])
        await tier_service.update_user_count(svc, ObjectRef(name=tier_name), status, count)
    except (K8sError, ValidationError) as error:
        log.warning("could not update the user count of tier %s: %s", tier_name, error)


@kopf.on.resume(GROUP, VERSION, USER_PLURAL)
@kopf.on.create(GROUP, VERSION, USER_PLURAL)
@kopf.on.update(GROUP, VERSION, USER_PLURAL)  # type: ignore[arg-type]
async def user_reconcile(
    namespace: str,
    name: str,
    memo: kopf.Memo,
    retry: int,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    body: kopf.Body,
    reason: kopf.Reason,
    **_: Any,
) -> None:
    # A first create attempt skips the re-read (one GET per user in a bulk): if a reconcile raced it and
    # wrote a status meanwhile, every step below is idempotent and converges the same way.
    fresh = reason == kopf.Reason.CREATE and retry == 0 and not body.get("status")
    new_body = dict(body) if fresh else None
    await _reconcile_user(memo.services, namespace, name, gw_tiers, gw_users, retry, new_body=new_body)


_ROTATE_REQUESTS: dict[tuple[str, str], str] = {}  # rotate-at values a reconcile was started for


# Filtered by kopf: the events of users without the annotation (nearly all) cost no handler call.
@kopf.on.event(  # type: ignore[arg-type]
    GROUP, VERSION, USER_PLURAL, annotations={rotation.ANNOTATION_ROTATE_AT: kopf.PRESENT}
)
async def user_rotate_request(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    """A new llmgateway.io/rotate-at value. kopf leaves annotations under its own storage prefix
    (llmgateway.io) out of its diffs, so on.update never fires for it; raw events do. A pure check per
    event; a reconcile only for a value that is due and not handled yet (a future time: the daemon)."""
    if event.get("type") not in ("ADDED", "MODIFIED") or body.get("metadata", {}).get("deletionTimestamp"):
        return
    value = _rotate_at(body)
    handled = (body.get("status") or {}).get("handledRotateAt")
    if value is None or not rotation.rotate_at_due(value, (handled,), datetime.now(UTC)):
        return
    key = (namespace, name)
    if _ROTATE_REQUESTS.get(key) == value:
        return  # started already; its status write is on its way
    _ROTATE_REQUESTS[key] = value
    try:
        await _reconcile_user(memo.services, namespace, name, gw_tiers, gw_users)
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        _ROTATE_REQUESTS.pop(key, None)  # the next event (or the daemon) tries again
        log.warning("rotation requested on %s/%s failed: %s", namespace, name, error)


@kopf.on.delete(GROUP, VERSION, USER_PLURAL)  # type: ignore[arg-type]
async def user_delete(
    body: kopf.Body,
    memo: kopf.Memo,
    retry: int,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    svc: Services = memo.services
    ref = _ref(body)
    spec_raw = dict(body.get("spec") or {})
    spec = GatewayUserSpec.model_construct(
        email=str(spec_raw.get("email", "")),
        tier=str(spec_raw.get("tier", "")),
        secret_name=spec_raw.get("secretName"),
    )
    user = UserView.model_construct(
        ref=ref, spec=spec, status=GatewayUserStatus.model_validate(body.get("status") or {})
    )
    others = [u for u in _same_email(spec.email, gw_users) if u.ref.uid != ref.uid and not u.ref.deleting]
    async with svc.locked(user_service.lock_key(ref.namespace or "", ref.name)), _kopf_errors(retry):
        await user_service.delete_user(svc, user, delete_litellm_user=bool(spec.email) and not others)
    svc.forget_lock(user_service.lock_key(ref.namespace or "", ref.name))
    _ROTATE_REQUESTS.pop((ref.namespace or "", ref.name), None)
    metrics.track_user((ref.namespace or "", ref.name), None, "", "")
    _schedule_tier_count(svc, spec.tier, gw_tiers, gw_users)
    if others:
        # The remaining holder of the email was waiting on EmailConflict: it can take over now.
        nxt = others[0]
        assert nxt.ref.namespace is not None
        await _quiet(_reconcile_user(svc, nxt.ref.namespace, nxt.ref.name, gw_tiers, gw_users))


async def _quiet(coro: Awaitable[None]) -> None:
    try:
        await coro
    except Exception as error:
        log.warning("follow-up reconcile failed: %s", error)


@kopf.on.event(  # type: ignore[arg-type]
    "v1",
    "secrets",
    labels={naming.LABEL_MANAGED_BY: MANAGED_BY, naming.LABEL_COMPONENT: user_service.SECRET_COMPONENT},
)
async def user_secret_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    memo: kopf.Memo,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    """A user Secret deleted or edited by hand: re-run that user's reconcile now, not at the next resync."""
    kind = event.get("type")
    if kind not in ("DELETED", "MODIFIED"):
        return
    meta = body.get("metadata", {})
    namespace = meta.get("namespace", "")
    owner = next((r.get("name") for r in meta.get("ownerReferences", []) if r.get("kind") == USER_KIND), None)
    if not owner:
        return
    entry = _first(gw_users.get((namespace, owner), ()))
    user = _user_view(entry) if entry is not None else None
    if user is None or user.ref.deleting:
        return
    if kind == "MODIFIED":
        import base64

        raw = (body.get("data") or {}).get(naming.SECRET_API_KEY, "")
        try:
            value = base64.b64decode(raw).decode()
        except (ValueError, UnicodeDecodeError):
            value = ""
        if looks_minted(value) and naming.key_id(naming.hash_key(value)) == user.status.key_id:
            return
    try:
        await _reconcile_user(memo.services, namespace, owner, gw_tiers, gw_users)
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        log.warning("reconcile of %s/%s after a Secret change failed: %s", namespace, owner, error)


# --- tiers ----------------------------------------------------------------------------------------------


def _tier_users(name: str, gw_users: kopf.Index[tuple[str, str], UserView | None]) -> list[UserView]:
    return [u for u in _all_users(gw_users) if u.spec.tier == name and not u.ref.deleting]


async def _reconcile_tier(body: kopf.Body, name: str, memo: kopf.Memo, retry: int, users: int) -> TierView:
    svc: Services = memo.services
    ref = _ref(body)
    current = GatewayTierStatus.model_validate(body.get("status") or {})
    try:
        spec = GatewayTierSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = _validation_summary(error)
        status = tier_service.tier_status(
            current, ref.generation, users, "False", cond.INVALID_SPEC, message, current.team_id
        )
        async with _kopf_errors(retry):
            await tier_service.write_tier_status(svc, ref, current, status)
        raise kopf.PermanentError(f"invalid spec: {message}") from None

    async def report(error: Exception) -> None:
        status = tier_service.tier_status(
            current, ref.generation, users, "False", cond.BACKEND_UNAVAILABLE, str(error), current.team_id
        )
        try:
            await tier_service.write_tier_status(svc, ref, current, status)
        except K8sError as write_error:
            log.warning("could not record the failure on tier %s: %s", name, write_error)

    async with _kopf_errors(retry, report):
        with metrics.timed(TIER_KIND):
            await tier_service.reconcile_tier(svc, ref, spec, current, users)
    view = _PROVISIONED_TIERS[name] = TierView(name=name, spec=spec, team_ready=True)
    return view


@kopf.on.resume(GROUP, VERSION, TIER_PLURAL)  # type: ignore[arg-type]
async def tier_resume(
    body: kopf.Body,
    name: str,
    memo: kopf.Memo,
    retry: int,
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    # Users resume on their own; no propagation needed here.
    await _reconcile_tier(body, name, memo, retry, len(_tier_users(name, gw_users)))


@kopf.on.create(GROUP, VERSION, TIER_PLURAL)
@kopf.on.update(GROUP, VERSION, TIER_PLURAL, field="spec")  # type: ignore[arg-type]
async def tier_changed(
    body: kopf.Body,
    name: str,
    memo: kopf.Memo,
    retry: int,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    tier = await _reconcile_tier(body, name, memo, retry, len(_tier_users(name, gw_users)))
    users = _tier_users(name, gw_users)  # after the team exists: users created meanwhile are included
    # Propagate: every user of the tier gets the tier's new models and limits on its key.
    results = await asyncio.gather(
        *(
            _reconcile_user(memo.services, u.ref.namespace or "", u.ref.name, gw_tiers, gw_users, 0, tier)
            for u in users
        ),
        return_exceptions=True,
    )
    failed = [f"{u.ref.namespace}/{u.ref.name}" for u, r in zip(users, results, strict=True) if r is not None]
    if failed:
        raise kopf.TemporaryError(
            f"tier {name} reconciled but {len(failed)} of its users are not yet: {', '.join(failed[:10])}",
            delay=_delay(retry),
        )


@kopf.on.delete(GROUP, VERSION, TIER_PLURAL)  # type: ignore[arg-type]
async def tier_delete(
    body: kopf.Body,
    name: str,
    memo: kopf.Memo,
    retry: int,
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    users = [f"{u.ref.namespace}/{u.ref.name}" for u in _tier_users(name, gw_users)]
    current = GatewayTierStatus.model_validate(body.get("status") or {})
    _PROVISIONED_TIERS.pop(name, None)
    async with _kopf_errors(retry):
        await tier_service.delete_tier(memo.services, _ref(body), current, users)
    metrics.forget_tier(name)


@kopf.daemon(GROUP, VERSION, TIER_PLURAL, cancellation_timeout=10)  # type: ignore[arg-type]
async def tier_resync(
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Per tier, every RESYNC_INTERVAL_SECONDS: status sync, drift repair and orphan cleanup."""
    svc: Services = memo.services
    while not stopped:
        await stopped.wait(svc.settings.resync_interval_seconds)
        if stopped:
            return
        tier = _tier_view(name, gw_tiers)
        if tier is None or not tier.team_ready:
            continue
        users = _all_users(gw_users)
        by_alias = {naming.key_alias(u.ref.namespace or "", u.ref.name): u for u in users}

        async def reconcile(user: UserView) -> None:
            await _reconcile_user(svc, user.ref.namespace or "", user.ref.name, gw_tiers, gw_users)

        def latest(user: UserView) -> UserView | None:
            return _user_view(_first(gw_users.get((user.ref.namespace or "", user.ref.name), ())))

        try:
            with metrics.timed("Resync"):
                report = await sync_service.resync_tier(svc, tier, by_alias, reconcile, latest)
        except (LiteLLMError, K8sError) as error:
            logger.warning(f"resync failed: {error}")
            continue
        await _refresh_tier_count(svc, name, gw_tiers, gw_users)
        await _record_tier_spend(svc, name, report, gw_tiers)
        logger.debug(
            f"resync: {report.keys} keys in {report.pages} page(s), {report.synced} synced, "
            f"{report.status_writes} status writes, repaired {report.repaired}, "
            f"orphans {report.orphans_deleted}, budget resets repaired {report.resets_repaired}"
        )


ROTATION_POLL_SECONDS = 30.0  # at the latest, the tier's daemon looks at its users' due times again
ROTATION_RETRY_SECONDS = 30.0  # a due user whose reconcile did not clear it is retried this much later


@dataclass
class _RotationPlan:
    """When a tier's rotation daemon plans to wake, and an earlier time a reconcile reported since (the
    index may still hold the old status when the daemon looks, so the time itself is handed over)."""

    wake_at: datetime | None = None
    hint: datetime | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)


_ROTATION_PLANS: dict[str, _RotationPlan] = {}


def _now() -> datetime:
    return datetime.now(UTC)


def _hint_rotation(tier: str, when: datetime | None) -> None:
    """Wake the tier's daemon early only for a due time before its planned wake-up (a grace period that
    ends soon); nothing for the common case of a rotation weeks away."""
    plan = _ROTATION_PLANS.get(tier)
    if when is None or plan is None or plan.wake_at is None or when >= plan.wake_at:
        return
    if plan.hint is None or when < plan.hint:
        plan.hint = when
        plan.event.set()


async def _sleep_until(stopped: kopf.DaemonStopped, event: asyncio.Event, delay: float) -> None:
    waiters = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(event.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.daemon(GROUP, VERSION, TIER_PLURAL, cancellation_timeout=10)  # type: ignore[arg-type]
async def tier_rotations(
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    gw_tiers: kopf.Index[str, dict[str, Any]],
    gw_users: kopf.Index[tuple[str, str], UserView | None],
    **_: Any,
) -> None:
    """Per tier: scheduled rotations, on-demand rotations for a future time, and ends of grace periods.
    Due times come from the indexed specs, statuses and annotations (no API call); only a due user is
    reconciled, and the reconcile does the work (services/rotation.py)."""
    svc: Services = memo.services
    # (namespace, name) -> (the due time a reconcile was run for, when): the index may still show that
    # due time for a moment after the reconcile dealt with it; the same one is retried only later.
    attempted: dict[tuple[str, str], tuple[datetime | None, datetime]] = {}
    plan = _ROTATION_PLANS[name] = _RotationPlan()
    try:
        while not stopped:
            now = _now()
            plan.event.clear()
            due, wake = rotation.due_users(_tier_users(name, gw_users), now)
            for user in due:
                key = (user.ref.namespace or "", user.ref.name)
                when = rotation.next_action_at(user, now)
                previous = attempted.get(key)
                if previous is not None and previous[0] == when:
                    retry = previous[1] + timedelta(seconds=ROTATION_RETRY_SECONDS)
                    if retry > now:
                        wake = retry if wake is None else min(wake, retry)
                        continue
                attempted[key] = (when, now)
                await _quiet(_reconcile_user(svc, key[0], key[1], gw_tiers, gw_users))
            horizon = now - timedelta(seconds=ROTATION_RETRY_SECONDS)
            attempted = {k: v for k, v in attempted.items() if v[1] > horizon}
            if plan.hint is not None and plan.hint <= now:
                plan.hint = None  # its time came: the index has the status that reported it by now
            wake = min((t for t in (wake, plan.hint) if t is not None), default=None)
            plan.wake_at = _now() + timedelta(seconds=ROTATION_POLL_SECONDS)
            if wake is not None:
                plan.wake_at = min(plan.wake_at, max(wake, _now() + timedelta(seconds=0.2)))
            await _sleep_until(stopped, plan.event, (plan.wake_at - _now()).total_seconds())
    finally:
        if _ROTATION_PLANS.get(name) is plan:
            del _ROTATION_PLANS[name]


async def _record_tier_spend(
    svc: Services, name: str, report: sync_service.SyncReport, gw_tiers: kopf.Index[str, dict[str, Any]]
) -> None:
    """Tier spend from this resync; gateway-wide spend from the other tiers' last recorded sums."""
    metrics.TIER_SPEND.labels(tier=name).set(report.spend_usd)
    metrics.TIER_BUDGET.labels(tier=name).set(report.budget_usd)
    others = 0.0
    current: GatewayTierStatus | None = None
    for tier_name, store in gw_tiers.items():
        entry = _first(store)
        if entry is None:
            continue
        try:
            status = GatewayTierStatus.model_validate(entry["status"])
        except ValidationError:
            continue
        if tier_name == name:
            current = status
        else:
            others += status.spend_usd or 0.0
    if current is None:
        return
    try:
        await tier_service.update_spend(
            svc, ObjectRef(name=name), current, report.spend_usd, report.budget_usd, others + report.spend_usd
        )
    except K8sError as error:
        log.warning("could not record the spend of tier %s: %s", name, error)
