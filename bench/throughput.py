"""Throughput: how close `imgbuild build` gets to what the account's limits allow, side by side
with the official `dashscope` SDK driven by a ThreadPoolExecutor of C threads.

    python bench/throughput.py [--runs 3] [--sdk-runs 1] [--n 300] [--write docs/benchmarks.md]

The emulator runs in its own process (python -m imgbuild.emulator) so it never competes for
this process's GIL. Each setting builds N single-image targets (512*512, cheap to draw) with a
per-model rate limit R and concurrency C, enforced by the emulator, declared to imgbuild in the
project's `limits:` (and -j left at its default), and T = sync latency or task duration.

    bound = max(N/R, N*T/C) + T        (the best any client can do)
    ratio = wall / bound               (target <= 1.11, zero failures, a handful of 429s)

The SDK client is what people write by hand: C threads, each call retried on a 429 after 1 s
(up to 10 times), then the result downloaded and written to a file. imgbuild's wall time is the
whole `imgbuild build` (load, plan, generate, verify, cache, write outputs with metadata, lock)
with a fresh cache.

Each client run is a fresh Python process of its own (`--child`, internal), so its CPU time
(user + system, from RUSAGE_CHILDREN once it is reaped) is its own and nothing else's: CPU
seconds per image, imgbuild's whole build process against the process running the SDK threads,
imports included; the part inside the build / the thread pool is shown beside it.
`--quick` is a short smoke run (N = 20, one run each, writes nothing unless --write is given).

Async tasks: imgbuild's task polling schedule (1 s, then every 3 s, for real tasks of 10-60 s)
is scaled down to the 1 s emulated tasks (every 0.1 s); the SDK keeps its own schedule (1 s,
doubling to 5 s), as its users get it.

    python bench/throughput.py --polling [--write docs/benchmarks.md]

compares, in one run, imgbuild's real polling schedules on async Wan tasks of T = 3, 8 and 20 s
(C = 10 at once, R = 20/s): "before", the fixed schedule (1 s, then every 3 s, then 8 s), and
"after", the schedule that learns each model's task duration from the first tasks' submit_time
and end_time and polls near the expected finish. For each: wall / bound, polls per task, and
the mean wait between a task's end and the poll that saw it (the emulator's own clock).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "sk-bench-throughput"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    model: str
    call: str  # "sync" | "async"
    rps: float
    concurrency: int
    t: float  # sync latency or task duration

    def bound(self, n: int) -> float:
        return max(n / self.rps, n * self.t / self.concurrency) + self.t

    def emulator_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"rate_limits": {self.model: self.rps}, "sync_latency": 0.0,
                               "task_duration": 0.5, "task_concurrency": {}, "sync_concurrency": {}}
        if self.call == "sync":
            cfg.update(sync_latency=self.t, sync_concurrency={self.model: self.concurrency})
        else:
            cfg.update(task_duration=self.t, task_concurrency={self.model: self.concurrency})
        return cfg


SETTINGS = (
    Setting("R binds (sync qwen-image-2.0)", "qwen-image-2.0", "sync", rps=10, concurrency=20, t=0.5),
    Setting("C binds (sync qwen-image-2.0)", "qwen-image-2.0", "sync", rps=30, concurrency=5, t=0.5),
    Setting("async Wan tasks (wan2.2-t2i-flash)", "wan2.2-t2i-flash", "async", rps=20, concurrency=10, t=1.0),
)


# --- the emulator, in its own process ---------------------------------------------------------

class EmulatorProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgbuild.emulator", "--port", "0", "--api-key", KEY],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"emulator did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[1].strip()
        self.origin = self.base_url.rsplit("/api/", 1)[0]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.origin + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def configure(self, cfg: dict[str, Any]) -> None:
        self._call("POST", "/__emulator__/config", cfg)

    def reset(self) -> None:
        self._call("POST", "/__emulator__/reset")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/__emulator__/stats")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- imgbuild -----------------------------------------------------------------------------------

def write_project(root: Path, s: Setting, n: int) -> None:
    root.mkdir(parents=True)
    (root / "imgbuild.yaml").write_text(
        "version: 1\noutput_dir: out\n"
        f"limits:\n  {s.model}: {{rps: {s.rps:g}, concurrency: {s.concurrency}}}\n"
        "images:\n"
        f"  - name: \"img-{{{{ i }}}}\"\n    model: {s.model}\n    size: '512*512'\n"
        f"    call: {s.call}\n    matrix: {{i: {list(range(n))}}}\n"
        "    prompt: bench tile number {{ i }}\n", encoding="utf-8")


def run_imgbuild(emu: EmulatorProcess, s: Setting, n: int, work: Path,
                 schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `imgbuild build` in a child process of its own (its CPU is the child's rusage);
    `schedule` = PollSchedule arguments (default: scaled to the 1 s emulated tasks)."""
    root = work / f"proj-{time.monotonic_ns()}"
    write_project(root, s, n)
    emu.reset()
    r = run_child({"client": "imgbuild", "root": str(root), "base_url": emu.base_url,
                   "schedule": schedule or SCALED_SCHEDULE})
    summary = r.pop("summary")
    stats = emu.stats()
    shutil.rmtree(root, ignore_errors=True)
    tasks = [t for t in stats.get("tasks", []) if t.get("seen") and t.get("end")]
    return {**r, "failed": summary["failed"] + summary.get("skipped", 0) + (r["code"] != 0 and not summary["failed"]),
            "built": summary["built"], "throttled": stats["throttled"], "billed": stats["billed"],
            "polls": [t["polls"] for t in tasks], "waits": [t["seen"] - t["end"] for t in tasks]}


SCALED_SCHEDULE = {"first": 0.1, "early": 0.1, "early_for": 60, "late": 0.5}


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    """Run one client (imgbuild or the SDK) in a fresh Python process and return what it reports
    plus its CPU seconds: user + system from RUSAGE_CHILDREN before and after it is reaped (the
    child's whole life, imports included). The emulator is a child too but lives until the end,
    so it is never counted; it is another process, so neither client is charged for it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                          capture_output=True, cwd=ROOT, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout
    if not out.strip():
        raise SystemExit(f"{job['client']} child failed ({proc.returncode}):\n"
                         + proc.stderr.decode(errors="replace")[-2000:])
    r: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    r["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r


def child_imgbuild(job: dict[str, Any]) -> dict[str, Any]:
    from imgbuild.cli import main
    from imgbuild.providers.dashscope import client as dashscope
    from imgbuild.providers.dashscope.timing import PollSchedule

    root = Path(job["root"])
    os.environ.update(DASHSCOPE_API_KEY=KEY, DASHSCOPE_HTTP_BASE_URL=job["base_url"],
                      IMGBUILD_CACHE_DIR=str(root / ".cache"))
    dashscope.PollSchedule = lambda: PollSchedule(**job["schedule"])  # type: ignore[misc,assignment]
    out = io.StringIO()
    start, cpu = time.monotonic(), time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["build", "--provider", "dashscope", "-C", str(root), "--json", "-q"])
    return {"wall": time.monotonic() - start, "cpu_run": time.process_time() - cpu, "code": code,
            "summary": json.loads(out.getvalue().strip().splitlines()[-1])}


# --- the official SDK, by hand ------------------------------------------------------------------

def run_sdk(emu: EmulatorProcess, s: Setting, n: int, work: Path) -> dict[str, Any]:
    out = work / f"sdk-{time.monotonic_ns()}"
    out.mkdir()
    emu.reset()
    r = run_child({"client": "sdk", "out": str(out), "base_url": emu.base_url, "n": n,
                   "model": s.model, "call": s.call, "concurrency": s.concurrency})
    stats = emu.stats()
    shutil.rmtree(out, ignore_errors=True)
    return {**r, "built": n - r["failed"], "throttled": stats["throttled"], "billed": stats["billed"]}


def child_sdk(job: dict[str, Any]) -> dict[str, Any]:
    import dashscope
    from dashscope import ImageSynthesis, MultiModalConversation

    dashscope.base_http_api_url = job["base_url"]
    out = Path(job["out"])
    lock = threading.Lock()
    failures: list[str] = []
    model, call = job["model"], job["call"]

    def one(i: int) -> None:
        prompt = f"bench tile number {i}"
        for _ in range(10):
            if call == "sync":
                rsp = MultiModalConversation.call(
                    model=model, messages=[{"role": "user", "content": [{"text": prompt}]}],
                    api_key=KEY, size="512*512", n=1, seed=i, prompt_extend=False, watermark=False)
            else:
                rsp = ImageSynthesis.call(model=model, prompt=prompt, api_key=KEY, size="512*512",
                                          n=1, seed=i, prompt_extend=False, watermark=False)
            if rsp.status_code != 429:
                break
            time.sleep(1.0)
        try:
            if rsp.status_code != 200:
                raise RuntimeError(f"{rsp.status_code} {rsp.code}")
            if call == "sync":
                url = rsp.output.choices[0].message.content[0]["image"]
            else:
                if rsp.output.task_status != "SUCCEEDED":
                    raise RuntimeError(rsp.output.task_status)
                url = rsp.output.results[0].url
            with urllib.request.urlopen(url, timeout=60) as resp:
                (out / f"img-{i}.png").write_bytes(resp.read())
        except Exception as exc:  # noqa: BLE001 - counted as a failed target
            with lock:
                failures.append(f"img-{i}: {exc}")

    start, cpu = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(max_workers=job["concurrency"]) as pool:
        list(pool.map(one, range(job["n"])))
    return {"wall": time.monotonic() - start, "cpu_run": time.process_time() - cpu,
            "failed": len(failures), "code": 0}


# --- report -------------------------------------------------------------------------------------

def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall"] for r in runs]
    return {"wall": statistics.median(walls), "walls": walls,
            "cpu": statistics.median(r["cpu"] for r in runs), "cpus": [r["cpu"] for r in runs],
            "cpu_run": statistics.median(r["cpu_run"] for r in runs),
            "failed": max(r["failed"] for r in runs), "throttled": statistics.median(r["throttled"] for r in runs),
            "throttled_max": max(r["throttled"] for r in runs)}


def table(results: list[tuple[Setting, dict[str, Any], dict[str, Any]]], n: int, runs: int, sdk_runs: int) -> str:
    rows = [
        "| setting | R/s | C | T s | bound s | imgbuild s (ratio) | 429s | failed | SDK + threads s (ratio) | 429s | failed "
        "| imgbuild CPU ms/image (in build) | SDK CPU ms/image (in calls) | CPU imgbuild / SDK |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, mine, sdk in results:
        b = s.bound(n)
        rows.append(
            f"| {s.name} | {s.rps:g} | {s.concurrency} | {s.t:g} | {b:.1f} "
            f"| {mine['wall']:.1f} ({mine['wall'] / b:.3f}) | {mine['throttled']:g} | {mine['failed']} "
            f"| {sdk['wall']:.1f} ({sdk['wall'] / b:.3f}) | {sdk['throttled']:g} | {sdk['failed']} "
            f"| {1000 * mine['cpu'] / n:.1f} ({1000 * mine['cpu_run'] / n:.1f}) "
            f"| {1000 * sdk['cpu'] / n:.1f} ({1000 * sdk['cpu_run'] / n:.1f}) "
            f"| {mine['cpu'] / sdk['cpu']:.2f} |")
    rows.append("")
    rows.append(f"N = {n} images per setting; imgbuild: median of {runs} run(s) "
                + "(walls: " + "; ".join(", ".join(f"{w:.1f}" for w in m["walls"]) for _, m, _ in results)
                + f"); SDK: median of {sdk_runs} run(s); 429s = median count at the emulator. "
                + "CPU = user + system seconds of the client's own process (a fresh Python per run, "
                + "imports included; the emulator's process is not counted) / N, median of the runs; "
                + "in parentheses the part spent inside the build or the thread pool. CPU s per run, "
                + "imgbuild: " + "; ".join(", ".join(f"{c:.2f}" for c in m["cpus"]) for _, m, _ in results)
                + "; SDK: " + "; ".join(", ".join(f"{c:.2f}" for c in k["cpus"]) for _, _, k in results) + ".")
    return "\n".join(rows)


def write_doc(path: Path, text: str, command: str) -> None:
    section = (
        "## Throughput\n\n"
        "How close a build gets to the account's limits: N single-image targets against the\n"
        "emulator (own process) enforcing a per-model rate R and concurrency C, with T the sync\n"
        "latency or task duration. bound = max(N/R, N*T/C) + T is the best any client can do;\n"
        "the ratio is wall time / bound (target <= 1.11, no failures, a handful of 429s).\n"
        "Beside it, the official `dashscope` SDK in a ThreadPoolExecutor of C threads, retrying\n"
        "429s after 1 s: what users write by hand. See bench/throughput.py for the details\n"
        "(imgbuild's task poll interval is scaled to the 1 s emulated tasks; the SDK keeps its own).\n"
        "Each client runs in a fresh process of its own; its CPU seconds (user + system) per image\n"
        "are the last columns: what a busy machine (CI, several builds at once) has to find for it.\n\n"
        f"Command: `{command}` (machine: {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end)\n\n"
        + text + "\n")
    old = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    start = old.find("## Throughput")
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        end = old.find("\n## ", start + 1)
        body = old[start:] if end == -1 else old[start:end + 1]
        kept = body.find("\n### ")  # hand-written subsections (before/after notes) stay
        if kept != -1:
            section += body[kept:].rstrip("\n") + "\n"
        new = old[:start] + section + ("" if end == -1 else "\n" + old[end + 1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, "utf-8")


# --- polling: the fixed schedule against the learning one (issue 13) ----------------------------

POLLING = ((3.0, 100), (8.0, 40), (20.0, 30))  # task duration T (s), tasks N; C = 10, R = 20/s


def run_polling(emu: EmulatorProcess, work: Path,
                cases: tuple[tuple[float, int], ...] = POLLING) -> list[dict[str, Any]]:
    rows = []
    for t, n in cases:
        s = Setting(f"async Wan, T = {t:g} s", "wan2.2-t2i-flash", "async", rps=20,
                    concurrency=10, t=t)
        emu.configure(s.emulator_config())
        for label, learn in (("before (fixed)", False), ("after (learns)", True)):
            r = run_imgbuild(emu, s, n, work, schedule={"learn": learn})
            row = {"setting": s, "n": n, "label": label, **r,
                   "ratio": r["wall"] / s.bound(n),
                   "polls_per_task": statistics.mean(r["polls"]),
                   "wait": statistics.mean(r["waits"]), "wait_max": max(r["waits"])}
            rows.append(row)
            print(f"{s.name} {label}: {r['wall']:.1f}s (bound {s.bound(n):.1f}s), "
                  f"{row['polls_per_task']:.2f} polls/task, wait {row['wait']:.2f}s",
                  file=sys.stderr, flush=True)
    return rows


def polling_table(rows: list[dict[str, Any]]) -> str:
    out = ["| T s | N | schedule | wall s | bound s | wall / bound | polls per task | mean wait after end s (% of T) | max wait s | failed |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["setting"]
        out.append(f"| {s.t:g} | {r['n']} | {r['label']} | {r['wall']:.1f} | {s.bound(r['n']):.1f} "
                   f"| {r['ratio']:.3f} | {r['polls_per_task']:.2f} | {r['wait']:.2f} "
                   f"({100 * r['wait'] / s.t:.0f}%) | {r['wait_max']:.2f} | {r['failed']} |")
    out.append("")
    out.append("C = 10 tasks at once, R = 20 submissions/s (both enforced by the emulator and "
               "declared in `limits:`); bound = max(N/R, N*T/C) + T; wait = the emulator's time "
               "from a task's end to the first query that saw it finished. The bound counts the "
               "last wave of tasks twice (N*T/C already includes it, then + T), so a C-bound "
               "build can come in under it; the first wave (C tasks) is always on the fixed "
               "schedule, which is most of the remaining wait and polls for the short runs.")
    return "\n".join(out)


def write_section(path: Path, title: str, intro: str, text: str, command: str) -> None:
    section = (f"## {title}\n\n{intro}\n\nCommand: `{command}` (machine: {os.cpu_count()} CPUs, "
               f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end)\n\n"
               + text + "\n")
    old = path.read_text("utf-8") if path.exists() else "# Benchmarks\n"
    start = old.find(f"## {title}")
    if start == -1:
        end_of_throughput = old.find("\n## ", old.find("## Throughput") + 1)
        at = end_of_throughput + 1 if end_of_throughput != -1 else len(old)
        new = old[:at].rstrip("\n") + "\n\n" + section + ("\n" + old[at:] if at < len(old) else "")
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start] + section + ("" if end == -1 else "\n" + old[end + 1:])
    path.write_text(new, "utf-8")


POLLING_INTRO = """How long a build waits on async tasks after they end. The fixed schedule (1 s, then every
3 s for 30 s, then every 8 s; the docs ask for "every 3 seconds for the first 30 seconds, then
increasing intervals") polls up to 3 s after a task has finished. The learning schedule takes
each model's task duration from the submit_time and end_time of the tasks that finished in the
build (median of the last 8) and polls once just after the expected end (5% + 0.1 s later),
then every 10% of the duration (0.5 to 3 s) if the task is not done. The first wave of tasks
is polled on the fixed schedule: nothing is known yet. Both schedules run in the same
invocation against the emulator (its own process), async wan2.2-t2i-flash tasks of 512*512."""


def main_polling(write: Path, quick: bool = False) -> int:
    emu = EmulatorProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="imgbuild-bench-") as tmp:
            rows = run_polling(emu, Path(tmp), ((1.0, 10),) if quick else POLLING)
    finally:
        emu.close()
    text = polling_table(rows)
    print(text)
    if str(write) != "-":
        write_section(write, "Polling async tasks", POLLING_INTRO, text,
                      "python bench/throughput.py --polling")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="images per setting (default 300; 20 with --quick)")
    ap.add_argument("--runs", type=int, default=3, help="imgbuild runs per setting (median)")
    ap.add_argument("--sdk-runs", type=int, default=1, help="SDK runs per setting (median)")
    ap.add_argument("--only", help="run only settings whose name contains this")
    ap.add_argument("--write", type=Path, default=ROOT / "docs" / "benchmarks.md",
                    help="markdown file whose 'Throughput' section is (re)written; '-' = none")
    ap.add_argument("--polling", action="store_true",
                    help="compare the fixed and the learning task polling schedules instead")
    ap.add_argument("--quick", action="store_true",
                    help="a short smoke run: N = 20, one run each, nothing written unless --write")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: one client run, in its own process
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        result = (child_imgbuild if job["client"] == "imgbuild" else child_sdk)(job)
        print(json.dumps(result))
        return 0
    if args.quick:
        args.n = args.n or 20
        args.runs = args.sdk_runs = 1
        if not any(a.startswith("--write") for a in sys.argv):
            args.write = Path("-")
    args.n = args.n or 300
    if args.polling:
        return main_polling(args.write, quick=args.quick)
    settings = [s for s in SETTINGS if not args.only or args.only in s.name]
    emu = EmulatorProcess()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="imgbuild-bench-") as tmp:
            work = Path(tmp)
            for s in settings:
                emu.configure(s.emulator_config())
                mine = [run_imgbuild(emu, s, args.n, work) for _ in range(args.runs)]
                sdk = [run_sdk(emu, s, args.n, work) for _ in range(args.sdk_runs)]
                results.append((s, median_run(mine), median_run(sdk)))
                m = results[-1][1]
                print(f"{s.name}: imgbuild {m['wall']:.1f}s (bound {s.bound(args.n):.1f}s), "
                      f"SDK {results[-1][2]['wall']:.1f}s", file=sys.stderr, flush=True)
    finally:
        emu.close()
    text = table(results, args.n, args.runs, args.sdk_runs)
    print(text)
    if str(args.write) != "-":
        command = "python bench/throughput.py" + "".join(
            f" {a}" for a in sys.argv[1:] if not a.startswith("--write"))
        write_doc(args.write, text, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
