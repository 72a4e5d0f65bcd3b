"""Find and load a project: imgbuild.yaml plus its included spec files, each checked against
the JSON Schema. Every problem of every file is collected before anything fails."""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from imgbuild.errors import Problem, SpecError, UsageError

# spec.yamlio (and PyYAML) is imported by the functions that parse: finding the project file and
# the Project record are on the start-up path of every verb, a no-op `check` included.

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
    # every file whose content shaped the plan: the path as read -> sha256 of the bytes read
    read_files: dict[str, str] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return self.root / self.settings.get("output_dir", "generated")

    @property
    def lock_path(self) -> Path:
        return lock_path_for(self.file)

    @property
    def templates_dir(self) -> Path:
        return self.root / self.settings.get("templates_dir", "templates")

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def display(self, path: Path) -> str:
        return display_path(path)

    @property
    def repo_root(self) -> Path:
        found = self.__dict__.get("_repo_root")
        if found is None:
            found = self.__dict__["_repo_root"] = repository_root(self.root)
        return found

    def readable(self, path: Path) -> bool:
        """May a spec make imgbuild read `path`? Only inside the repository (links resolved):
        a template or data file from ~/.ssh would end up in a prompt, a lock and `plan`."""
        return is_within(path, self.repo_root)


def repository_root(root: Path) -> Path:
    """The nearest folder at or above `root` holding `.git`, else `root` itself (resolved)."""
    start = root.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def is_within(path: Path, folder: Path) -> bool:
    """`path`, with every link resolved, is `folder` or below it (`folder` already resolved)."""
    resolved = Path(os.path.realpath(path))
    return resolved == folder or folder in resolved.parents


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def lock_path_for(project_file: Path) -> Path:
    """imgbuild.yaml -> imgbuild.lock; another project file (b.yaml) -> b.lock beside it: each
    project file owns its lock, so two in one folder never prune each other's entries."""
    if project_file.name == PROJECT_FILE:
        return project_file.with_name(LOCK_FILE)
    return project_file.with_suffix(".lock")


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
    if path.suffix == ".lock":
        raise UsageError(f"{display_path(path)}: a lockfile, not a project file (its lock would "
                         "be itself); name the project file NAME.yaml")
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


def load_project(path: Path, defer: bool = False) -> Project:
    """The project file, checked, and its included spec files. With `defer`, an included file
    is only listed (its `data` None) when the project file is sound: the expansion reads and
    checks each in turn and lets it go (spec/expand.py), so that a build does not hold the
    documents of every spec file at once."""
    problems: list[Problem] = []
    read: dict[str, str] = {}
    main = load_document(path, "project", problems, read)
    if main is None:
        raise SpecError(problems)
    project = Project(file=path, root=path.parent, settings=main.data, files=[main], read_files=read)
    _check_folders(project, problems)
    includes = _included_paths(project, problems)
    if defer and not problems:
        project.files.extend(SpecFile(inc, display_path(inc), None) for inc in includes)
        return project
    for inc in includes:
        spec = load_document(inc, "specfile", problems, read)
        if spec is not None:
            project.files.append(spec)
    if problems:
        raise SpecError(problems)
    return project


def load_document(path: Path, kind: str, problems: list[Problem],
                  read: dict[str, str]) -> SpecFile | None:
    """The file's document if it is YAML that fits the schema of `kind`; else None, and what
    is wrong with it in `problems`. The sha256 of its bytes goes in `read`."""
    from imgbuild.spec import schemagate, yamlio

    display = display_path(path)
    try:
        data = yamlio.load_file(path, display, read)
    except yamlio.YamlError as e:
        problems.append(Problem(display, e.mark[0], e.mark[1], "", e.message, e.hint))
        return None
    if data is None:
        data = yamlio.LocDict()
    if not isinstance(data, dict):
        problems.append(Problem(display, 1, 1, "", "the file must hold a mapping (key: value pairs)"))
        return None
    if schemagate.fits(kind, data):  # most documents: jsonschema is not even imported
        return SpecFile(path, display, data)
    found = [_to_problem(display, data, err) for err in _validator(kind).iter_errors(data)]
    problems.extend(p for group in found for p in group)
    return SpecFile(path, display, data) if not found else None


def include_matches(root: Path, settings: Any, *, resolve: bool = True) -> list[str]:
    """Every file the include globs match now, sorted: what the plan cache and the no-op
    snapshot record, so that a spec file added or removed is noticed. A list compared only with
    another made the same way may skip resolving (a few lstat calls per file)."""
    matched: set[str] = set()
    for pattern in settings.get("include", []) or []:
        found = (p for p in root.glob(pattern) if p.is_file())
        matched.update(str(p.resolve()) if resolve else str(p) for p in found)
    return sorted(matched)


def _included_paths(project: Project, problems: list[Problem]) -> list[Path]:
    from imgbuild.spec import yamlio

    settings = project.settings
    paths: set[Path] = set()
    for i, pattern in enumerate(settings.get("include", [])):
        line, col = yamlio.locate(settings, ["include", i])

        def problem(message: str) -> None:
            problems.append(Problem(project.display(project.file), line, col, f"include[{i}]", message))

        if "\0" in pattern or PurePosixPath(pattern).is_absolute() or PureWindowsPath(pattern).is_absolute():
            problem(f"pattern '{pattern}' must be relative to the project file's folder")
            continue
        found = [p.resolve() for p in sorted(project.root.glob(pattern)) if p.is_file()]
        outside = [p for p in found if not project.readable(p)]
        matches = [p for p in found if p != project.file and project.readable(p)]
        if outside:
            problem(f"pattern '{pattern}' matches {display_path(outside[0])}, outside the repository "
                    f"({display_path(project.repo_root)}); imgbuild reads nothing outside it")
        elif not matches:
            problem(f"pattern '{pattern}' matches no file")
        paths.update(matches)
    return sorted(paths)


def _check_folders(project: Project, problems: list[Problem]) -> None:
    """output_dir is written (and cleaned): a folder strictly inside the project, holding
    neither the project file nor a git repository. templates_dir is read: inside the repository."""
    from imgbuild.spec import yamlio

    settings = project.settings
    display = project.display(project.file)
    for name, default in (("output_dir", "generated"), ("templates_dir", "templates")):
        text = settings.get(name, default)
        why = folder_problem(project, name, text) if isinstance(text, str) else None
        if why:
            line, col = yamlio.locate(settings, [name])
            problems.append(Problem(display, line, col, name, why))


def folder_problem(project: Project, name: str, text: str) -> str | None:
    if any(ord(c) < 32 for c in text):
        return "must not contain control characters"
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith("~"):
        return f"'{text}' must be a path relative to {project.file.name}'s folder"
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if name == "templates_dir":
        if not project.readable(project.root / text):
            return f"'{text}' is outside the repository ({display_path(project.repo_root)})"
        return None
    if ".." in parts or not parts or parts == (".",):
        return f"'{text}' must be a folder inside the project (not its root, nor above it)"
    if ".git" in parts or STATE_DIR in parts:
        return f"'{text}' must not be inside {'.git' if '.git' in parts else STATE_DIR}/"
    folder = project.root / text
    root = project.root.resolve()
    resolved = Path(os.path.realpath(folder))
    if root not in resolved.parents:
        return f"'{text}' resolves to {display_path(resolved)}, which is not inside the project (a symlink?)"
    if is_within(project.file, resolved):
        return f"'{text}' holds the project file"
    if (folder / ".git").exists():
        return f"'{text}' holds a git repository (.git)"
    return None


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
    from imgbuild.spec import yamlio

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
