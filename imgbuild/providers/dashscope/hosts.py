"""Where DashScope lives: region and workspace hosts, and the provider identity a base URL
gives. Kept apart from the client so that computing a generation key (every build, no-op
included) does not import aiohttp (~0.15 s)."""
from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

# Each region's shared host, and where it is written down (../shared/dashscope-api.md §1).
_SHARED_HOSTS = {
    # the docs' Beijing host, and the official SDK's default base URL (common/env.py)
    "beijing": "dashscope.aliyuncs.com",
    # the docs' Singapore ("International") host
    "singapore": "dashscope-intl.aliyuncs.com",
    # the wan2.6 API reference's US (Virginia) host. The official SDK 2.x sends the US shared
    # gateway to dashscope-intl instead (v2/_config.py LEGACY_GATEWAY_HOSTS); the docs win.
    "virginia": "dashscope-us.aliyuncs.com",
}
# Workspace-dedicated hosts, {workspace}.{region id}.maas.aliyuncs.com: Beijing and Singapore
# from the newer docs (wan v2 and wan2.5 API references), Virginia (us-east-1) from the
# official SDK 2.x (v2/_config.py WORKSPACE_GATEWAY_TEMPLATE, common/env.py MAAS_REGIONS).
_WORKSPACE_REGIONS = {"beijing": "cn-beijing", "singapore": "ap-southeast-1",
                      "virginia": "us-east-1"}
_REGION_ALIASES = {"cn-beijing": "beijing", "ap-southeast-1": "singapore",
                   "us-east-1": "virginia", "intl": "singapore"}


def resolve_base_url(*, region: str | None, workspace: str | None, base_url: str | None,
                     env: Mapping[str, str]) -> str:
    """The API base URL: explicit > env DASHSCOPE_HTTP_BASE_URL > workspace host > region's
    shared host > Beijing (the SDK default)."""
    if base_url:
        return base_url.rstrip("/")
    if env.get("DASHSCOPE_HTTP_BASE_URL"):
        return env["DASHSCOPE_HTTP_BASE_URL"].rstrip("/")
    name = (region or "beijing").strip().lower()
    name = _REGION_ALIASES.get(name, name)
    if name not in _SHARED_HOSTS:
        raise ValueError(f"unknown DashScope region {region!r}; "
                         f"use one of {', '.join(_SHARED_HOSTS)} (or set base_url)")
    if workspace and name in _WORKSPACE_REGIONS:
        # Newer docs recommend the workspace-dedicated domain; the shared one keeps working.
        return f"https://{workspace}.{_WORKSPACE_REGIONS[name]}.maas.aliyuncs.com/api/v1"
    return f"https://{_SHARED_HOSTS[name]}/api/v1"


def provider_name(hostname: str) -> str:
    # Images from an emulator or a proxy must never pass for real ones in a shared cache.
    return "dashscope" if hostname.endswith(".aliyuncs.com") else f"dashscope@{hostname}"


def identity_for(base_url: str) -> str:
    """The provider identity that goes into generation keys for this base URL."""
    return provider_name(urlsplit(base_url).hostname or base_url)
