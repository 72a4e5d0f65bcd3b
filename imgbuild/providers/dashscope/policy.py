"""What DashScope's error codes mean for a build: which stop every submission, and what the
user can do about them. The client attaches this to its errors as fields (`scope`, `hint`),
so no caller ever searches message text for a code."""
from __future__ import annotations


def account_hint(code: str, *, key_env: str, region: str) -> str | None:
    """What to check after an account-level error (bad key, arrears, quota)."""
    if code == "InvalidApiKey" or "AccessDenied" in code:
        return (f"check {key_env}: API keys are per region, and this project uses {region}; "
                "a workspace key also needs `workspace:`")
    if "Arrearage" in code or "BillOverdue" in code or "AllocationQuota" in code:
        return "check the account's balance and quota in the Model Studio console"
    return None
