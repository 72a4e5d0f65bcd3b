"""imgbuild.store.remote against a real S3 server (SeaweedFS on 127.0.0.1): create-only writes,
verified reads, read-only identities, a dead store, credentials only from the standard places."""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from imgbuild.errors import UsageError
from imgbuild.store import remote as rm
from s3_support import BUCKET, RO, RW, S3Server

KEY = "a" * 64
RECORD = {"provider": "dashscope", "request": {"model": "qwen-image-plus", "seed": 7},
          "request_id": "req-1", "slots": None, "task_id": None}


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


def open_remote(url: str, **config: object) -> rm.Remote:
    settings = {"remote": {"url": url, **config}}
    found = rm.configure(settings)
    assert found is not None
    return rm.Remote(found)


def raw_store(server: object, url: str) -> object:
    """A plain client with the read-write identity, to play an attacker or a damaged disk."""
    from obstore.store import S3Store

    prefix = url.split("/", 3)[3]
    return S3Store(BUCKET, prefix=prefix, endpoint=server.endpoint, access_key_id=RW[0],  # type: ignore[attr-defined]
                   secret_access_key=RW[1], region="us-east-1", client_options={"allow_http": True})


def test_an_upload_comes_back_byte_identical_and_is_written_once(s3_url: str) -> None:
    remote = open_remote(s3_url)
    images = [png((200, 10, 10)), png((10, 200, 10))]
    assert remote.fetch(KEY) is None
    assert remote.upload(KEY, images, RECORD) is True
    assert remote.upload(KEY, images, RECORD) is False  # already there: success, not rewritten
    found = rm.Remote(remote.config).fetch(KEY)
    assert found is not None
    got, record = found
    assert got == images
    assert record["images"] == [hashlib.sha256(i).hexdigest() for i in images]
    assert record["key"] == KEY and record["request_id"] == "req-1" and record["provider"] == "dashscope"
    assert "slots" not in record  # None fields are left out, never stored as null
    assert (remote.stats.uploaded, remote.stats.already_there, remote.stats.errors) == (1, 1, 0)


def test_nobody_can_overwrite_an_entry(s3_url: str) -> None:
    first = open_remote(s3_url)
    good = [png((1, 2, 3))]
    assert first.upload(KEY, good, RECORD)
    poison = [png((255, 0, 255))]
    second = open_remote(s3_url)
    # Even a writer that skips the existence check is refused by the store (If-None-Match: *).
    assert second._put_new(rm.record_path(KEY), b'{"version": 1}') is False
    assert second.upload(KEY, poison, {**RECORD, "request_id": "evil"}) is False
    found = open_remote(s3_url).fetch(KEY)
    assert found is not None and found[0] == good and found[1]["request_id"] == "req-1"


def test_a_tampered_original_is_detected_named_and_not_returned(s3_url: str, s3_server: object) -> None:
    import obstore

    remote = open_remote(s3_url)
    original = png((9, 9, 9))
    remote.upload(KEY, [original], RECORD)
    digest = hashlib.sha256(original).hexdigest()
    obstore.put(raw_store(s3_server, s3_url), rm.blob_path(digest), png((0, 0, 0)))  # replaced on the server
    reader = open_remote(s3_url)
    with pytest.raises(rm.RemoteError) as caught:
        reader.fetch(KEY)
    assert caught.value.fault.kind == rm.TAMPERED
    assert caught.value.fault.path == f"cas/sha256/{digest}"
    assert f"cas/sha256/{digest}" in str(caught.value) and "tampered" in str(caught.value)
    assert reader.stats.hits == 0 and reader.stats.errors == 1
    assert reader.down is None  # one bad object does not take the whole store down


def test_bytes_that_hash_right_but_are_no_image_are_refused(s3_url: str, s3_server: object) -> None:
    import obstore

    store = raw_store(s3_server, s3_url)
    junk = b"not an image at all"
    digest = hashlib.sha256(junk).hexdigest()
    obstore.put(store, rm.blob_path(digest), junk)
    doc = {"version": 1, "key": KEY, "images": [digest], "provider": "dashscope"}
    obstore.put(store, rm.record_path(KEY), json.dumps(doc).encode())
    with pytest.raises(rm.RemoteError) as caught:
        open_remote(s3_url).fetch(KEY)
    assert caught.value.fault.kind == rm.UNDECODABLE


@pytest.mark.parametrize("body, why", [
    (b"\x80\x04\x95 pickled", "not JSON"),
    (json.dumps({"version": 1, "key": "b" * 64, "images": ["c" * 64], "provider": "x"}).encode(),
     "another generation key"),
    (json.dumps({"version": 1, "key": KEY, "images": ["../../etc/passwd"], "provider": "x"}).encode(),
     "sha256 digests"),
    (json.dumps({"version": 1, "key": KEY, "images": ["c" * 64], "provider": "x",
                 "request_id": {"$eval": 1}}).encode(), "'request_id'"),
])
def test_a_bad_record_is_refused_without_being_executed(s3_url: str, s3_server: object, body: bytes,
                                                        why: str) -> None:
    import obstore

    obstore.put(raw_store(s3_server, s3_url), rm.record_path(KEY), body)
    with pytest.raises(rm.RemoteError) as caught:
        open_remote(s3_url).fetch(KEY)
    assert caught.value.fault.kind == rm.BAD_RECORD
    assert why in caught.value.fault.detail


def test_a_read_only_identity_reads_and_never_writes(s3_url: str, s3_server: object,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    writer = open_remote(s3_url)
    writer.upload(KEY, [png((5, 5, 5))], RECORD)
    for name, value in s3_server.env(read_only=True).items():  # type: ignore[attr-defined]
        monkeypatch.setenv(name, value)
    reader = open_remote(s3_url)
    assert reader.fetch(KEY) is not None
    other = "d" * 64
    with pytest.raises(rm.RemoteError) as caught:
        reader.upload(other, [png((6, 6, 6))], RECORD)
    assert caught.value.fault.kind == rm.DENIED
    assert reader.writes_denied is not None and reader.down is None
    assert reader.upload("e" * 64, [png((7, 7, 7))], RECORD) is False  # not tried again
    assert reader.stats.skipped == 1
    assert reader.fetch(KEY) is not None  # reads go on
    assert not writer.has(other)
    assert RO[1] not in str(caught.value) and RW[1] not in str(caught.value)


def test_read_only_setting_writes_nothing(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rm.READ_ONLY_ENV, "1")
    remote = open_remote(s3_url)
    assert remote.config.read_only
    assert remote.upload(KEY, [png((1, 1, 1))], RECORD) is False
    assert remote.stats.skipped == 1
    monkeypatch.delenv(rm.READ_ONLY_ENV)
    assert not open_remote(s3_url).has(KEY)


def test_concurrent_uploads_of_one_generation_write_it_once_without_error(s3_url: str) -> None:
    images = [png((40, 50, 60)), png((60, 50, 40))]
    remotes = [open_remote(s3_url) for _ in range(6)]
    results: list[bool] = []
    barrier = threading.Barrier(len(remotes))

    def push(remote: rm.Remote) -> None:
        barrier.wait()
        results.append(remote.upload(KEY, images, RECORD))

    threads = [threading.Thread(target=push, args=(r,)) for r in remotes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) <= 1 and len(results) == 6
    assert sum(r.stats.errors for r in remotes) == 0
    found = open_remote(s3_url).fetch(KEY)
    assert found is not None and found[0] == images


def test_a_dead_store_is_reported_once_then_not_asked_again(s3_url: str, tmp_path: Path) -> None:
    from s3_support import _free_ports

    dead = f"http://127.0.0.1:{_free_ports(1)[0]}"  # nothing listens there
    remote = open_remote(s3_url, endpoint=dead)
    with pytest.raises(rm.RemoteError) as caught:
        remote.fetch(KEY)
    assert caught.value.fault.kind == rm.UNREACHABLE and remote.down is not None
    with pytest.raises(rm.RemoteError):
        remote.fetch("b" * 64)
    assert (remote.stats.errors, remote.stats.skipped) == (1, 1)


def test_credentials_come_from_a_profile_of_the_shared_file(s3_url: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(rm.RemoteError) as caught:
        open_remote(s3_url)
    assert caught.value.fault.kind == rm.DENIED and "no credentials" in str(caught.value)
    creds = tmp_path / "credentials"
    creds.write_text(f"[team]\naws_access_key_id = {RW[0]}\naws_secret_access_key = {RW[1]}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "team")
    remote = open_remote(s3_url)
    assert remote.upload(KEY, [png((3, 2, 1))], RECORD) is True
    assert RW[1] not in repr(remote._store)


@pytest.mark.parametrize("identity", ["wrong secret", "unknown key"])
def test_wrong_credentials_are_denied_and_never_echoed(identity: str, s3_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if identity == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-SENTINEL")
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody-SENTINEL")
    remote = open_remote(s3_url)
    with pytest.raises(rm.RemoteError) as caught:
        remote.fetch(KEY)
    # a 403 (SignatureDoesNotMatch / InvalidAccessKeyId): denied, by the exception's type
    assert caught.value.fault.kind == rm.DENIED and remote.down is not None
    assert "403" in caught.value.fault.detail
    assert "SENTINEL" not in str(caught.value)
    with pytest.raises(rm.RemoteError):
        remote.fetch("b" * 64)  # not asked again
    assert (remote.stats.errors, remote.stats.skipped) == (1, 1)


def test_a_killed_store_is_unreachable_and_asked_no_more(own_s3_server: S3Server) -> None:
    url = f"s3://{BUCKET}/killed"
    remote = open_remote(url)
    assert remote.upload(KEY, [png((8, 8, 8))], RECORD) is True and remote._answers()
    own_s3_server.kill()
    with pytest.raises(rm.RemoteError) as caught:
        remote.fetch(KEY)
    assert caught.value.fault.kind == rm.UNREACHABLE and remote.down == caught.value.fault
    with pytest.raises(rm.RemoteError):
        remote.upload("b" * 64, [png((9, 8, 8))], RECORD)
    assert (remote.stats.errors, remote.stats.skipped) == (1, 1)
    assert RW[1] not in str(caught.value)


def test_a_stopped_store_is_unreachable_after_the_read_timeout(own_s3_server: S3Server) -> None:
    """SIGSTOP: the kernel still accepts connections, nothing answers; without a read timeout
    every request would wait for the whole request timeout (minutes with the retries)."""
    url = f"s3://{BUCKET}/stopped"
    config = rm.configure({"remote": {"url": url}})
    assert config is not None
    remote = rm.Remote(config, read_timeout=1.0)
    assert remote.upload(KEY, [png((7, 8, 8))], RECORD) is True
    own_s3_server.pause()
    try:
        with pytest.raises(rm.RemoteError) as caught:
            remote.fetch(KEY)
        assert caught.value.fault.kind == rm.UNREACHABLE and remote.down is not None
        assert caught.value.fault.detail == "timed out"
    finally:
        own_s3_server.resume()
    # the store is back: a new run finds everything the first one wrote
    again = rm.Remote(config).fetch(KEY)
    assert again is not None and again[0] == [png((7, 8, 8))]


def test_a_failure_of_a_store_that_answers_is_not_unreachable(s3_url: str) -> None:
    """Whatever an error's text says, the store is out of reach only if it answers nothing."""
    from obstore.exceptions import GenericError

    remote = open_remote(s3_url)
    failure = remote._failure(GenericError("error sending request: connection refused, timed out"),
                              rm.blob_path("c" * 64))
    assert failure.fault.kind == rm.FAILED and remote.down is None


def test_configure_reads_the_setting_and_the_environment() -> None:
    assert rm.configure({}, {}) is None
    found = rm.configure({"remote": {"url": "s3://team-art/imgbuild/", "read_only": False,
                                     "upload_providers": ["dashscope@proxy.corp", "placeholder"]}}, {})
    assert found is not None
    assert (found.bucket, found.prefix, found.url) == ("team-art", "imgbuild", "s3://team-art/imgbuild")
    assert found.uploads("dashscope") and found.uploads("dashscope@proxy.corp")
    assert not found.uploads("placeholder") and not found.uploads("dashscope@127.0.0.1")
    env = {rm.REMOTE_ENV: "s3://other/x/y", rm.READ_ONLY_ENV: "true"}
    over = rm.configure({"remote": {"url": "s3://team-art/imgbuild"}}, env)
    assert over is not None and (over.bucket, over.prefix, over.read_only) == ("other", "x/y", True)
    assert rm.configure({}, {rm.REMOTE_ENV: "s3://only-env"}) == rm.RemoteConfig("only-env", "")
    with pytest.raises(UsageError, match="IMGBUILD_REMOTE: 'https://x' is not an s3://"):
        rm.configure({}, {rm.REMOTE_ENV: "https://x"})


def test_oss_endpoints_use_virtual_hosted_requests_and_their_region() -> None:
    config = rm.RemoteConfig("team-art", "imgbuild", "https://s3.oss-cn-beijing.aliyuncs.com")
    options, provider = rm.store_options(config, {"AWS_ACCESS_KEY_ID": "k"})
    assert options == {"endpoint": "https://team-art.s3.oss-cn-beijing.aliyuncs.com",
                       "virtual_hosted_style_request": True, "region": "cn-beijing"}
    assert provider is None  # keys in the environment: obstore reads them itself
    assert os.environ.get("AWS_ACCESS_KEY_ID") is None
