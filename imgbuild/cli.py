"""Command line: parse options, call one function of `commands`, map errors to exit codes.

Only click is imported at start-up; every heavier module is imported by the command that uses
it, so `imgbuild --version` and `imgbuild check` start fast.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from imgbuild._version import __version__

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


def _output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-q", "--quiet", count=True, help="Print less (only failures).")(f)
    f = click.option("-v", "--verbose", count=True, help="Print more (reasons, debug logging with -vv).")(f)
    f = click.option("--json", "json_mode", is_flag=True,
                     help="JSON for scripts: one summary object, the last line of stdout "
                          "(build streams one state-change object per line before it).")(f)
    return f


def _reporter(json_mode: bool, verbose: int, quiet: int) -> Any:
    from imgbuild.report import Reporter

    if verbose > 1:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    import os

    # The live status line only where someone watches it: stderr is a terminal, not --json/-q.
    live = (not json_mode and verbose - quiet >= 0 and os.environ.get("TERM") != "dumb"
            and _isatty(sys.stderr))
    return Reporter(json_mode=json_mode, verbosity=verbose - quiet, live=live)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _where(directory: str | None, project_file: str | None) -> Any:
    from imgbuild.commands import Where

    return Where(directory, project_file)


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="imgbuild")
def cli() -> None:
    """make for AI-generated images: build the images declared in imgbuild.yaml, generating
    only what is new or changed, through Alibaba Cloud Model Studio (Qwen-Image, Wan) or an
    offline placeholder."""


def _build_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--max-images", type=click.IntRange(0), metavar="N",
                     help="Refuse to start if more than N images would be generated.")(f)
    f = click.option("--budget", type=click.FloatRange(0), metavar="AMOUNT",
                     help="Refuse to start if the images to generate would cost more (CNY, region prices).")(f)
    f = click.option("--force", is_flag=True,
                     help="Rewrite selected outputs even if up to date (from the cache when possible).")(f)
    f = click.option("--provider", type=click.Choice(["auto", "dashscope", "placeholder"]),
                     help="Who makes the pixels (default: IMGBUILD_PROVIDER, the project's provider, else auto).")(f)
    f = click.option("-k", "--keep-going", is_flag=True, help="Go on with other targets after a failure.")(f)
    f = click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
                     help="Targets worked on at once (default: 4; with DashScope, enough that the "
                          "per-model rate and concurrency limits bind, up to 64).")(f)
    f = click.argument("targets", nargs=-1, metavar="[TARGET_GLOB]...")(f)
    return f


@cli.command(epilog=EXIT_CODES)
@_build_options
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be done (same as `imgbuild plan`).")
@click.option("--no-wait", is_flag=True,
              help="If another imgbuild build is running in this project, exit 1 at once instead of waiting.")
@_project_options
@_output_options
def build(targets: tuple[str, ...], jobs: int | None, keep_going: bool, provider: str | None, force: bool,
          budget: float | None, max_images: int | None, dry_run: bool, no_wait: bool, directory: str | None, project_file: str | None, json_mode: bool,
          verbose: int, quiet: int) -> int:
    """Generate every image that is new or changed; restore from the cache what was paid for.

    TARGET_GLOB selects targets by name or output path (e.g. 'hero*' 'products/*.png')."""
    from imgbuild import commands

    return commands.build(_where(directory, project_file), _reporter(json_mode, verbose, quiet),
                          patterns=targets, jobs=jobs, dry_run=dry_run, keep_going=keep_going,
                          provider=provider, force=force, budget=budget, max_images=max_images,
                          no_wait=no_wait)


@cli.command(epilog=EXIT_CODES)
@_build_options
@_project_options
@_output_options
def plan(targets: tuple[str, ...], jobs: int | None, keep_going: bool, provider: str | None, force: bool,
         budget: float | None, max_images: int | None, directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
         quiet: int) -> int:
    """Show each target's state and why (= build --dry-run). -v also lists up-to-date ones."""
    from imgbuild import commands

    return commands.build(_where(directory, project_file), _reporter(json_mode, verbose, quiet),
                          patterns=targets, jobs=jobs, dry_run=True, keep_going=keep_going,
                          provider=provider, force=force, budget=budget, max_images=max_images)


@cli.command(epilog=EXIT_CODES)
@click.option("--allow-drafts", is_flag=True, help="Accept placeholder drafts as up to date.")
@_project_options
@_output_options
def check(allow_drafts: bool, directory: str | None, project_file: str | None, json_mode: bool,
          verbose: int, quiet: int) -> int:
    """Exit 1 if any output is stale, missing, modified or a draft. Offline; needs no API key."""
    from imgbuild import commands

    return commands.check(_where(directory, project_file), _reporter(json_mode, verbose, quiet),
                          allow_drafts=allow_drafts)


@cli.command(epilog=EXIT_CODES)
@_project_options
@_output_options
def validate(directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
             quiet: int) -> int:
    """Check the specs against the schema and the model rules; generate nothing."""
    from imgbuild import commands

    return commands.validate(_where(directory, project_file), _reporter(json_mode, verbose, quiet))


@cli.command(epilog=EXIT_CODES)
@click.option("--yes", is_flag=True, help="Really delete (default: only list).")
@click.option("--no-wait", is_flag=True,
              help="If another imgbuild build is running in this project, exit 1 at once instead of waiting.")
@_project_options
@_output_options
def clean(yes: bool, no_wait: bool, directory: str | None, project_file: str | None, json_mode: bool, verbose: int,
          quiet: int) -> int:
    """List files under output_dir that no spec produces, and lock entries without a spec."""
    from imgbuild import commands

    return commands.clean(_where(directory, project_file), _reporter(json_mode, verbose, quiet), yes=yes,
                          no_wait=no_wait)


@cli.command()
@click.argument("name")
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
    from imgbuild import commands

    return commands.html(_where(directory, project_file), _reporter(json_mode, verbose, quiet),
                         name=name, sizes=sizes, base_url=base_url, css_class=css_class)


@cli.command()
def schema() -> int:
    """Print the JSON Schema of imgbuild.yaml."""
    from imgbuild import commands

    click.echo(commands.schema_text(), nl=False)
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

    return scaffold.init(_where(directory, None), _reporter(json_mode, verbose, quiet))


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

    return cachecmd.info(_where(directory, project_file), _reporter(json_mode, verbose, quiet))


@cache.command("verify")
@click.option("--yes", is_flag=True, help="Remove what is damaged (default: only report).")
@_project_options
@_output_options
def cache_verify(yes: bool, directory: str | None, project_file: str | None, json_mode: bool,
                 verbose: int, quiet: int) -> int:
    """Re-hash every stored image; exit 1 if any is damaged (--yes removes those)."""
    from imgbuild.verbs import cache as cachecmd

    return cachecmd.verify(_where(directory, project_file), _reporter(json_mode, verbose, quiet),
                           yes=yes)


@cache.command("prune")
@click.option("--keep-lock", "keep_locks", metavar="PATH", multiple=True,
              help="Keep every entry this lockfile references (repeatable; default: this project's imgbuild.lock).")
@click.option("--yes", is_flag=True, help="Really delete (default: only list).")
@_project_options
@_output_options
def cache_prune(keep_locks: tuple[str, ...], yes: bool, directory: str | None, project_file: str | None,
                json_mode: bool, verbose: int, quiet: int) -> int:
    """Delete entries no given lockfile references, and blobs no remaining entry uses."""
    from imgbuild.verbs import cache as cachecmd

    return cachecmd.prune(_where(directory, project_file), _reporter(json_mode, verbose, quiet),
                          keep_locks=keep_locks, yes=yes)


def main(argv: list[str] | None = None) -> int:
    from imgbuild.errors import (
        EXIT_INTERNAL,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
        INTERRUPTED_TEXT,
        ImgbuildError,
        SpecError,
    )

    try:
        code = cli.main(args=argv, prog_name="imgbuild", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort as e:
        # click turns KeyboardInterrupt (and our Interrupted, which says what was kept) into Abort
        cause = e.__cause__
        text = cause.args[0] if isinstance(cause, KeyboardInterrupt) and cause.args else INTERRUPTED_TEXT
        click.echo(f"imgbuild: {text}", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE if e.exit_code == 2 else e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except SpecError as e:
        click.echo(str(e), err=True)
        return e.exit_code
    except ImgbuildError as e:
        click.echo(f"imgbuild: error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt as e:
        click.echo(f"imgbuild: {e.args[0] if e.args else INTERRUPTED_TEXT}", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception:
        path = _write_crash_log(argv if argv is not None else sys.argv[1:])
        click.echo(f"imgbuild: internal error (a bug). The traceback is in {path}; "
                   "please report it with that file.", err=True)
        return EXIT_INTERNAL


def _write_crash_log(argv: list[str]) -> str:
    """The traceback, in the project's .imgbuild/ (the one -C/-f name, not the current
    folder's), else the temp folder; never a new .imgbuild/ where there is no project."""
    import platform
    import tempfile
    import traceback
    from pathlib import Path

    text = (f"imgbuild {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
            f"argv: {' '.join(argv)}\n\n{traceback.format_exc()}")
    folders = [Path(tempfile.gettempdir())]
    state_dir = _project_state_dir(argv)
    if state_dir is not None:
        folders.insert(0, state_dir)
    for folder in folders:
        try:
            folder.mkdir(exist_ok=True)
            path = folder / "crash.log"
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "(could not write a log file)"


def _project_state_dir(argv: list[str]) -> Any:
    """.imgbuild/ of the project the command line names (-C DIR, -f FILE), if there is one."""
    options: dict[str, str] = {}
    for i, arg in enumerate(argv):
        for short, long in (("-C", "--directory"), ("-f", "--file")):
            if arg in (short, long) and i + 1 < len(argv):
                options[short] = argv[i + 1]
            elif arg.startswith(long + "="):
                options[short] = arg.split("=", 1)[1]
            elif arg.startswith(short) and len(arg) > 2 and not arg.startswith("--"):
                options[short] = arg[2:]
    try:
        from imgbuild.spec.project import STATE_DIR, find_project_file

        return find_project_file(options.get("-C"), options.get("-f")).parent / STATE_DIR
    except Exception:  # noqa: BLE001 - no project here: the temp folder will do
        return None
