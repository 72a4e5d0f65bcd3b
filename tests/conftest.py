"""Every test runs with its own empty cache, no API key and no provider override, so nothing
can reach the user's cache or a real account."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = REPO / "examples" / "site"

_ENV = ("DASHSCOPE_API_KEY", "IMGBUILD_PROVIDER", "DASHSCOPE_HTTP_BASE_URL", "XDG_CACHE_HOME")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A fresh copy of examples/site (without anything built)."""
    dest = tmp_path / "site"
    shutil.copytree(EXAMPLE_SITE, dest, ignore=shutil.ignore_patterns("assets", "imgbuild.lock", ".imgbuild"))
    return dest
