"""What each DashScope error means for the build: retry it, stop this target, stop one model,
or stop everything; and what the user can do about it (../shared/dashscope-api.md §7).

The service's errors are its own strings (`code`, `message`); this is the one place that reads
them. Everything after works on the `Verdict` fields, carried by `ProviderError`.
"""
from __future__ import annotations

from dataclasses import dataclass

from imgbuild.providers.base import ACCOUNT, MODEL

# "current user api does not support synchronous calls" (and "asynchronous"): a 403 that is
# about how one model is called, not about the account (§2, §7).
_SYNC_REFUSED = "does not support synchronous calls"
_ASYNC_REFUSED = "does not support asynchronous calls"

_BILLING = frozenset({"Arrearage", "CommodityNotPurchased", "Throttling.AllocationQuota",
                      "PrepaidBillOverdue", "PostpaidBillOverdue"})
_WORKSPACE = frozenset({"Workspace.AccessDenied", "WorkSpaceNotFound"})


@dataclass(frozen=True)
class Verdict:
    retryable: bool  # transient: the same request may succeed after a backoff
    scope: str | None  # base.ACCOUNT, base.MODEL or None (this target only)
    hint: str | None  # what the user can do, or None


def classify(status: int, code: str, message: str, *, model: str | None = None,
             host: str | None = None) -> Verdict:
    """The verdict on one error answer (`status` 0 = no HTTP answer: connection or timeout)."""
    per_model = _model_hint(code, message, model)  # first: plain AccessDenied is the account's
    if per_model is not None:
        return Verdict(False, MODEL, per_model)
    account = _account_hint(status, code, host)
    if account is not None:
        return Verdict(False, ACCOUNT, account)
    if code == "DataInspectionFailed":
        return Verdict(False, None, "the service's moderation refused the prompt or negative "
                                    "prompt (or the image it made): change the wording")
    return Verdict(status in (0, 408, 429) or status >= 500, None, None)


def _account_hint(status: int, code: str, host: str | None) -> str | None:
    if status == 401 or code == "InvalidApiKey":
        where = f"this build talks to {host}" if host else "check the region"
        return (f"check the API key: keys are per region, and {where}; "
                "a workspace key also needs `workspace:`")
    if code in _BILLING or code.endswith("BillOverdue"):
        return "check the account's balance and quota in the Model Studio console"
    if code in _WORKSPACE:
        return "check `workspace:`: the key must belong to that workspace, in that region"
    if code in ("AccessDenied", "AccessDenied.Unpurchased"):
        return ("check that Model Studio is activated for this account and region, and that "
                "the key (a RAM user's?) may call it")
    return None


def _model_hint(code: str, message: str, model: str | None) -> str | None:
    name = model or "this model"
    lowered = message.lower()
    if "AccessDenied" in code and (_SYNC_REFUSED in lowered or _ASYNC_REFUSED in lowered):
        refused, other = ("sync", "async") if _SYNC_REFUSED in lowered else ("async", "sync")
        return (f"{name} takes no {refused} calls from this account: set `call: {other}` on its "
                f"specs if it offers that, or activate it in the Model Studio console")
    if code == "Model.AccessDenied":
        return (f"activate {name} in the Model Studio console (Models; with `workspace:`, in "
                f"that workspace's model list); no more requests go to {name} in this build")
    if code == "AllocationQuota.FreeTierOnly":
        return (f"the free quota of {name} is used up and the account takes the free tier only: "
                "turn that off in the Model Studio console to pay for more")
    if code == "ModelNotFound" or "model not exist" in lowered:
        return f"{name} is not available to this account in this region: check `model:` and `region:`"
    return None


__all__ = ["Verdict", "classify"]
