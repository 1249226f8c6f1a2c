"""GatewayTier -> one LiteLLM team (deterministic id, the tier's models, our metadata)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway_operator import conditions as cond
from gateway_operator import desired as want
from gateway_operator import naming
from gateway_operator.clients.litellm import Conflict
from gateway_operator.models import (
    TIER_PLURAL,
    ConditionStatus,
    GatewayTierSpec,
    GatewayTierStatus,
    ObjectRef,
)
from gateway_operator.services.core import Services


class TierInUse(Exception):
    def __init__(self, tier: str, users: Sequence[str]):
        self.users = list(users)
        shown = ", ".join(self.users[:10]) + (
            f" and {len(self.users) - 10} more" if len(self.users) > 10 else ""
        )
        super().__init__(f"GatewayTier {tier} is still used by {len(self.users)} GatewayUser(s): {shown}")


async def ensure_team(svc: Services, name: str, spec: GatewayTierSpec, *, fresh: bool) -> None:
    team = want.desired_team(name, spec)
    if fresh:
        try:
            await svc.litellm.team_new(team.create_body())
            return
        except Conflict:
            pass
    actual = await svc.litellm.team_info(team.team_id)
    if actual is None:
        await svc.litellm.team_new(team.create_body())
        return
    changes = want.team_changes(team, actual)
    if changes:
        await svc.litellm.team_update(team.team_id, changes)


def tier_status(
    current: GatewayTierStatus,
    generation: int,
    users: int,
    ready: ConditionStatus,
    reason: str,
    message: str,
    team_id: str | None,
) -> GatewayTierStatus:
    return GatewayTierStatus(
        teamId=team_id,
        users=users,
        spendUSD=current.spend_usd,
        budgetUSD=current.budget_usd,
        gatewaySpendUSD=current.gateway_spend_usd,
        conditions=cond.set_condition(current.conditions, cond.READY, ready, reason, message, generation),
        observedGeneration=generation,
    )


async def write_tier_status(
    svc: Services, ref: ObjectRef, current: GatewayTierStatus, new: GatewayTierStatus
) -> bool:
    if new.to_k8s() == current.to_k8s():
        return False
    return await svc.kube.patch_status(TIER_PLURAL, ref.name, None, new.to_k8s())


async def reconcile_tier(
    svc: Services, ref: ObjectRef, spec: GatewayTierSpec, current: GatewayTierStatus, users: int
) -> GatewayTierStatus:
    await ensure_team(svc, ref.name, spec, fresh=current.team_id is None)
    status = tier_status(
        current,
        ref.generation,
        users,
        "True",
        cond.PROVISIONED,
        f"LiteLLM team {naming.team_id(ref.name)} matches the tier",
        naming.team_id(ref.name),
    )
    await write_tier_status(svc, ref, current, status)
    return status


async def delete_tier(
    svc: Services, ref: ObjectRef, current: GatewayTierStatus, users: Sequence[str]
) -> None:
    """Refuses (TierInUse, with a condition naming the users) while GatewayUsers reference the tier."""
    if users:
        error = TierInUse(ref.name, sorted(users))
        status = tier_status(
            current, ref.generation, len(users), "False", cond.IN_USE, str(error), current.team_id
        )
        await write_tier_status(svc, ref, current, status)
        raise error
    # /team/delete also deletes every key of the team: by now only orphans can be left there.
    await svc.litellm.team_delete([naming.team_id(ref.name)])


async def update_user_count(svc: Services, ref: ObjectRef, current: GatewayTierStatus, users: int) -> None:
    if current.users == users or current.team_id is None:
        return
    await svc.kube.patch_status(TIER_PLURAL, ref.name, None, {"users": users})


async def update_spend(
    svc: Services,
    ref: ObjectRef,
    current: GatewayTierStatus,
    spend: float,
    budget: float,
    gateway_spend: float,
) -> bool:
    """Patch the tier's spend sums only when they changed (a no-op resync writes nothing)."""
    new = {
        "spendUSD": round(spend, 6),
        "budgetUSD": round(budget, 6),
        "gatewaySpendUSD": round(gateway_spend, 6),
    }
    old = {
        "spendUSD": current.spend_usd,
        "budgetUSD": current.budget_usd,
        "gatewaySpendUSD": current.gateway_spend_usd,
    }
    if new == old or current.team_id is None:
        return False
    return await svc.kube.patch_status(TIER_PLURAL, ref.name, None, new)
