"""`imgbuild validate`: the specs against the schema and the model rules, never from a cache.
Spec problems are the result here, not an error: every one is listed, located."""
from __future__ import annotations

from imgbuild.errors import SpecError
from imgbuild.spec.project import find_project_file, load_project
from imgbuild.verbs.common import Where
from imgbuild.verbs.results import ValidateResult


def validate(where: Where) -> ValidateResult:
    from imgbuild.spec.expand import expand

    path = find_project_file(where.directory, where.file)
    try:
        project = load_project(path)
        targets = expand(project)
    except SpecError as e:
        return ValidateResult(files=0, targets=0, problems=e.problems)
    return ValidateResult(files=len(project.files), targets=len(targets))
