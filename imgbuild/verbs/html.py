"""`imgbuild html NAME`: the `<picture>` markup of one image, from the manifest the last build
wrote."""
from __future__ import annotations

from imgbuild.errors import UsageError
from imgbuild.verbs.common import Where, load
from imgbuild.verbs.results import DataResult


def html(where: Where, *, name: str, sizes: str, base_url: str, css_class: str | None) -> DataResult:
    import json

    from imgbuild.store import manifest

    project, targets = load(where)
    manifest_name = manifest.wanted(project.settings, targets)
    if manifest_name is None:
        raise UsageError("this project writes no manifest: give images `formats`/`widths` (or `alt`), "
                         "or set `manifest: manifest.json`")
    path = project.output_dir / manifest_name
    try:
        images = json.loads(path.read_bytes())["images"]
    except (OSError, ValueError, KeyError):
        raise UsageError(f"{path}: no readable manifest; run `imgbuild build` first") from None
    if name not in images:
        import difflib

        hint = difflib.get_close_matches(name, list(images), n=1)
        raise UsageError(f"no image named '{name}' in {manifest_name}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    markup = manifest.picture(images[name], sizes=sizes, base_url=base_url, css_class=css_class)
    return DataResult("html", {"name": name, "html": markup})
