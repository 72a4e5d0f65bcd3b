"""What build, pull and push share about the remote cache: opening it from the project's
settings (importing obstore only then), saying each problem once, and the closing line
`remote: N hits, N uploaded, N already there, N errors` that every run using a remote prints,
so a misconfigured remote never fails silently while the build stays green."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imgbuild.errors import EXIT_FAILED, ImgbuildError
from imgbuild.report import Reporter
from imgbuild.store.remote import UNREACHABLE, DENIED, Fault, Remote, RemoteConfig, RemoteError, configure


@dataclass
class Link:
    config: RemoteConfig
    remote: Remote | None  # None when it could not even be opened (no credentials)
    opening: Fault | None = None
    reported: int = 0  # faults already shown
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return (self.remote.stats.errors if self.remote else 0) + (1 if self.opening else 0)

    def faults(self) -> list[Fault]:
        return ([self.opening] if self.opening else []) + (list(self.remote.stats.faults) if self.remote else [])

    def say_new_faults(self, reporter: Reporter, what: dict[str, str] | None = None) -> None:
        """Each new problem once, by object name; `what` maps an object path to what falls
        back (e.g. 'hero is generated instead')."""
        faults = self.faults()
        for fault in faults[self.reported:]:
            if fault.kind in (UNREACHABLE, DENIED):
                reporter.notice(f"remote {self.config.url}: {fault}; going on with the local cache only")
            else:
                then = (what or {}).get(fault.path)
                reporter.notice(f"remote {self.config.url}/{fault}" + (f"; {then}" if then else ""))
        self.reported = len(faults)

    def summary(self) -> dict[str, Any]:
        stats = self.remote.stats if self.remote else None
        return {"url": self.config.url, "read_only": self.config.read_only,
                "hits": stats.hits if stats else 0, "uploaded": stats.uploaded if stats else 0,
                "already_there": stats.already_there if stats else 0, "errors": self.errors,
                "skipped": stats.skipped if stats else 0,
                "faults": [{"kind": f.kind, "path": f.path, "detail": f.detail} for f in self.faults()]}

    def line(self) -> str:
        s = self.summary()
        text = (f"remote: {s['hits']} hits, {s['uploaded']} uploaded, {s['already_there']} already there, "
                f"{s['errors']} error{'s' if s['errors'] != 1 else ''}")
        if self.config.read_only:
            text += " (read-only: uploads skipped)"
        elif self.remote is not None and self.remote.writes_denied is not None:
            text += " (writes denied: uploads skipped)"
        if self.remote is not None and self.remote.down is not None:
            text += f"; the store was unreachable, {s['skipped']} lookup(s) skipped"
        return text + "".join(f"; {n}" for n in self.notes)

    def exit_code(self, code: int, required: bool) -> int:
        """--remote-required: any remote error fails the run (CI), whatever else happened."""
        return EXIT_FAILED if required and self.errors and code == 0 else code


def open_link(settings: Any, reporter: Reporter, *, required: bool = False) -> Link | None:
    """The project's remote, or None when it has none (then obstore is never imported)."""
    config = configure(settings)
    if config is None:
        if required:
            raise ImgbuildError("--remote-required, but no remote is configured "
                                "(set remote.url in imgbuild.yaml, or IMGBUILD_REMOTE)")
        return None
    try:
        return Link(config, Remote(config))
    except RemoteError as e:
        link = Link(config, None, e.fault)
        link.say_new_faults(reporter)
        return link


def fetch_for(link: Link | None, steps: Any, lock: Any, cache: Any, reporter: Reporter, *,
              then: str) -> int:
    """Bring into the local cache what the steps would otherwise pay for (or cannot restore);
    returns how many targets came from the remote. `then` says what a refused target does."""
    if link is None or link.remote is None or link.remote.down is not None:
        return 0
    from imgbuild.run import transfer

    wants = [w for w in transfer.wants_for(steps, lock) if link.config.uploads(w.provider)]
    if not wants:
        return 0
    got = transfer.fetch(link.remote, wants, cache)
    link.say_new_faults(reporter, {f.path: f"{w.target.name} {then}" for w, f in got.refused})
    return len(got.restored)
