"""Scale benchmark: how a no-op `build`, a warm `check` and a fresh-clone `check` grow with the
number of targets (1k/10k/50k by default), side by side with ninja and GNU `make -q` on an
equivalent graph in the same run, and the peak RSS of each size's first build.

    python bench/scale.py [--sizes 1000,10000,50000] [--runs 5] [--workdir /tmp/imgbuild-scale]
                          [--jobs 4] [--reuse]

Per size N (a multiple of 100; projects from bench/gen_project.py, graphs from bench/noop.py):

* first build: a fresh project, an empty cache, placeholder drafts, `build -q -j JOBS`; wall time
  and the peak RSS of that one process (its own rusage from wait4, not the maximum over every
  child this bench started). With --reuse an already built project is kept and not measured.
  Beside it, the peak RSS of ninja making every output of the equivalent graph from nothing;
  with two sizes or more measured, a last line gives what each adds per target (per edge). A
  ninja edge here holds two paths, an imgbuild target its whole rendered request: ninja's
  figure is a floor, not an equal.
* no-op build and warm check: `build -q`, `check -q --allow-drafts` after one warm-up of each,
  median of RUNS whole processes.
* fresh-clone check: the project's files, lock and outputs copied to a new folder (no
  `.imgbuild/`) and checked with a new, empty IMGBUILD_CACHE_DIR, median of max(3, RUNS // 2);
  copying is outside the timing.
* ninja (no work to do) and `make -q` on N outputs each depending on one of N/100 files.

Children run without PYTHONDONTWRITEBYTECODE, as an installed package runs (with it, every
module is compiled from source on each run). Prints one markdown table, one row per size,
each as soon as it is measured.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_project import generate  # noqa: E402
from noop import IMGBUILD, make_graph, timed, tool  # noqa: E402

CHECK = [*IMGBUILD, "check", "-q", "--allow-drafts"]
BUILD = [*IMGBUILD, "build", "-q"]


def peak(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # drain first: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {cwd} exited {proc.returncode}: {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def first_build(project: Path, env: dict[str, str], jobs: int) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of the build that makes every image."""
    return peak([*BUILD, "-j", str(jobs)], project, env)


def ninja_first_build(root: Path, n: int, env: dict[str, str], jobs: int) -> float:
    """Peak RSS in MiB of ninja making every output of the N-output graph from nothing.

    Through GNU time, not wait4 from here: Linux carries a process's peak RSS across exec, so
    a child forked from this Python process starts at this process's ~15 MiB, more than
    ninja's own peak at 10k edges. GNU time forks from a process of ~2 MiB."""
    graph = make_graph(root, n)
    fresh = root / f"ninja-first-{n}"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(graph / "specs", fresh / "specs")
    shutil.copy(graph / "build.ninja", fresh / "build.ninja")
    (fresh / "out").mkdir()
    report = root / f"ninja-first-{n}.rss"
    try:
        peak([tool("time"), "-f", "%M", "-o", str(report), tool("ninja"), "-j", str(jobs)], fresh, env)
        return int(report.read_text().split()[-1]) / 1024  # KiB
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        report.unlink(missing_ok=True)


def built_project(root: Path, n: int, env: dict[str, str], jobs: int,
                  reuse: bool) -> tuple[Path, float | None, float | None]:
    """The built project, and its first build's (wall seconds, peak RSS MiB); None when reused."""
    project = root / f"imgbuild-{n}"
    if reuse and (project / "imgbuild.lock").exists():
        return project, None, None
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(root / f"cache-{n}", ignore_errors=True)
    generate(project, n)
    print(f"first build of {n:,} placeholder images...", file=sys.stderr, flush=True)
    wall, rss = first_build(project, {**env, "IMGBUILD_CACHE_DIR": str(root / f"cache-{n}")}, jobs)
    return project, wall, rss


def warm_up(project: Path, env: dict[str, str]) -> None:
    """One build and one check, so the plan, stat and no-op snapshot caches exist. A snapshot
    is not written for files changed in the last 2 s (they could change again unseen), so a
    build that has just finished gets a second round."""
    for _ in range(2):
        for cmd in (BUILD, CHECK):
            subprocess.run(cmd, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
        if (project / ".imgbuild" / "noop-snapshot.json").exists():
            return
        time.sleep(2.1)


def fresh_clone_check(project: Path, root: Path, env: dict[str, str], runs: int) -> float:
    clone = root / "fresh-clone"
    cache = root / "fresh-cache"
    child_env = {**env, "IMGBUILD_CACHE_DIR": str(cache)}

    def prepare() -> None:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(project, clone, ignore=shutil.ignore_patterns(".imgbuild"))
        cache.mkdir()

    try:
        return timed(CHECK, clone, runs, prepare=prepare, env=child_env)
    finally:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def measure(root: Path, n: int, env: dict[str, str], args: argparse.Namespace) -> dict[str, object]:
    project, first_wall, first_rss = built_project(root, n, env, args.jobs, args.reuse)
    env = {**env, "IMGBUILD_CACHE_DIR": str(root / f"cache-{n}")}
    warm_up(project, env)
    print(f"timing {n:,}...", file=sys.stderr, flush=True)
    graph = make_graph(root, n)
    row: dict[str, object] = {"n": n, "first_wall": first_wall, "first_rss": first_rss,
                              "ninja_rss": ninja_first_build(root, n, env, args.jobs)}
    row["build"] = timed(BUILD, project, args.runs, env=env)
    row["check"] = timed(CHECK, project, args.runs, env=env)
    row["fresh"] = fresh_clone_check(project, root, env, max(3, args.runs // 2) if args.runs > 1 else 1)
    row["ninja"] = timed([tool("ninja")], graph, args.runs, env=env)
    row["make"] = timed([tool("make"), "-q"], graph, args.runs, env=env)
    return row


HEADER = ("| targets | first build s | first build peak RSS MiB | ninja first build peak RSS MiB "
          "| no-op build s | check s | fresh-clone check s | ninja s | make -q s | build × ninja "
          "| check × ninja | fresh check × ninja |\n" + "|---|" * 12).replace("||", "|")


def table_row(r: dict[str, object]) -> str:
    ninja = float(r["ninja"])  # type: ignore[arg-type]
    wall, rss = r["first_wall"], r["first_rss"]
    return (f"| {r['n']:,} | {'(reused)' if wall is None else f'{wall:.1f}'} "
            f"| {'(reused)' if rss is None else f'{rss:.0f}'} | {r['ninja_rss']:.0f} "
            f"| {r['build']:.3f} | {r['check']:.3f} "
            f"| {r['fresh']:.3f} | {ninja:.3f} | {r['make']:.3f} | {float(r['build']) / ninja:.1f} "  # type: ignore[arg-type]
            f"| {float(r['check']) / ninja:.1f} | {float(r['fresh']) / ninja:.1f} |")  # type: ignore[arg-type]


def per_target(rows: list[dict[str, object]]) -> str:
    """What one more target adds to the first build's peak RSS, between the smallest and the
    largest size measured, beside what one more edge adds to ninja's."""
    measured = [r for r in rows if r["first_rss"] is not None]
    if len(measured) < 2:
        return ""
    a, b = measured[0], measured[-1]
    span = int(b["n"]) - int(a["n"])  # type: ignore[call-overload]
    ours = (float(b["first_rss"]) - float(a["first_rss"])) * 2**20 / span  # type: ignore[arg-type]
    ninja = (float(b["ninja_rss"]) - float(a["ninja_rss"])) * 2**20 / span  # type: ignore[arg-type]
    ratio = f" ({ours / ninja:.1f}×)" if ninja > 0 else ""
    return (f"\nfirst build, peak RSS added per target from {int(a['n']):,} to {int(b['n']):,}: "  # type: ignore[call-overload]
            f"imgbuild {ours:.0f} B, ninja {ninja:.0f} B per edge{ratio}")


def footer(runs: int) -> str:
    return (f"\nmedians of {runs} whole-process run(s) (fresh clone: {max(3, runs // 2) if runs > 1 else 1}); "
            f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"load average {os.getloadavg()[0]:.1f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000",
                        help="comma-separated target counts, each a multiple of 100")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=4, help="-j of the first build")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "imgbuild-scale")
    parser.add_argument("--reuse", action="store_true",
                        help="keep already built projects (their first build is not measured)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    root = args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    tool("ninja"), tool("make"), tool("time")  # fail before the long builds, not after
    env = {**os.environ, "IMGBUILD_PROVIDER": "placeholder"}
    for name in ("DASHSCOPE_API_KEY", "PYTHONDONTWRITEBYTECODE", "IMGBUILD_REMOTE"):
        env.pop(name, None)
    print(HEADER, flush=True)
    rows = []
    for n in sizes:  # each row as soon as it is measured: a long 50k run keeps the smaller ones
        rows.append(measure(root, n, env, args))
        print(table_row(rows[-1]), flush=True)
    print(per_target(rows) + footer(args.runs))


if __name__ == "__main__":
    main()
