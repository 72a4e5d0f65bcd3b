"""`imgbuild init`: write a starter imgbuild.yaml and keep the local state folder out of git."""
from __future__ import annotations

from pathlib import Path

from imgbuild.verbs.common import Where
from imgbuild.errors import UsageError
from imgbuild.spec.project import PROJECT_FILE, STATE_DIR, display_path
from imgbuild.verbs.results import DataResult

# The schema is not published at a public URL (its $id is an identifier, not a download), so
# init writes a local copy beside imgbuild.yaml for editors; `imgbuild schema` refreshes it.
SCHEMA_FILE = "imgbuild.schema.json"
GITIGNORE_LINE = f"{STATE_DIR}/"

TEMPLATE = f"""\
# yaml-language-server: $schema=./{SCHEMA_FILE}
# imgbuild project: `imgbuild build` generates every image below that is new or changed,
# `imgbuild check` (offline) fails when an image is out of date. Full field reference:
# `imgbuild schema`. Commit this file, imgbuild.lock and the generated images.
version: 1
output_dir: generated               # where images are written (relative to this file)
provider: auto                      # dashscope when DASHSCOPE_API_KEY is set, else offline drafts
defaults:
  model: qwen-image-plus            # Qwen-Image renders text best; wan2.6-t2i for photography
  size: "1:1"
  prompt_extend: false
  watermark: false
vars:
  brand: Acme                       # available as {{{{ brand }}}} in every prompt
images: []
# To start, delete `images: []` above and uncomment this example:
# images:
#   - name: hero
#     size: "16:9"
#     output: hero.png
#     prompt: |
#       A wide website hero banner with a large bold headline reading "{{{{ brand }}}}".
#       Soft morning light, clean editorial photography.
#     negative_prompt: blurry text, misspelled words
"""


def init(where: Where) -> DataResult:
    if where.file:
        raise UsageError("init takes no -f: it always writes imgbuild.yaml (use -C DIR for another folder)")
    root = Path(where.directory) if where.directory else Path.cwd()
    if root.exists() and not root.is_dir():
        raise UsageError(f"-C {where.directory}: not a directory")
    project_file = root / PROJECT_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        with project_file.open("x", encoding="utf-8") as f:  # "x": never overwrite, even in a race
            f.write(TEMPLATE)
        schema_file = root / SCHEMA_FILE
        wrote_schema = not schema_file.exists()
        if wrote_schema:
            from imgbuild.spec.project import schema_text

            schema_file.write_text(schema_text(), encoding="utf-8")
        gitignore = _ignore_state_dir(root / ".gitignore")
    except FileExistsError:
        raise UsageError(f"{display_path(project_file)} already exists; init never overwrites it "
                         "(edit it, or delete it and run init again)") from None
    except OSError as e:
        raise UsageError(f"cannot write in {display_path(root)}: {e.strerror}") from None
    return DataResult("init", {"project_file": str(project_file), "gitignore": gitignore,
                               "schema_file": str(schema_file) if wrote_schema else None})


def _ignore_state_dir(path: Path) -> str:
    """Append `.imgbuild/` unless an equivalent line is there: 'created', 'updated' or 'unchanged'."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        path.write_text(GITIGNORE_LINE + "\n", "utf-8")
        return "created"
    same = {STATE_DIR, f"{STATE_DIR}/", f"/{STATE_DIR}", f"/{STATE_DIR}/"}
    if any(line.strip() in same for line in text.splitlines()):
        return "unchanged"
    sep = "" if text == "" or text.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{sep}{GITIGNORE_LINE}\n")
    return "updated"
