"""What each DashScope error means for the build: retry it, stop this target, stop one model,
or stop everything; and what the user can do about it (../shared/dashscope-api.md §7).

The service's errors are its own strings (`code`, `message`); this is the one place that reads
them. The client attaches the `Verdict` to its errors as fields (`retryable`, `scope`, `hint`),
so no caller ever searches message text for a code.
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
             key_env: str = "DASHSCOPE_API_KEY", region: str = "beijing") -> Verdict:
    """The verdict on one error answer (`status` 0 = no HTTP answer: connection or timeout).
    `key_env` and `region` are the project's, for the hint after an account error."""
    per_model = _model_hint(code, message, model)  # first: plain AccessDenied is the account's
    if per_model is not None:
        return Verdict(False, MODEL, per_model)
    account = account_hint("InvalidApiKey" if status == 401 else code, key_env=key_env,
                           region=region)
    if account is not None:
        return Verdict(False, ACCOUNT, account)
    if code == "DataInspectionFailed":
        return Verdict(False, None, "the service's moderation refused the prompt or negative "
                                    "prompt (or the image it made): change the wording")
    return Verdict(status in (0, 408, 429) or status >= 500, None, None)


def account_hint(code: str, *, key_env: str, region: str) -> str | None:
    """What to check after an account-level error (bad key, arrears, quota, workspace); None
    when `code` is not one."""
    if code == "InvalidApiKey" or code in ("AccessDenied", "AccessDenied.Unpurchased"):
        return (f"check {key_env}: API keys are per region, and this project uses {region}; "
                "a workspace key also needs `workspace:`")
    if code in _BILLING or code.endswith("BillOverdue"):
        return "check the account's balance and quota in the Model Studio console"
    if code in _WORKSPACE:
        return (f"check `workspace:` and {key_env}: the key must belong to that workspace, "
                f"in {region}")
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


__all__ = ["Verdict", "account_hint", "classify"]
