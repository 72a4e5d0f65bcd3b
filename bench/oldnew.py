"""Old vs new in the same run: start-up (--version, --help), check on a fresh clone of a
synthetic project, and a first placeholder build, each as whole processes alternating between
two checkouts (PYTHONPATH=<checkout>, run from a folder outside both, so neither editable
install wins). Prints medians of wall time and of CPU time (user + sys of the child), which is
the steadier number on a shared machine.

    python bench/oldnew.py --old /path/to/main --new . [--runs 7] [--workdir /tmp/imgbuild-oldnew]
        [--targets 10000] [--build-targets 300] [--cases startup,fresh,chdir,build]

The 10k project is generated with bench/gen_project.py and built once (placeholder provider).
"A fresh clone" is that project without .imgbuild/ and with a new, empty IMGBUILD_CACHE_DIR:
the same files git would check out (specs, lock, outputs), with no local state.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_project import build_once, generate  # noqa: E402

PY = sys.executable


def once(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {cwd} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(label: str, cmd: list[str], cwd: Path, envs: dict[str, dict[str, str]], runs: int,
            prepare: Callable[[str], None] | None = None, per: int = 1) -> list[str]:
    """Alternate old and new `runs` times each; one table row per side."""
    times: dict[str, list[tuple[float, float]]] = {side: [] for side in envs}
    for _ in range(runs):
        for side, env in envs.items():
            if prepare is not None:
                prepare(side)
            times[side].append(once(cmd, cwd, env))
    rows = []
    for side, samples in times.items():
        wall = statistics.median(w for w, _ in samples) / per
        cpu = statistics.median(c for _, c in samples) / per
        unit = "ms/image" if per > 1 else "s"
        scale = 1000 if per > 1 else 1
        rows.append(f"| {label} | {side} | {wall * scale:.3f} {unit} | {cpu * scale:.3f} {unit} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgbuild-oldnew"))
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--build-targets", type=int, default=300)
    parser.add_argument("--cases", default="startup,fresh,chdir,build")
    args = parser.parse_args()
    root = args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("DASHSCOPE_API_KEY", "COLUMNS")}
    base.update(IMGBUILD_PROVIDER="placeholder", COLUMNS="100")
    envs = {side: {**base, "PYTHONPATH": str(path.resolve())} for side, path in
            (("old", args.old), ("new", args.new))}
    for side, env in envs.items():  # the checkout given is the one imported
        where = subprocess.run([PY, "-c", "import imgbuild; print(imgbuild.__file__)"], cwd=root, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        print(f"{side}: {where}")
    cases = set(args.cases.split(","))
    rows: list[str] = []
    script = str(Path(PY).parent / "imgbuild")
    if "startup" in cases:
        rows += compare("python -c pass", [PY, "-c", "pass"], root, {"-": base}, args.runs)
        for flag in ("--version", "--help"):
            rows += compare(f"python -m imgbuild {flag}", [PY, "-m", "imgbuild", flag], root, envs, args.runs)
            if os.path.exists(script):
                rows += compare(f"imgbuild {flag} (console script)", [script, flag], root, envs, args.runs)
    if cases & {"fresh", "chdir"}:
        cache = root / "cache"
        project = build_once(root / f"p{args.targets}", args.targets, [PY, "-m", "imgbuild"],
                             {**envs["new"], "IMGBUILD_CACHE_DIR": str(cache)})
        empty = root / "empty-cache"
        fresh_env = {side: {**env, "IMGBUILD_CACHE_DIR": str(empty)} for side, env in envs.items()}

        def fresh(side: str) -> None:
            shutil.rmtree(project / ".imgbuild", ignore_errors=True)
            shutil.rmtree(empty, ignore_errors=True)
            empty.mkdir()

        check = [PY, "-m", "imgbuild", "check", "-q", "--allow-drafts"]
        if "fresh" in cases:
            rows += compare(f"check, {args.targets:,} targets, fresh clone", check, project, fresh_env,
                            args.runs, prepare=fresh)
        if "chdir" in cases:
            def warm_inside(side: str) -> None:  # the last run was made inside the project (a hook, say)
                subprocess.run(check, cwd=project, env=fresh_env[side], check=True, stdout=subprocess.DEVNULL)

            # --json lists every row, so the no-op snapshot cannot answer: the plan cache is used
            rows += compare(f"check --json -C DIR from another folder, {args.targets:,} targets, warmed inside",
                            [PY, "-m", "imgbuild", "check", "--json", "--allow-drafts", "-C", str(project)], root,
                            fresh_env, args.runs, prepare=warm_inside)
    if "build" in cases:
        n = args.build_targets
        project = root / f"build{n}"
        generate(project, n)
        cache = root / "build-cache"

        def clean(side: str) -> None:
            for path in (project / "out", project / ".imgbuild", cache):
                shutil.rmtree(path, ignore_errors=True)
            (project / "imgbuild.lock").unlink(missing_ok=True)

        build_env = {side: {**env, "IMGBUILD_CACHE_DIR": str(cache)} for side, env in envs.items()}
        rows += compare(f"first build, {n} placeholder images (512*512), -j 4",
                        [PY, "-m", "imgbuild", "build", "-q", "-j", "4"], project, build_env, args.runs,
                        prepare=clean, per=n)
    print(f"\nmedians of {args.runs} runs, old and new alternating; {os.cpu_count()} cores; "
          f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| command | code | wall | CPU (user+sys) |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
