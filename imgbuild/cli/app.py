"""Command line: parse options, call one verb (`imgbuild.verbs`), hand its result to `report`,
and return the exit code the result carries.

`imgbuild.cli` answers `--version` and the top-level `--help` before this module (and click) is
imported; here only click is imported at start-up, and every heavier module by the command that
uses it, so `imgbuild check` starts fast.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from imgbuild._version import __version__
from imgbuild.cli.reporting import isatty
from imgbuild.cli.reporting import run_verb as _run

EXIT_CODES = """\b
Exit codes:
  0    success; nothing stale
  1    some targets failed (build) or are stale/missing/modified/drafts (check)
  2    usage error or invalid spec (every problem is listed as file:line:col)
  3    internal error (the traceback is written to a log file, whose path is printed)
  130  interrupted (Ctrl-C); finished images are kept and recorded in the lock"""


def _project_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-f", "--file", "project_file", metavar="FILE",
                     help="Project file to use instead of imgbuild.yaml.")(f)
    f = click.option("-C", "--directory", metavar="DIR",
                     help="Run as if started in DIR.")(f)
    return f


def _output_options(f: Callable[..., Any], *, streams: bool = False) -> Callable[..., Any]:
    f = click.option("-q", "--quiet", count=True, help="Print less (only failures).")(f)
    f = click.option("-v", "--verbose", count=True, help="Print more (reasons, debug logging with -vv).")(f)
    f = click.option("--json", "json_mode", is_flag=True,
                     help="JSON for scripts: one summary object, the last line of stdout"
                          + (" (after one state-change object per line while images are made)."
                             if streams else "."))(f)
    return f


def _streaming_output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    return _output_options(f, streams=True)


def _complete_targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion: the project's target names (`-C`/`-f` when already typed)."""
    try:
        from imgbuild.verbs.common import load

        _, targets = load(_where(ctx.params.get("directory"), ctx.params.get("project_file")))
    except Exception:  # noqa: BLE001 - a broken project completes nothing rather than a traceback
        return []
    return [click.shell_completion.CompletionItem(t.name) for t in targets if t.name.startswith(incomplete)]


def _where(directory: str | None, project_file: str | None) -> Any:
    from imgbuild.verbs.common import Where

    return Where(directory, project_file)


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="imgbuild")
def cli() -> None:
    """make for AI-generated images: build the images declared in imgbuild.yaml, generating
    only what is new or changed, through Alibaba Cloud Model Studio (Qwen-Image, Wan) or an
    offline placeholder."""


def _build_options(f: Callable[..., Any], *, runs: bool = True) -> Callable[..., Any]:
    f = click.option("--max-images", type=click.IntRange(0), metavar="N",
                     help="Refuse to start if more than N images would be generated.")(f)
    f = click.option("--budget", type=click.FloatRange(0), metavar="AMOUNT",
                     help="Refuse to start if the images to generate would cost more (CNY, region prices).")(f)
    f = click.option("--force", is_flag=True,
                     help="Rewrite selected outputs even if up to date (from the cache when possible).")(f)
    f = click.option("--provider", type=click.Choice(["auto", "dashscope", "placeholder"]),
                     help="Who makes the pixels (default: IMGBUILD_PROVIDER, the project's provider, else auto).")(f)
    if runs:  # plan runs nothing: no -k to offer
        f = click.option("-k", "--keep-going", is_flag=True, help="Go on with other targets after a failure.")(f)
    f = click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
                     help="Targets worked on at once (default: 4; with DashScope, enough that the "
                          "per-model rate and concurrency limits bind, up to 64).")(f)
    f = click.argument("targets", nargs=-1, metavar="[TARGET_GLOB]...", shell_complete=_complete_targets)(f)
    return f


def _plan_options(f: Callable[..., Any]) -> Callable[..., Any]:
    return _build_options(f, runs=False)


_REMOTE_REQUIRED = click.option(
    "--remote-required", is_flag=True,
    help="Exit 1 on any error of the remote cache (default: say so and go on locally). For CI.")


@cli.command(epilog=EXIT_CODES)
@_build_options
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be done (same as `imgbuild plan`).")
@click.option("--no-wait", is_flag=True,
              help="If another imgbuild build is running in this project, exit 1 at once instead of waiting.")
@click.option("--shard", metavar="I/N",
              help="Build only shard I of N (1-based; by generation key), e.g. one of N CI jobs "
                   "that share a remote cache.")
@click.option("--candidates", type=click.IntRange(1, 8), metavar="K",
              help="For this run, generate K candidates of each target with n: 1 and wait for `imgbuild accept`.")
@_REMOTE_REQUIRED
@_project_options
@_streaming_output_options
def build(targets: tuple[str, ...], jobs: int | None, keep_going: bool, provider: str | None, force: bool,
          budget: float | None, max_images: int | None, dry_run: bool, no_wait: bool, shard: str | None,
          candidates: int | None, remote_required: bool, directory: str | None, project_file: str | None,
          json_mode: bool,
          verbose: int, quiet: int) -> int:
    """Generate every image that is new or changed; restore from the cache (local, then the
    remote) what was paid for.

    TARGET_GLOB selects targets by name or output path (e.g. 'hero*' 'products/*.png')."""
    from imgbuild.verbs.build import BuildOptions, build as run

    where = _where(directory, project_file)
    options = BuildOptions(patterns=targets, jobs=jobs, dry_run=dry_run, keep_going=keep_going,
                           provider=provider, force=force, budget=budget, max_images=max_images,
                           no_wait=no_wait, shard=shard, remote_required=remote_required,
                           candidates=candidates)
    return _run("plan" if dry_run else "build", (json_mode, verbose, quiet),
                lambda sink: run(where, sink, options), where)


@cli.command(epilog=EXIT_CODES)
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None, help="Outputs written at once.")
@click.option("--no-wait", is_flag=True,
              help="If another imgbuild build is running in this project, exit 1 at once instead of waiting.")
@_REMOTE_REQUIRED
@_project_options
@_output_options
def pull(jobs: int | None, no_wait: bool, remote_required: bool, directory: str | None,
         project_file: str | None, json_mode: bool, verbose: int, quiet: int) -> int:
    """Restore every output the lock names from the local cache or the remote, and derive
    what is missing. Needs no API key and never calls the provider."""
    from imgbuild.verbs.pull import pull as run

    where = _where(directory, project_file)
    return _run("pull", (json_mode, verbose, quiet),
                lambda sink: run(where, sink, jobs=jobs, no_wait=no_wait, remote_required=remote_required),
                where)


@cli.command(epilog=EXIT_CODES)
@_project_options
@_output_options
def push(directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
         quiet: int) -> int:
    """Upload to the remote the originals the lock references that it lacks (from the local
    cache). Exit 1 on any remote error."""
    from imgbuild.verbs.push import push as run

    where = _where(directory, project_file)
    return _run("push", (json_mode, verbose, quiet), lambda sink: run(where, sink), where)


@cli.command(epilog=EXIT_CODES)
@_plan_options
@_project_options
@_output_options
def plan(targets: tuple[str, ...], jobs: int | None, provider: str | None, force: bool,
         budget: float | None, max_images: int | None, directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
         quiet: int) -> int:
    """Show each target's state and why (= build --dry-run). -v also lists up-to-date ones."""
    from imgbuild.verbs.build import BuildOptions
    from imgbuild.verbs.plan import plan as run

    where = _where(directory, project_file)
    options = BuildOptions(patterns=targets, jobs=jobs, provider=provider,
                           force=force, budget=budget, max_images=max_images)
    return _run("plan", (json_mode, verbose, quiet), lambda sink: run(where, sink, options), where)


@cli.command(epilog=EXIT_CODES)
@_build_options
@_project_options
@_streaming_output_options
def watch(targets: tuple[str, ...], jobs: int | None, keep_going: bool, provider: str | None, force: bool,
          budget: float | None, max_images: int | None, directory: str | None, project_file: str | None,
          json_mode: bool, verbose: int, quiet: int) -> int:
    """Build, then rebuild whenever imgbuild.yaml, a spec file, a prompt template or a matrix
    data file changes, until Ctrl-C. Run it beside a dev server: `imgbuild watch & hugo server`."""
    from imgbuild.verbs.build import BuildOptions
    from imgbuild.verbs.watch import watch as run

    where = _where(directory, project_file)
    options = BuildOptions(patterns=targets, jobs=jobs, keep_going=keep_going, provider=provider,
                           force=force, budget=budget, max_images=max_images)
    return _run("watch", (json_mode, verbose, quiet), lambda sink: run(where, sink, options), where)


@cli.command(epilog=EXIT_CODES)
@click.argument("targets", nargs=-1, metavar="[TARGET_GLOB]...")
@click.option("--pick", type=click.IntRange(1, 8), metavar="N", help="Accept candidate N (1-based).")
@click.option("--digest", metavar="PREFIX", help="Accept the candidate whose sha256 starts with PREFIX.")
@click.option("--all-first", is_flag=True, help="Accept candidate 1 of every pending target (for scripts).")
@_project_options
@_output_options
def accept(targets: tuple[str, ...], pick: int | None, digest: str | None, all_first: bool,
           directory: str | None, project_file: str | None, json_mode: bool, verbose: int, quiet: int) -> int:
    """Pin one candidate of each pending TARGET and write its output from the cache (no provider
    call). Without --pick/--digest, list the candidates and the command to accept each."""
    from imgbuild.verbs.accept import Choice, accept as run

    if sum(x is not None and x is not False for x in (pick, digest, all_first)) > 1:
        raise click.UsageError("give one of --pick, --digest, --all-first")
    if not targets and not all_first:
        raise click.UsageError("name the TARGETs to accept, or pass --all-first")
    where = _where(directory, project_file)
    choice = Choice(pick, digest, all_first)
    code = _run("accept", (json_mode, verbose, quiet), lambda sink: run(where, sink, targets, choice), where)
    if code == 2 and choice == Choice() and len(targets) == 1 and not json_mode and isatty(sys.stdin):
        # a person at a terminal: the candidates were just listed, ask which one
        number = click.prompt("accept candidate number (Ctrl-C to leave it pending)", type=click.IntRange(1, 8))
        choice = Choice(pick=number)
        code = _run("accept", (json_mode, verbose, quiet), lambda sink: run(where, sink, targets, choice), where)
    return code


@cli.command(epilog=EXIT_CODES)
@click.argument("targets", nargs=-1, required=True, metavar="TARGET_GLOB...")
@_project_options
@_output_options
def reject(targets: tuple[str, ...], directory: str | None, project_file: str | None, json_mode: bool,
           verbose: int, quiet: int) -> int:
    """Forget the candidates (or the accepted pick) of TARGET: the next build makes new ones,
    with seeds never asked for before."""
    from imgbuild.verbs.accept import reject as run

    where = _where(directory, project_file)
    return _run("reject", (json_mode, verbose, quiet), lambda sink: run(where, sink, targets), where)


@cli.command(epilog=EXIT_CODES)
@click.option("--allow-drafts", is_flag=True, help="Accept placeholder drafts as up to date.")
@_project_options
@_output_options
def check(allow_drafts: bool, directory: str | None, project_file: str | None, json_mode: bool,
          verbose: int, quiet: int) -> int:
    """Exit 1 if any output is stale, missing, modified or a draft. Offline; needs no API key."""
    from imgbuild.verbs.check import check as run

    where = _where(directory, project_file)
    return _run("check", (json_mode, verbose, quiet), lambda sink: run(where, allow_drafts=allow_drafts, rows=json_mode), where)


@cli.command(epilog=EXIT_CODES)
@click.argument("patterns", nargs=-1)
@click.option("--dot", is_flag=True, help="Graphviz DOT on stdout (e.g. | dot -Tsvg > graph.svg).")
@_project_options
@_output_options
def graph(patterns: tuple[str, ...], dot: bool, directory: str | None, project_file: str | None,
          json_mode: bool, verbose: int, quiet: int) -> int:
    """Show which targets read which images (`inputs:`): a tree, --dot or --json. Offline."""
    from imgbuild.verbs.graph import graph_of

    where = _where(directory, project_file)
    return _run("graph", (json_mode, verbose, quiet),
                lambda sink: graph_of(where, patterns, style="dot" if dot else "text"), where)


@cli.command(epilog=EXIT_CODES)
@_project_options
@_output_options
def validate(directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
             quiet: int) -> int:
    """Check the specs against the schema and the model rules; generate nothing."""
    from imgbuild.verbs.validate import validate as run

    where = _where(directory, project_file)
    return _run("validate", (json_mode, verbose, quiet), lambda sink: run(where), where)


@cli.command(epilog=EXIT_CODES)
@click.option("--yes", is_flag=True, help="Really delete (default: only list).")
@click.option("--no-wait", is_flag=True,
              help="If another imgbuild build is running in this project, exit 1 at once instead of waiting.")
@_project_options
@_output_options
def clean(yes: bool, no_wait: bool, directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
          quiet: int) -> int:
    """List files under output_dir that no spec produces, and lock entries without a spec."""
    from imgbuild.verbs.clean import clean as run

    where = _where(directory, project_file)
    return _run("clean", (json_mode, verbose, quiet), lambda sink: run(where, sink, yes=yes, no_wait=no_wait), where)


@cli.command()
@click.argument("name", shell_complete=_complete_targets)
@click.option("--sizes", default="100vw", show_default=True, help="The sizes attribute of the sources.")
@click.option("--base-url", default="", metavar="URL",
              help="Prefix for paths in src/srcset (paths are relative to output_dir), e.g. /assets/generated/.")
@click.option("--class", "css_class", metavar="CLASS", help="class attribute of the <img>.")
@_project_options
@_output_options
def html(name: str, sizes: str, base_url: str, css_class: str | None, directory: str | None,
         project_file: str | None, json_mode: bool, verbose: int, quiet: int) -> int:
    """Print a <picture> for image NAME from the manifest: a <source> per format with srcset and
    sizes, and an <img> with width, height, alt, loading="lazy" and decoding="async"."""
    from imgbuild.verbs.html import html as run

    where = _where(directory, project_file)
    return _run("html", (json_mode, verbose, quiet),
                lambda sink: run(where, name=name, sizes=sizes, base_url=base_url, css_class=css_class), where)


@cli.command(epilog=EXIT_CODES)
@click.option("--base", metavar="REF",
              help="Git revision to compare with (default: the merge base with the default branch, else HEAD).")
@click.option("-o", "--output", "out_dir", metavar="DIR", help="Write the report here (default: .imgbuild/review/).")
@click.option("--markdown", metavar="FILE", help="Also write a summary for a pull-request comment.")
@click.option("--report-url", metavar="URL",
              help="Where the report will be published; the summary links there (default: a relative path).")
@click.option("--open", "open_browser", is_flag=True, help="Open the report in a web browser.")
@_project_options
@_output_options
def review(base: str | None, out_dir: str | None, markdown: str | None, report_url: str | None,
           open_browser: bool, directory: str | None, project_file: str | None, json_mode: bool,
           verbose: int, quiet: int) -> int:
    """Show what changed in the images, before and after, as a static page (index.html, thumbnails,
    review.json). Offline: no key, no provider call."""
    from imgbuild.verbs.review import ReviewOptions, review as run

    where = _where(directory, project_file)
    options = ReviewOptions(base=base, out_dir=out_dir, markdown=markdown, report_url=report_url,
                            open_browser=open_browser)
    return _run("review", (json_mode, verbose, quiet), lambda sink: run(where, sink, options), where)


@cli.command()
def schema() -> int:
    """Print the JSON Schema of imgbuild.yaml."""
    from imgbuild.spec.project import schema_text

    click.echo(schema_text(), nl=False)
    return 0


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--api-key", metavar="KEY", help="Accept only this key (default: any non-empty key).")
@click.option("--config", "config_path", metavar="FAULTS.yaml", type=click.Path(exists=True, dir_okay=False),
              help="Fault injection and limits (see docs).")
def emulator(host: str, port: int, api_key: str | None, config_path: str | None) -> int:
    """Run a local DashScope-compatible server (for offline work and tests)."""
    from imgbuild.emulator import serve

    return serve(host, port, api_key, config_path)



@cli.command()
@click.option("-C", "--directory", metavar="DIR", help="Create the project in DIR (made if missing).")
@_output_options
def init(directory: str | None, json_mode: bool, verbose: int, quiet: int) -> int:
    """Write a starter imgbuild.yaml (never overwriting one) and add .imgbuild/ to .gitignore."""
    from imgbuild.verbs import init as scaffold

    return _run("init", (json_mode, verbose, quiet), lambda sink: scaffold.init(_where(directory, None)))


@cli.group()
def cache() -> None:
    """Inspect, verify and prune the cache of paid originals (shared by projects on this machine)."""


@cache.command("info")
@_project_options
@_output_options
def cache_info(directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
               quiet: int) -> int:
    """Show the cache folder, its generation entries, blobs and size."""
    from imgbuild.verbs import cache as cachecmd

    return _run("cache info", (json_mode, verbose, quiet), lambda sink: cachecmd.info(_where(directory, project_file)))


@cache.command("verify")
@click.option("--yes", is_flag=True, help="Remove what is damaged (default: only report).")
@_project_options
@_output_options
def cache_verify(yes: bool, directory: str | None, project_file: str | None, json_mode: bool,
                 verbose: int, quiet: int) -> int:
    """Re-hash every stored image; exit 1 if any is damaged (--yes removes those)."""
    from imgbuild.verbs import cache as cachecmd

    return _run("cache verify", (json_mode, verbose, quiet),
                lambda sink: cachecmd.verify(_where(directory, project_file), yes=yes, on_wait=sink.notice))


@cache.command("prune")
@click.option("--keep-lock", "keep_locks", metavar="PATH", multiple=True,
              help="Keep every entry this lockfile references (repeatable; default: this project's imgbuild.lock).")
@click.option("--keep-unpicked-days", "days", metavar="DAYS", type=click.IntRange(min=0), default=None,
              help="Keep candidates that were not picked (or were rejected) this many days after the "
                   "pick (default: the project's keep_unpicked_days, else 30).")
@click.option("--yes", is_flag=True, help="Really delete (default: only list).")
@_project_options
@_output_options
def cache_prune(keep_locks: tuple[str, ...], days: int | None, yes: bool, directory: str | None,
                project_file: str | None, json_mode: bool, verbose: int, quiet: int) -> int:
    """Delete entries no given lockfile references, and blobs no remaining entry uses; candidates
    not picked are kept for a while after the pick."""
    from imgbuild.verbs import cache as cachecmd

    return _run("cache prune", (json_mode, verbose, quiet),
                lambda sink: cachecmd.prune(_where(directory, project_file), keep_locks=keep_locks, yes=yes,
                                            days=days, on_wait=sink.notice))


def main(argv: list[str] | None = None) -> int:
    from imgbuild.errors import EXIT_INTERRUPTED, EXIT_USAGE

    try:
        code = cli.main(args=argv, prog_name="imgbuild", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort:
        click.echo("imgbuild: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE if e.exit_code == 2 else e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except BrokenPipeError:
        return 0


def render_top_help() -> str:
    """What `imgbuild --help` prints at a terminal of 80 columns or more (click's widest), as
    stored in cli/helptext.py for the fast path."""
    with click.Context(cli, info_name="imgbuild", terminal_width=78, **cli.context_settings) as ctx:
        return ctx.get_help() + "\n"


HELP_MODULE = '''"""The top-level `imgbuild --help`, rendered ahead of time from the click group (at 80 columns)
so that `imgbuild.cli` answers it without importing click. Generated; after changing a command,
its help, or the group's options, regenerate it with
    python -c "from imgbuild.cli.app import write_help_module; write_help_module()"
(tests/test_cli_startup.py fails until it is).
"""
TOP_HELP = """\\
{text}"""
'''


def write_help_module() -> None:
    from pathlib import Path

    text = render_top_help()
    if "\\" in text or '"""' in text:
        raise ValueError("the help text needs escaping before it can be stored as a literal")
    (Path(__file__).parent / "helptext.py").write_text(HELP_MODULE.format(text=text), encoding="utf-8")
