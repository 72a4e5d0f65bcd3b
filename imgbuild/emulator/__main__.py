"""`python -m imgbuild.emulator [--host] [--port] [--api-key] [--config FAULTS.yaml]`.

A stand-alone entry point until the CLI wires `imgbuild emulator` to `serve`.
"""

from __future__ import annotations

import argparse
import sys

from . import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgbuild.emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--config", default=None, help="YAML file of EmulatorConfig fields")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.api_key, args.config)


if __name__ == "__main__":
    sys.exit(main())
