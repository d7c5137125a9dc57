"""The ``ntkdist`` command line.

    ntkdist run CONFIG.toml [--store PATH] [--overwrite]   run the spectrum flow (embedded Prefect + Ray)
    ntkdist check CONFIG.toml                              validate a configuration and print it resolved
    ntkdist info STORE [--verify]                          what a run store holds; --verify re-reads every block

Bad input ends with one paragraph on stderr naming the field and the fix, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError


def _prefect_defaults() -> None:
    """Quiet, local-first Prefect settings unless the user chose otherwise."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ntkdist")


def _load(path: str, store: str | None):
    from .config import Config, load_config

    config = load_config(path)
    if store:
        raw = config.to_dict()
        raw["run"]["store"] = store
        config = Config.from_dict(raw, source=path)
    return config


def cmd_run(args) -> int:
    from . import pipeline

    config = _load(args.config, args.store)
    digest = pipeline.preflight(config, overwrite=args.overwrite)
    _prefect_defaults()
    from flows.spectrum import spectrum_flow

    result = spectrum_flow(config.to_dict(), overwrite=args.overwrite, data_digest=digest)
    print()
    print(f"store:    {result['store']}")
    print(f"spectrum: {result['store']} (group 'spectrum'; xarray.open_zarr(store, group='spectrum'))")
    print(f"report:   {result['plot']}")
    print(f"          {result['summary']}")
    return 0


def cmd_check(args) -> int:
    config = _load(args.config, None)
    print(json.dumps(config.to_dict(), indent=2))
    print(f"store: {config.store_path}")
    return 0


def cmd_info(args) -> int:
    from .store import STAGES, RunStore

    store = RunStore.open(args.store)
    meta = store.meta
    done = int(store.finished_blocks().sum())
    print(f"store:   {store.path}")
    print(f"inputs:  {meta['n']} × {meta['dim']} float64")
    print(f"gram:    {meta['n']} × {meta['n']} {meta['dtype']}, blocks of {meta['block']}, "
          f"{done}/{len(store.upper_blocks())} upper blocks written")
    for name in STAGES:
        record = store.stage(name)
        print(f"{name:8s} {'done ' + record['completed'] if record else 'not done'}")
    if args.verify:
        problems = store.verify()
        if problems:
            print("verify:  FAILED")
            for p in problems:
                print(f"  - {p}")
            return 1
        print("verify:  every block matches its checksum and its mirror")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkdist", description="NTK/NNGP Gram matrices and their spectra at scale.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the spectrum flow for a configuration")
    run.add_argument("config", help="path of the TOML configuration")
    run.add_argument("--store", help="override [run] store")
    run.add_argument("--overwrite", action="store_true", help="replace an existing store of another configuration")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a configuration and print it with defaults filled in")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)
    info = sub.add_parser("info", help="describe a run store")
    info.add_argument("store")
    info.add_argument("--verify", action="store_true", help="re-read every block and check its checksum")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"ntkdist: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
