"""Find and load a project: imgbuild.yaml plus its included spec files, each checked against
the JSON Schema. Every problem of every file is collected before anything fails."""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from imgbuild.spec import yamlio
from imgbuild.errors import Problem, SpecError, UsageError

PROJECT_FILE = "imgbuild.yaml"
LOCK_FILE = "imgbuild.lock"
STATE_DIR = ".imgbuild"  # local, untracked: journal, logs, plan cache


@dataclass(frozen=True)
class SpecFile:
    path: Path
    display: str  # path as shown in messages (relative to the working directory when possible)
    data: Any  # LocDict of the document


@dataclass
class Project:
    file: Path
    root: Path
    settings: Any  # LocDict of imgbuild.yaml
    files: list[SpecFile]  # imgbuild.yaml first, then the included files in sorted order
    read_files: list[Path] = field(default_factory=list)  # every file whose content shapes the plan

    @property
    def output_dir(self) -> Path:
        return self.root / self.settings.get("output_dir", "generated")

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def templates_dir(self) -> Path:
        return self.root / self.settings.get("templates_dir", "templates")

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def display(self, path: Path) -> str:
        return display_path(path)


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def find_project_file(directory: str | None, file: str | None) -> Path:
    """`-f FILE` wins; else imgbuild.yaml in `-C DIR` (or the current directory) or, as git
    finds its repository, in the nearest parent folder, up to the repository's root."""
    base = Path(directory) if directory else Path.cwd()
    if directory and not base.is_dir():
        raise UsageError(f"-C {directory}: no such directory")
    path = (base / file) if file else _search_up(base)
    if not path.is_file():
        if file:
            raise UsageError(f"{display_path(path)}: no such project file")
        raise UsageError(
            f"no {PROJECT_FILE} in {display_path(base.resolve())}; "
            "run `imgbuild init` to create one, or point to a project with -C DIR or -f FILE"
        )
    return path.resolve()


def _search_up(base: Path) -> Path:
    """imgbuild.yaml in `base` or its nearest parent; the search ends at a folder holding
    .git (the repository root), so a project never picks up a file outside its repository."""
    start = base.resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder / PROJECT_FILE
        if (folder / ".git").exists():
            break
    return base / PROJECT_FILE


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    from importlib.resources import files

    text = files("imgbuild").joinpath("_schemas/imgbuild.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


@lru_cache(maxsize=2)
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    root = schema()
    if kind == "project":
        return Draft202012Validator(root)
    registry = Registry().with_resource(root["$id"], Resource.from_contents(root))
    return Draft202012Validator({"$ref": root["$id"] + "#/$defs/specfile"}, registry=registry)


def load_project(path: Path) -> Project:
    problems: list[Problem] = []
    main = _load_document(path, "project", problems)
    if main is None:
        raise SpecError(problems)
    project = Project(file=path, root=path.parent, settings=main.data, files=[main], read_files=[path])
    for inc in _included_paths(project, problems):
        spec = _load_document(inc, "specfile", problems)
        project.read_files.append(inc)
        if spec is not None:
            project.files.append(spec)
    if problems:
        raise SpecError(problems)
    return project


def _load_document(path: Path, kind: str, problems: list[Problem]) -> SpecFile | None:
    display = display_path(path)
    try:
        data = yamlio.load_file(path, display)
    except yamlio.YamlError as e:
        problems.append(Problem(display, e.mark[0], e.mark[1], "", e.message, e.hint))
        return None
    if data is None:
        data = yamlio.LocDict()
    if not isinstance(data, dict):
        problems.append(Problem(display, 1, 1, "", "the file must hold a mapping (key: value pairs)"))
        return None
    found = [_to_problem(display, data, err) for err in _validator(kind).iter_errors(data)]
    problems.extend(p for group in found for p in group)
    return SpecFile(path, display, data) if not found else None


def _included_paths(project: Project, problems: list[Problem]) -> list[Path]:
    settings = project.settings
    paths: set[Path] = set()
    for i, pattern in enumerate(settings.get("include", [])):
        matches = [p.resolve() for p in sorted(project.root.glob(pattern)) if p.is_file()]
        matches = [p for p in matches if p != project.file]
        if not matches:
            line, col = yamlio.locate(settings, ["include", i])
            problems.append(Problem(project.display(project.file), line, col, f"include[{i}]",
                                    f"pattern '{pattern}' matches no file"))
        paths.update(matches)
    return sorted(paths)


# --- turning jsonschema errors into located, readable problems --------------------------------

_TYPE_NAMES = {"string": "a string", "integer": "a whole number", "number": "a number",
               "boolean": "true or false", "object": "a mapping", "array": "a list", "null": "empty"}


def describe_path(data: Any, path: list[Any] | tuple[Any, ...]) -> str:
    """`images[hero].size`: list items of `images` are named by their `name`."""
    out = ""
    node = data
    for step in path:
        if isinstance(step, int):
            label: Any = step
            if isinstance(node, list) and 0 <= step < len(node):
                item = node[step]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    label = item["name"]
            out += f"[{label}]"
        else:
            out += f".{step}" if out else str(step)
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
    return out


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    for t, name in ((str, "text"), (int, "a number"), (float, "a number"), (dict, "a mapping"),
                    (list, "a list")):
        if isinstance(value, t):
            return name
    return "empty" if value is None else type(value).__name__


def _to_problem(display: str, data: Any, err: Any) -> list[Problem]:
    path = list(err.absolute_path)
    where = describe_path(data, path)

    def at(p: list[Any], *, key: bool = False) -> tuple[int, int]:
        return yamlio.locate(data, p, key=key)

    v = err.validator
    if v == "additionalProperties":
        known = list(err.schema.get("properties", {}))
        out = []
        for extra in [k for k in err.instance if k not in known]:
            hint = difflib.get_close_matches(str(extra), known, n=1, cutoff=0.6)
            msg = f"unknown field '{extra}'" + (f" (did you mean '{hint[0]}'?)" if hint else
                                                 f"; known fields: {', '.join(known)}")
            line, col = at(path + [extra], key=True)
            out.append(Problem(display, line, col, where or "(top level)", msg))
        return out
    line, col = at(path)
    if v == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return [Problem(display, line, col, where or "(top level)",
                        f"missing required field '{m}'") for m in missing]
    if v == "enum" and path and path[-1] == "model":
        from imgbuild.spec import catalogue as models

        hint = models.suggest(str(err.instance))
        msg = f"unknown model '{err.instance}'" + (f" (did you mean '{hint}'?)" if hint else "")
        msg += f"; known models: {', '.join(models.MODELS)}"
        return [Problem(display, line, col, where, msg)]
    if v == "enum":
        return [Problem(display, line, col, where, f"'{err.instance}' is not one of: "
                        + ", ".join(map(str, err.validator_value)))]
    if v == "type":
        want = err.validator_value
        want = [want] if isinstance(want, str) else want
        names = " or ".join(_TYPE_NAMES.get(w, w) for w in want)
        return [Problem(display, line, col, where, f"must be {names}, not {_kind_of(err.instance)}"
                        + _quote_hint(path, err.instance, want))]
    if v == "const":
        return [Problem(display, line, col, where, f"must be {json.dumps(err.validator_value)}")]
    if v in ("minimum", "maximum"):
        return [Problem(display, line, col, where, f"{err.instance} is {'below the minimum' if v == 'minimum' else 'above the maximum'} {err.validator_value}")]
    if v == "oneOf" and path and len(path) >= 2 and path[-2] == "matrix":
        return [Problem(display, line, col, where, "must be a non-empty list of values, or the name of a YAML/JSON file holding one")]
    if v == "pattern" and "patternMessage" in err.schema:  # a sentence instead of a regex
        return [Problem(display, line, col, where, f"'{err.instance}' {err.schema['patternMessage']}")]
    if v == "minLength" and err.validator_value == 1:
        return [Problem(display, line, col, where, "must not be empty")]
    return [Problem(display, line, col, where, err.message)]


def _quote_hint(path: Any, value: Any, want: list[str]) -> str:
    """YAML 1.1 reads an unquoted `16:9` as the base-60 number 969: say how to write it."""
    if "string" not in want or not isinstance(value, int) or isinstance(value, bool) or not path:
        return ""
    field = path[-1]
    text = f"{value // 60}:{value % 60}" if field == "size" and value >= 60 else str(value)
    return f' (YAML read it as a number; quote it: {field}: "{text}")'


def schema_text() -> str:
    """The JSON Schema of imgbuild.yaml, as shipped (for `imgbuild schema` and `init`)."""
    from importlib.resources import files

    return files("imgbuild").joinpath("_schemas/imgbuild.schema.json").read_text("utf-8")
