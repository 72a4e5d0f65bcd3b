"""Every test runs with its own empty cache, no API key, no provider override and no object-store
credentials or remote, so nothing can reach the user's cache, a real account or a real bucket."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = REPO / "examples" / "site"

_ENV = ("DASHSCOPE_API_KEY", "IMGBUILD_PROVIDER", "DASHSCOPE_HTTP_BASE_URL", "XDG_CACHE_HOME",
        "IMGBUILD_REMOTE", "IMGBUILD_REMOTE_READ_ONLY")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)  # a developer's real credentials must never reach a test
    nowhere = tmp_path_factory.getbasetemp() / "no-aws-files"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere / "config"))
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    if os.environ.get("IMGBUILD_TEST_SPOOL_ALL"):  # every build in this process spools every target
        from imgbuild.verbs import build_run

        monkeypatch.setattr(build_run, "SPOOL_MARGIN", 0)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A fresh copy of examples/site (without anything built)."""
    dest = tmp_path / "site"
    shutil.copytree(EXAMPLE_SITE, dest, ignore=shutil.ignore_patterns("assets", "imgbuild.lock", ".imgbuild"))
    return dest


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One SeaweedFS for the session (tests use their own prefixes in its bucket)."""
    from s3_support import start_server

    server = start_server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(s3_server: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh `s3://bucket/prefix` of the session's store, with read-write credentials in the
    standard AWS variables (the way a user or CI provides them)."""
    from s3_support import BUCKET

    for name, value in s3_server.env().items():  # type: ignore[attr-defined]
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def own_s3_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A store of the test's own (so that it can be killed or paused), with read-write
    credentials in the standard AWS variables."""
    from s3_support import start_server

    server = start_server(tmp_path_factory.mktemp("seaweedfs-own"))
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        server.stop()
