"""Choosing and creating the provider: --provider > IMGBUILD_PROVIDER > project `provider` >
auto (dashscope when the API key variable is set, else the offline placeholder)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imgbuild.errors import UsageError

PROVIDERS = ("auto", "dashscope", "placeholder")
PROVIDER_ENV = "IMGBUILD_PROVIDER"
DEFAULT_KEY_ENV = "DASHSCOPE_API_KEY"


@dataclass(frozen=True)
class Choice:
    name: str  # "dashscope" | "placeholder"
    notice: str | None  # one line to show the user, e.g. why drafts are drawn


def choose(cli_choice: str | None, settings: Mapping[str, Any], env: Mapping[str, str] = os.environ,
           *, need_key: bool = True) -> Choice:
    key_env = settings.get("api_key_env", DEFAULT_KEY_ENV)
    choice = cli_choice or env.get(PROVIDER_ENV) or settings.get("provider") or "auto"
    if choice not in PROVIDERS:
        source = "--provider" if cli_choice else PROVIDER_ENV
        raise UsageError(f"{source}: unknown provider '{choice}' (choose from {', '.join(PROVIDERS)})")
    if choice == "auto":
        if env.get(key_env):
            return Choice("dashscope", None)
        return Choice("placeholder", f"{key_env} is not set: drawing offline placeholder drafts "
                                     "(set it, or use --provider dashscope, for real images)")
    if choice == "dashscope" and not env.get(key_env) and need_key:
        raise UsageError(f"the dashscope provider needs an API key in the environment variable {key_env} "
                         "(create one in the Model Studio console for your region); nothing was generated")
    return Choice(choice, None)


def identity(choice: Choice, settings: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> str:
    """The provider name that goes into generation keys, without creating a client."""
    if choice.name == "placeholder":
        return "placeholder"
    from imgbuild.providers.dashscope.hosts import identity_for

    return identity_for(_base_url(settings, env))


def _base_url(settings: Mapping[str, Any], env: Mapping[str, str]) -> str:
    from imgbuild.providers.dashscope.hosts import resolve_base_url

    try:
        return resolve_base_url(region=settings.get("region"), workspace=settings.get("workspace"),
                                base_url=settings.get("base_url"), env=env)
    except ValueError as e:
        raise UsageError(str(e)) from None


def create(choice: Choice, settings: Mapping[str, Any], *, journal: Any = None,
           limiter: Any = None, env: Mapping[str, str] = os.environ) -> Any:
    """The provider; `limiter` (imgbuild.run.scheduler.Scheduler) paces DashScope submissions."""
    if choice.name == "placeholder":
        from imgbuild.providers.placeholder import PlaceholderProvider

        return PlaceholderProvider()
    from imgbuild.providers.dashscope.client import DashScopeProvider

    key = env[settings.get("api_key_env", DEFAULT_KEY_ENV)]
    # `timeouts:` in imgbuild.yaml: request = one HTTP request, a sync generation included
    # (see client.REQUEST_TIMEOUT), poll = how long one async task is waited for (the journal
    # keeps it for the next build after that).
    from imgbuild.providers.dashscope.client import REQUEST_TIMEOUT

    timeouts = settings.get("timeouts") or {}
    return DashScopeProvider(key, _base_url(settings, env), journal=journal,
                             workspace=settings.get("workspace"), limiter=limiter,
                             request_timeout=float(timeouts.get("request", REQUEST_TIMEOUT)),
                             poll_timeout=float(timeouts.get("poll", 600.0)),
                             key_env=settings.get("api_key_env", DEFAULT_KEY_ENV),
                             region=settings.get("region", "beijing"))
