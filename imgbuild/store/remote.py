"""The shared remote cache: a team's paid originals on an S3-compatible object store (Amazon S3,
Alibaba Cloud OSS through its S3 endpoint, SeaweedFS, MinIO...).

Layout under s3://BUCKET/PREFIX:
    cas/sha256/<hex>               one original's bytes, named by their sha256 (immutable)
    ac/v1/<generation key>.json    which originals a generation key produced, and how

The rules are those the remote caches of Bazel, sccache and Turborepo learned the hard way:
* Writes are create-only (If-None-Match: *), so an entry, once written, is never replaced (a
  poisoned upload cannot overwrite a good one); an object that already exists is a success.
  Originals go up before the record naming them, so a record never names a missing object.
  Every upload carries a SHA-256 checksum that the store verifies.
* Reads are verified: an original is re-hashed against its name and decoded before use; a
  record is plain JSON checked field by field, never unpickled, never executed.
* The bucket is never listed: the keys a build needs are looked up one by one (GET/HEAD).
* Credentials come only from the store's standard environment variables and files, never
  from imgbuild.yaml, and never appear in a message.

Import cost: obstore is imported when a `Remote` is opened, never by a project without one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgbuild.errors import ImgbuildError, UsageError

REMOTE_ENV = "IMGBUILD_REMOTE"
READ_ONLY_ENV = "IMGBUILD_REMOTE_READ_ONLY"
RECORD_VERSION = 1

# Originals from other providers stay local: placeholder drafts are free to redraw, and images
# of an emulator (dashscope@127.0.0.1) must not clutter a team's store. A proxy in front of
# DashScope (dashscope@HOST) can be allowed with `remote.upload_providers`.
DEFAULT_UPLOADED = ("dashscope",)

# Which failures mean the store itself is out of reach or refuses us: after the first, a build
# says so once and goes on locally instead of trying (and waiting on) every other object.
UNREACHABLE = "unreachable"
DENIED = "denied"
TAMPERED = "tampered"
UNDECODABLE = "undecodable"
BAD_RECORD = "bad_record"
MISMATCH = "mismatch"
FAILED = "failed"
_FAULT_TEXT = {
    UNREACHABLE: "the store did not answer",
    DENIED: "access denied (check the credentials and their policy)",
    TAMPERED: "content does not match its sha256 name: tampered or damaged, not used",
    UNDECODABLE: "not a readable image, not used",
    BAD_RECORD: "not a valid imgbuild record, not used",
    MISMATCH: "does not match the lock, not used",
    FAILED: "the request failed",
}

IN_FLIGHT = 16  # requests at once: enough to fill a link with ~1 MB originals
READ_TIMEOUT = 30.0  # seconds without a byte from the store before a request fails
PROBE_TIMEOUT = 5.0  # seconds the store has to answer any HTTP request at all
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_TOKEN", "AWS_ACCESS_KEY_ID")


@dataclass(frozen=True)
class Fault:
    """One failed remote operation, as data: what kind, on which object."""

    kind: str
    path: str  # under the prefix, e.g. cas/sha256/ab12...
    detail: str = ""

    def __str__(self) -> str:
        text = _FAULT_TEXT.get(self.kind, self.kind)
        return f"{self.path}: {text}" + (f" ({self.detail})" if self.detail else "")


class RemoteError(ImgbuildError):
    def __init__(self, fault: Fault, url: str = "") -> None:
        self.fault = fault
        super().__init__(f"remote {url}/{fault}" if url else f"remote: {fault}")


@dataclass(frozen=True)
class RemoteConfig:
    bucket: str
    prefix: str  # without leading or trailing slash; may be empty
    endpoint: str | None = None  # None: AWS_ENDPOINT_URL, else the provider's default
    read_only: bool = False
    upload_providers: frozenset[str] = frozenset(DEFAULT_UPLOADED)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def uploads(self, provider: str) -> bool:
        return provider in self.upload_providers


def parse_url(url: str, source: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix); `source` names where the URL came from."""
    match = re.match(r"^s3://([^/]+)/*(.*?)/*$", url.strip())
    if not match or not _BUCKET.match(match.group(1)):
        raise UsageError(f"{source}: '{url}' is not an s3://BUCKET/PREFIX URL "
                         "(bucket: 3-63 lower-case letters, digits, dots or hyphens)")
    return match.group(1), match.group(2)


def configure(settings: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> RemoteConfig | None:
    """The project's remote (`remote:` in imgbuild.yaml; IMGBUILD_REMOTE overrides the URL and
    IMGBUILD_REMOTE_READ_ONLY=1 forbids writes), or None when there is none."""
    section = settings.get("remote") or {}
    url = env.get(REMOTE_ENV) or section.get("url")
    if not url:
        return None
    bucket, prefix = parse_url(url, REMOTE_ENV if env.get(REMOTE_ENV) else "imgbuild.yaml: remote.url")
    flag = env.get(READ_ONLY_ENV, "").strip().lower()
    read_only = bool(section.get("read_only")) or flag not in ("", "0", "false", "no", "off")
    uploaded = frozenset((*DEFAULT_UPLOADED, *section.get("upload_providers", ())))
    return RemoteConfig(bucket, prefix, section.get("endpoint") or None, read_only,
                        uploaded - {"placeholder"})


# --- credentials: the standard variables, or a profile of the shared files ---------------------

def _profile_section(path: Path, name: str) -> dict[str, str]:
    import configparser  # only when a remote is opened: start-up stays lean without one

    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return {}
    for section in (name, f"profile {name}"):
        if parser.has_section(section):
            return dict(parser.items(section))
    return {}


def store_options(config: RemoteConfig, env: Mapping[str, str]) -> tuple[dict[str, Any], Any]:
    """(S3Store keyword options, credential provider or None). Keys set in the environment are
    read by obstore itself; otherwise the profile (AWS_PROFILE, else `default`) of the shared
    credentials and config files is used, as the AWS CLI does."""
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path.home() / ".aws"
    files = _profile_section(Path(env.get("AWS_CONFIG_FILE") or home / "config"), profile)
    options: dict[str, Any] = {}
    endpoint = (config.endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
                or files.get("endpoint_url"))
    if endpoint:
        options["endpoint"] = endpoint.rstrip("/")
        if _virtual_hosted(endpoint):
            # OSS answers only virtual-hosted requests; obstore wants the bucket in the host then.
            scheme, _, host = options["endpoint"].partition("://")
            options["endpoint"] = f"{scheme}://{config.bucket}.{host}"
            options["virtual_hosted_style_request"] = True
    if not (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        options["region"] = files.get("region") or _oss_region(endpoint) or "us-east-1"
    if env.get("AWS_ACCESS_KEY_ID") or _delegated(env):
        return options, None
    keys = _profile_section(Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / "credentials"), profile)
    keys = keys if keys.get("aws_access_key_id") else files
    if not keys.get("aws_access_key_id") or not keys.get("aws_secret_access_key"):
        raise RemoteError(Fault(DENIED, config.url, "no credentials: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"))
    credential = {"access_key_id": keys["aws_access_key_id"],
                  "secret_access_key": keys["aws_secret_access_key"],
                  "token": keys.get("aws_session_token"), "expires_at": None}
    return options, lambda: credential


def _delegated(env: Mapping[str, str]) -> bool:
    """Credentials obstore finds by itself: web identity (OIDC in CI), a container's, or none."""
    return any(env.get(name) for name in (
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI")) or env.get("AWS_SKIP_SIGNATURE", "").lower() == "true"


def _virtual_hosted(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    return host.endswith(".aliyuncs.com")


def _oss_region(endpoint: str | None) -> str | None:
    """OSS signs with its region id: s3.oss-cn-beijing.aliyuncs.com -> cn-beijing."""
    found = re.search(r"oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com", endpoint or "")
    return found.group(1) if found else None


# --- the store -----------------------------------------------------------------------------------

@dataclass
class Stats:
    hits: int = 0  # generation keys restored from the remote
    uploaded: int = 0  # generation keys whose record this process wrote
    already_there: int = 0  # generation keys the remote had before we tried
    errors: int = 0
    skipped: int = 0  # operations not tried: the store was down, or uploads are off
    faults: list[Fault] = field(default_factory=list)


class Remote:
    """Get and put originals and records. Thread-safe: callers run many at once."""

    def __init__(self, config: RemoteConfig, env: Mapping[str, str] = os.environ,
                 in_flight: int = IN_FLIGHT, read_timeout: float = READ_TIMEOUT) -> None:
        import threading
        from datetime import timedelta

        from obstore.store import S3Store

        self.config = config
        self.stats = Stats()
        self.down: Fault | None = None  # set once the store proved unreachable or refused us
        self.writes_denied: Fault | None = None
        self._lock = threading.Lock()
        # At most `in_flight` requests at once, however many threads call: hashing, decoding and
        # writing to the local cache happen outside, so the link stays busy while they run.
        self._slots = threading.BoundedSemaphore(max(1, in_flight))
        self._secrets = [env[n] for n in _SECRET_ENV if env.get(n)]
        options, credentials = store_options(config, env)
        endpoint = options.get("endpoint") or ""
        region = options.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._probe_url = endpoint or f"https://s3.{region}.amazonaws.com"
        self._probe_lock = threading.Lock()
        self._silent = False  # the endpoint did not answer a probe
        self._store = S3Store(
            config.bucket, prefix=config.prefix or None, checksum_algorithm="SHA256",
            credential_provider=credentials,
            # read_timeout: a store that accepts connections but stops answering (a hung or
            # stopped server) costs seconds, not the whole request timeout.
            client_options={"allow_http": endpoint.startswith("http://"), "connect_timeout": "5s",
                            "timeout": "120s", "read_timeout": timedelta(seconds=read_timeout)},
            # Retries with backoff on 5xx, 429 and dropped connections, bounded so that a dead
            # store costs seconds, not the minutes of the library's defaults.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=20),
                          "backoff": {"init_backoff": timedelta(milliseconds=100),
                                      "max_backoff": timedelta(seconds=2), "base": 2}},
            **options)

    @property
    def url(self) -> str:
        return self.config.url

    # --- whole generations ---------------------------------------------------------------------

    def fetch(self, key: str, accept: Callable[[list[bytes], dict[str, Any]], str | None] | None = None
              ) -> tuple[list[bytes], dict[str, Any]] | None:
        """The verified originals and record of `key`, or None when the remote has none.
        `accept` may refuse them with a reason (the lock pins other bytes). Raises RemoteError
        when something is there but cannot be used."""
        record = self.record(key)
        if record is None:
            return None
        images = [self.original(digest) for digest in record["images"]]
        refused = accept(images, record) if accept is not None else None
        if refused is not None:
            raise self._fault(MISMATCH, record_path(key), refused)
        self._count("hits")
        return images, record

    def record(self, key: str) -> dict[str, Any] | None:
        path = record_path(key)
        raw = self._get(path)
        return None if raw is None else self._checked_record(raw, key, path)

    def fetch_by_digest(self, digests: list[str], record: dict[str, Any],
                        accept: Callable[[list[bytes], dict[str, Any]], str | None] | None = None
                        ) -> list[bytes] | None:
        """The verified originals a lock names by digest, with no GET of the generation's
        record (`record` is what the lock says of the generation); None when any is absent.
        Verified as `fetch` verifies: re-hashed, decoded, then offered to `accept`."""
        images = []
        for digest in digests:
            path = blob_path(digest)
            data = self._get(path)
            if data is None:
                return None
            images.append(self._verified(digest, path, data))
        refused = accept(images, record) if accept is not None else None
        if refused is not None:
            raise self._fault(MISMATCH, blob_path(digests[0]), refused)
        self._count("hits")
        return images

    def original(self, digest: str) -> bytes:
        path = blob_path(digest)
        data = self._get(path)
        if data is None:  # a record naming an absent original: never uploaded in this order
            raise self._fault(BAD_RECORD, path, "the record names an original the store lacks")
        return self._verified(digest, path, data)

    def _verified(self, digest: str, path: str, data: bytes) -> bytes:
        if hashlib.sha256(data).hexdigest() != digest:
            raise self._fault(TAMPERED, path)
        problem = _decode_problem(data)
        if problem is not None:
            raise self._fault(UNDECODABLE, path, problem)
        return data

    def upload(self, key: str, images: list[bytes], record: Mapping[str, Any]) -> bool:
        """Originals, then the record; True when this call wrote the record, False when the
        remote already had it. Create-only: nothing existing is replaced."""
        if self.config.read_only or self.writes_denied is not None:
            self._count("skipped")
            return False
        if self.has(key):
            self._count("already_there")
            return False
        digests = []
        for data in images:
            digest = hashlib.sha256(data).hexdigest()
            self._put_new(blob_path(digest), data)
            digests.append(digest)
        document = {**_portable(record), "version": RECORD_VERSION, "key": key, "images": digests}
        body = json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")
        created = self._put_new(record_path(key), body)
        self._count("uploaded" if created else "already_there")
        return created

    def has(self, key: str) -> bool:
        return self._head(record_path(key))

    def _checked_record(self, raw: bytes, key: str, path: str) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        problem = _check_record_fields(doc, key) if doc is not None else "not JSON"
        if problem is not None:
            raise self._fault(BAD_RECORD, path, problem)
        return dict(doc)

    # --- single objects, with errors turned into data -----------------------------------------

    def _get(self, path: str) -> bytes | None:
        import obstore

        self._check_up(path)
        try:
            with self._slots:
                return bytes(obstore.get(self._store, path).bytes())
        except FileNotFoundError:
            return None
        except Exception as e:  # obstore raises its BaseError family and builtins
            raise self._failure(e, path) from None

    def _head(self, path: str) -> bool:
        import obstore

        self._check_up(path)
        try:
            with self._slots:
                obstore.head(self._store, path)
            return True
        except FileNotFoundError:
            return False
        except Exception as e:
            raise self._failure(e, path) from None

    def _put_new(self, path: str, data: bytes) -> bool:
        """Create-only PUT; True if created, False if the object was already there."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        self._check_up(path)
        try:
            with self._slots:
                obstore.put(self._store, path, data, mode="create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as e:
            raise self._failure(e, path, writing=True) from None

    def _check_up(self, path: str) -> None:
        if self.down is not None:
            self._count("skipped")
            raise RemoteError(self.down, self.url)

    def _failure(self, error: Exception, path: str, *, writing: bool = False) -> RemoteError:
        """Classify a library error; a store out of reach, or refusing to be read, is not
        asked again (one message, not one per object); refused writes stop uploads only.

        By what obstore exposes, never by its message text: a 401/403 is an
        UnauthenticatedError/PermissionDeniedError. Every other failure (connection refused,
        DNS, timeouts, 5xx after the retries) is one GenericError with no status attribute, so
        whether the store is out of reach is asked of the store itself: any HTTP answer to a
        plain request to its endpoint means it is up and this object's request failed."""
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        detail = self._scrub(error)
        if isinstance(error, (PermissionDeniedError, UnauthenticatedError)):
            # a read-only identity refused a write: uploads stop, reads may still work
            return self._once("writes_denied" if writing else "down", DENIED, path, detail)
        if self._answers():
            return self._fault(FAILED, path, detail)
        return self._once("down", UNREACHABLE, path, detail)

    def _once(self, attribute: str, kind: str, path: str, detail: str) -> RemoteError:
        """The first such failure is the error; requests that were in flight at the same time
        and fail for the same reason count as not tried, so one cause is one error."""
        with self._lock:
            known = getattr(self, attribute)
            if known is None:
                known = Fault(kind, path, detail)
                setattr(self, attribute, known)
                self.stats.errors += 1
                self.stats.faults.append(known)
            else:
                self.stats.skipped += 1
        return RemoteError(known, self.url)

    def _answers(self) -> bool:
        """Whether the store's endpoint answers HTTP at all (whatever the status). One probe at
        a time; once the store is known to be down, it is not probed again."""
        import http.client
        from urllib.parse import urlsplit

        with self._probe_lock:
            if self._silent or (self.down is not None and self.down.kind == UNREACHABLE):
                return False
            url = urlsplit(self._probe_url)
            kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            connection = kind(url.hostname or "", url.port, timeout=PROBE_TIMEOUT)
            try:
                connection.request("HEAD", "/")
                connection.getresponse().close()
            except (OSError, http.client.HTTPException):  # refused, reset, timeout, DNS, TLS
                self._silent = True  # the threads failing at the same moment need not ask again
                return False
            finally:
                connection.close()
            return True

    def _fault(self, kind: str, path: str, detail: str = "") -> RemoteError:
        fault = Fault(kind, path, detail)
        with self._lock:
            self.stats.errors += 1
            self.stats.faults.append(fault)
        return RemoteError(fault, self.url)

    def _scrub(self, error: Exception) -> str:
        """A short reason from a library error (its text holds the request and a debug dump),
        with any credential blanked out."""
        full = str(error)
        status = re.search(r"status code: (\d{3} [A-Za-z ]+?)[:.]", full)
        if status:
            return status.group(1)
        # object_store's HttpErrorKind, from the debug dump: only to word the message
        kind = re.search(r"\bkind: (Connect|Timeout|Request|Interrupted|Decode)\b", full)
        words = {"Connect": "could not connect", "Timeout": "timed out", "Request": "request failed",
                 "Interrupted": "connection interrupted", "Decode": "unreadable response"}
        reason = re.search(r"(Connection refused|Connection reset|timed out|dns error[^\n,]*)", full, re.I)
        text = (reason.group(1) if reason else words[kind.group(1)] if kind
                else full.splitlines()[0] if full else type(error).__name__)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text if len(text) <= 160 else text[:157] + "..."

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)


def blob_path(digest: str) -> str:
    return f"cas/sha256/{digest}"


def record_path(key: str) -> str:
    return f"ac/v1/{key}.json"


def _portable(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a local cache record that describe the generation, JSON-safe."""
    keep = ("provider", "request", "request_id", "task_id", "actual_prompt", "slots")
    return {k: record[k] for k in keep if record.get(k) is not None}


_RECORD_STRINGS = ("provider", "request_id", "task_id", "actual_prompt")


def _check_record_fields(doc: Any, key: str) -> str | None:
    """What is wrong with a downloaded record, or None. Only plain JSON types get through."""
    if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
        return "not a version-1 record"
    if doc.get("key") != key:
        return "it names another generation key"
    images = doc.get("images")
    if not isinstance(images, list) or not 1 <= len(images) <= 16 or not all(
            isinstance(d, str) and _HEX64.match(d) for d in images):
        return "'images' is not a list of sha256 digests"
    if not isinstance(doc.get("provider"), str):
        return "'provider' is missing"
    for name in _RECORD_STRINGS:
        if name in doc and not (isinstance(doc[name], str) and len(doc[name]) <= 8192):
            return f"'{name}' is not a short string"
    slots = doc.get("slots")
    if slots is not None and not (isinstance(slots, list) and len(slots) == len(images)
                                  and all(type(s) is int and 1 <= s <= 16 for s in slots)):
        return "'slots' does not match 'images'"
    if not isinstance(doc.get("request", {}), dict):
        return "'request' is not a mapping"
    return None


def _decode_problem(data: bytes) -> str | None:
    """Why `data` is not a usable image, or None. A PNG (what the providers return) is walked
    chunk by chunk with its CRCs, as strictly as Pillow's verify and in two thirds of its time;
    anything else is left to Pillow."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        from imgbuild.images.header import png_problem

        return png_problem(data)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as e:  # Pillow raises many types for damaged data; any of them means unusable
        return str(e) or type(e).__name__
    return None
