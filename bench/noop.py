"""No-op benchmark: how long `imgbuild build` / `imgbuild check` take when nothing changed,
side by side with ninja and GNU `make -q` on an equivalent graph (same number of outputs, each
depending on its spec file), in the same run.

    python bench/noop.py [--targets 10000] [--runs 7] [--workdir /tmp/imgbuild-bench]

Builds the synthetic project once (placeholder provider, small images; takes a few minutes
for 10k targets the first time), then times whole processes and prints medians.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_project import PER_FILE, build_once  # noqa: E402

IMGBUILD = [sys.executable, "-m", "imgbuild"]


def tool(name: str) -> str:
    """The `ninja` (PyPI `ninja`, in the test extra) or `make` this comparison runs: this
    environment's scripts folder first, then PATH. Missing is an error, never a silent skip."""
    found = shutil.which(name, path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
    if found is None:
        raise SystemExit(f"`{name}` not found: the comparison needs it (ninja: pip install -e "
                         "'.[test]' brings it; make, GNU time: apt-get install make time)")
    return found


def timed(cmd: list[str], cwd: Path, runs: int, *, ok: tuple[int, ...] = (0,),
          prepare: object = None, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        if callable(prepare):
            prepare()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return statistics.median(times)


def make_graph(root: Path, targets: int) -> Path:
    """targets outputs, each depending on one of targets/100 spec files, like the imgbuild project."""
    graph = root / f"graph-{targets}"
    if (graph / ".built").exists():
        return graph
    shutil.rmtree(graph, ignore_errors=True)
    (graph / "specs").mkdir(parents=True)
    (graph / "out").mkdir()
    for f in range(targets // PER_FILE):
        (graph / "specs" / f"f{f:03d}.yaml").write_text("x\n")
    outs = [(f"out/t{i}.png", f"specs/f{i // PER_FILE:03d}.yaml") for i in range(targets)]
    with open(graph / "build.ninja", "w") as nf:
        nf.write("rule touch\n  command = touch $out\n")
        for out, dep in outs:
            nf.write(f"build {out}: touch {dep}\n")
    with open(graph / "Makefile", "w") as mf:
        mf.write("all: " + " ".join(o for o, _ in outs) + "\n")
        for out, dep in outs:
            mf.write(f"{out}: {dep}\n\ttouch $@\n")
    subprocess.run([tool("ninja"), "-j", "8"], cwd=graph, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([tool("make"), "-s"], cwd=graph, check=True, stdout=subprocess.DEVNULL)  # already fresh
    (graph / ".built").write_text("")
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgbuild-bench"))
    args = parser.parse_args()
    root = args.workdir
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(root / "cache"), "IMGBUILD_PROVIDER": "placeholder"}
    env.pop("DASHSCOPE_API_KEY", None)
    # as an installed package runs: with it set, every run would compile every module again
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.update(env)

    rows: list[tuple[str, float]] = []
    for n in (args.targets, args.small):
        project = build_once(root / f"imgbuild-{n}", n, IMGBUILD, env)
        subprocess.run([*IMGBUILD, "check", "-q", "--allow-drafts"], cwd=project, check=True)  # warm caches
        rows.append((f"imgbuild build, {n:,} targets, warm", timed([*IMGBUILD, "build", "-q"], project, args.runs)))
        rows.append((f"imgbuild check, {n:,} targets, warm",
                     timed([*IMGBUILD, "check", "-q", "--allow-drafts"], project, args.runs)))
        if n == args.targets:
            fresh = root / "fresh-clone"

            def clone(src: Path = project) -> None:
                shutil.rmtree(fresh, ignore_errors=True)
                shutil.copytree(src, fresh, ignore=shutil.ignore_patterns(".imgbuild"))

            rows.append((f"imgbuild check, {n:,} targets, fresh clone (no .imgbuild/)",
                         timed([*IMGBUILD, "check", "-q", "--allow-drafts"], fresh, max(3, args.runs // 2),
                               prepare=clone)))
            graph = make_graph(root, n)
            rows.append((f"ninja (no work to do), {n:,} outputs", timed([tool("ninja")], graph, args.runs)))
            rows.append((f"make -q, {n:,} outputs", timed([tool("make"), "-q"], graph, args.runs)))
    rows.append(("imgbuild --version", timed([*IMGBUILD, "--version"], root, args.runs)))
    rows.append(("python -c pass (interpreter start-up)", timed([sys.executable, "-c", "pass"], root, args.runs)))

    print(f"\nmedian of {args.runs} whole-process runs, {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| command | median (s) |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
