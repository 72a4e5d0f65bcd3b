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


def api_key(settings: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> str:
    """The key in the configured variable, without the whitespace a copy and paste (or a file
    saved with CRLF) leaves around it; "" when unset. Never echoed, even when refused."""
    key_env = settings.get("api_key_env", DEFAULT_KEY_ENV)
    key = env.get(key_env, "").strip()
    if any(ord(c) < 33 or ord(c) == 127 for c in key):
        raise UsageError(f"the API key in {key_env} contains a space or control character (not "
                         "shown here); copy it again from the Model Studio console")
    return key


def choose(cli_choice: str | None, settings: Mapping[str, Any], env: Mapping[str, str] = os.environ,
           *, need_key: bool = True) -> Choice:
    key_env = settings.get("api_key_env", DEFAULT_KEY_ENV)
    choice = cli_choice or env.get(PROVIDER_ENV) or settings.get("provider") or "auto"
    if choice not in PROVIDERS:
        source = "--provider" if cli_choice else PROVIDER_ENV
        raise UsageError(f"{source}: unknown provider '{choice}' (choose from {', '.join(PROVIDERS)})")
    if choice == "auto":
        if api_key(settings, env):
            return Choice("dashscope", None)
        return Choice("placeholder", f"{key_env} is not set: drawing offline placeholder drafts "
                                     "(set it, or use --provider dashscope, for real images)")
    if choice == "dashscope" and need_key and not api_key(settings, env):
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
        url = resolve_base_url(region=settings.get("region"), workspace=settings.get("workspace"),
                               base_url=settings.get("base_url"), env=env)
    except ValueError as e:
        raise UsageError(str(e)) from None
    _refuse_foreign_host(url, settings, env)
    return url


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _refuse_foreign_host(url: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """The API key goes to whatever host the base URL names, and a cloned repository writes the
    project file: its `base_url` (or a `workspace` that bends the host) may only name Alibaba
    Cloud or this machine. Anything else must come from the user's own environment."""
    from urllib.parse import urlsplit

    if not (settings.get("base_url") or settings.get("workspace")):
        return
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".aliyuncs.com") or host in _LOOPBACK or host.startswith("127."):
        return
    if env.get("DASHSCOPE_HTTP_BASE_URL", "").rstrip("/") == url:
        return  # the user named the same URL themselves
    raise UsageError(f"the project file sends DashScope requests, with your API key, to {host!r}, "
                     "which is neither Alibaba Cloud (*.aliyuncs.com) nor this machine; if you trust "
                     f"it, set DASHSCOPE_HTTP_BASE_URL={url} in your environment; nothing was sent")


def create(choice: Choice, settings: Mapping[str, Any], *, journal: Any = None,
           limiter: Any = None, env: Mapping[str, str] = os.environ) -> Any:
    """The provider; `limiter` (imgbuild.run.scheduler.Scheduler) paces DashScope submissions."""
    if choice.name == "placeholder":
        from imgbuild.providers.placeholder import PlaceholderProvider

        return PlaceholderProvider()
    from imgbuild.providers.dashscope.client import DashScopeProvider

    key = api_key(settings, env)
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
