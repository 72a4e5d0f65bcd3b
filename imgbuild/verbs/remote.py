"""What build, pull and push share about working as a team: the remote cache (opened from the
project's settings, importing obstore only then; each problem said once; a RemoteSummary for
the closing line `remote: N hits, N uploaded, N already there, N errors` that every run using a
remote prints, so a misconfigured remote never fails silently) and `build --shard I/N`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from imgbuild.errors import ImgbuildError
from imgbuild.store.remote import (
    DENIED,
    REMOTE_ENV,
    UNREACHABLE,
    Fault,
    Remote,
    RemoteConfig,
    RemoteError,
    configure,
)
from imgbuild.verbs.results import RemoteSummary


@dataclass
class Link:
    config: RemoteConfig
    remote: Remote | None  # None when it could not even be opened (no credentials)
    opening: Fault | None = None
    required: bool = False
    reported: int = 0  # faults already said

    def faults(self) -> list[Fault]:
        return ([self.opening] if self.opening else []) + (list(self.remote.stats.faults) if self.remote else [])

    def say_new_faults(self, sink: Any, then: dict[str, str] | None = None) -> None:
        """Each new problem once, by object name; `then` maps an object path to what its
        target does instead (e.g. 'hero falls back to the next source')."""
        faults = self.faults()
        for fault in faults[self.reported:]:
            if fault.kind in (UNREACHABLE, DENIED):
                sink.notice(f"remote {self.config.url}: {fault}; going on with the local cache only")
            else:
                after = (then or {}).get(fault.path)
                sink.notice(f"remote {self.config.url}/{fault}" + (f"; {after}" if after else ""))
        self.reported = len(faults)

    def summary(self) -> RemoteSummary:
        r = self.remote
        faults = [{"kind": f.kind, "path": f.path, "detail": f.detail} for f in self.faults()]
        if r is None:
            return RemoteSummary(self.config.url, self.config.read_only, errors=len(faults),
                                 faults=faults, required=self.required)
        s = r.stats
        return RemoteSummary(self.config.url, self.config.read_only, hits=s.hits, uploaded=s.uploaded,
                             already_there=s.already_there, errors=s.errors, skipped=s.skipped,
                             writes_denied=r.writes_denied is not None, unreachable=r.down is not None,
                             faults=faults, required=self.required)


def configured(settings: Any) -> bool:
    """Cheap: whether a run needs the remote stack at all (most projects: no)."""
    return bool(settings.get("remote") or os.environ.get(REMOTE_ENV))


def open_link(settings: Any, sink: Any, *, required: bool = False) -> Link | None:
    """The project's remote, or None when it has none (then obstore is never imported)."""
    config = configure(settings)
    if config is None:
        if required:
            raise ImgbuildError("--remote-required, but no remote is configured "
                                "(set remote.url in imgbuild.yaml, or IMGBUILD_REMOTE)")
        return None
    try:
        return Link(config, Remote(config), required=required)
    except RemoteError as e:
        link = Link(config, None, e.fault, required=required)
        link.say_new_faults(sink)
        return link


def fetch_for(link: Link | None, steps: Any, lock: Any, cache: Any, sink: Any, *, then: str) -> int:
    """Bring into the local cache what the steps would otherwise pay for (or cannot restore);
    returns how many targets came from the remote. `then` says what a refused target does."""
    if link is None or link.remote is None or link.remote.down is not None:
        return 0
    from imgbuild.run import transfer

    wants = [w for w in transfer.wants_for(steps, lock) if link.config.uploads(w.provider)]
    if not wants:
        return 0
    got = transfer.fetch(link.remote, wants, cache)
    link.say_new_faults(sink, {f.path: f"{w.target.name} {then}" for w, f in got.refused})
    return len(got.restored)


def write_through(link: Link | None, provider: str) -> Any:
    """The executor's callback that uploads each newly paid original of this provider before
    its target counts as built; None without a usable remote."""
    if link is None or link.remote is None:
        return None
    from imgbuild.run.transfer import upload_hook

    return upload_hook(link.remote, link.config, provider)


# --- build --shard I/N ---------------------------------------------------------------------------

def shard_targets(targets: list[Any], identity: str, shard: str) -> list[Any]:
    """The targets whose generation key falls in shard I of N."""
    from imgbuild.plan import shards
    from imgbuild.plan.states import generation_key

    index, total = shards.parse(shard)
    return [t for t in targets if shards.owns(generation_key(identity, t.request), index, total)]


def write_fragment(project: Any, lock: Any, targets: list[Any], shard: str) -> None:
    """The lock entries this shard built, in .imgbuild/ (for CI artifacts and debugging): the
    assembling build needs only the remote, whose records hold the same facts."""
    from imgbuild.store import lockfile

    mine = {o for t in targets for o in (*t.outputs, *(v.output for v in t.variants))}
    fragment = lockfile.Lock({o: e for o, e in lock.outputs.items() if o in mine})
    name = "lock-shard-" + shard.replace(" ", "").replace("/", "-of-") + ".json"
    lockfile.write(project.state_dir / name, fragment)
