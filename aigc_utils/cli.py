"""``aigc-book``: run the chapters, build the book, install the offline assets, pin nbval outputs,
write the generated modules."""

from __future__ import annotations

import argparse
import sys

from .core.profiles import ProfileError, resolve_profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aigc-book", description="Execute and build the AIGC book.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks headless (all of _toc.yml when none are named)")
    p_run.add_argument("--profile", default=None, help="smoke, cpu, gpu or auto (default: $AIGC_PROFILE or auto)")
    p_run.add_argument("--seed", type=int, default=None, help="override every notebook's seed parameter")
    p_run.add_argument("notebooks", nargs="*", help="paths, stems or chapter numbers such as 01")
    p_build = sub.add_parser("build", help="build the HTML book from the executed copies into _build/html")
    p_build.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    p_assets = sub.add_parser("assets", help="install every offline asset into $AIGC_DATA (make setup runs this)")
    p_assets.add_argument("names", nargs="*", help="only these assets")
    p_pin = sub.add_parser("pin", help="store the outputs of cells tagged nbval-check-output from the executed copy")
    p_pin.add_argument("notebooks", nargs="+")
    p_export = sub.add_parser("export", help="write the generated modules from the notebooks' #| export cells")
    p_export.add_argument("notebooks", nargs="*", help="only these notebooks (default: every one)")
    args = parser.parse_args(argv)

    from . import runner

    try:
        if args.command == "run":
            resolve_profile(args.profile)  # fail fast, before any kernel starts
            params = {"seed": args.seed} if args.seed is not None else None
            return runner.run(args.profile, args.notebooks, params)
        if args.command == "build":
            return runner.build(strict=not args.no_strict)
        if args.command == "assets":
            from .core.assets import ensure_all

            ensure_all(args.names or None)
            return 0
        if args.command == "export":
            chosen = [runner.resolve_notebook(name) for name in args.notebooks] or None
            for module in runner.export_modules(chosen):
                print(f"wrote {module}")
            return 0
        if args.command == "pin":
            for name in args.notebooks:
                runner.pin_outputs(runner.resolve_notebook(name))
            return 0
    # AssetMissing, a FileNotFoundError, carries its own fix in its message
    except (ProfileError, runner.RunnerError, FileNotFoundError) as exc:
        print(f"aigc-book: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
