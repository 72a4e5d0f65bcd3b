"""Generate a synthetic imgbuild project of N targets across many files (matrix specs and
explicit entries), small images so that building it once is quick.

    python bench/gen_project.py DIR [--targets 10000]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

PER_FILE = 100  # 90 from one 9x10 matrix spec + 10 explicit specs


def generate(root: Path, targets: int) -> None:
    if targets % PER_FILE:
        raise SystemExit(f"--targets must be a multiple of {PER_FILE}")
    (root / "specs").mkdir(parents=True, exist_ok=True)
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "style.j2").write_text("flat vector style, {{ palette }}\n")
    (root / "imgbuild.yaml").write_text(
        "version: 1\n"
        "output_dir: out\n"
        "defaults: {model: qwen-image-2.0, size: '512*512'}\n"
        "vars: {brand: Acme, palette: teal and orange}\n"
        "include: ['specs/*.yaml']\n"
    )
    for f in range(targets // PER_FILE):
        a = ", ".join(f"a{i}" for i in range(9))
        b = ", ".join(f"b{i}" for i in range(10))
        lines = [
            f"vars: {{section: s{f}}}",
            "images:",
            f"  - name: 'm{f}-{{{{ a }}}}-{{{{ b }}}}'",
            f"    output: 'm{f}/{{{{ a }}}}/{{{{ b }}}}.png'",
            "    prompt: |",
            "      {% include 'style.j2' %}",
            "      An icon of {{ a }} and {{ b }} for {{ brand }}, section {{ section }}",
            "    matrix:",
            f"      a: [{a}]",
            f"      b: [{b}]",
        ]
        for e in range(10):
            lines += [f"  - name: e{f}-{e}", f"    prompt: explicit image {e} of file {f} for {{{{ brand }}}}"]
        (root / "specs" / f"f{f:03d}.yaml").write_text("\n".join(lines) + "\n")


def build_once(project: Path, targets: int, imgbuild: list[str], env: dict[str, str]) -> Path:
    """`project` generated and built with placeholder drafts (`-j 4`), unless a lock shows an
    earlier run already did: the benches that time a built project start from here."""
    if not (project / "imgbuild.lock").exists():
        shutil.rmtree(project, ignore_errors=True)
        generate(project, targets)
        print(f"building {targets} placeholder images once...", flush=True)
        subprocess.run([*imgbuild, "build", "-q", "-j", "4"], cwd=project, env=env, check=True)
    return project


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--targets", type=int, default=10_000)
    args = parser.parse_args()
    generate(args.dir, args.targets)
