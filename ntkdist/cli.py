"""The ``ntkdist`` command line.

    ntkdist run CONFIG.toml [--store PATH] [--overwrite]   run the spectrum flow (embedded Prefect + Ray)
    ntkdist check CONFIG.toml                              validate a configuration and print it resolved
    ntkdist info STORE                                     what a run store holds
    ntkdist verify STORE [--workers N] [--sample K] [--seed S] [--repair]
                                                           re-check every block over Ray actors; --repair rebuilds
                                                           the bad ones

Bad input ends with one paragraph on stderr naming the field and the fix, and exit status 2; no traceback.
An embedded Prefect server that does not start in time ends the same way, naming the setting to raise, with
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError


# Prefect's embedded (ephemeral) API server gets `server.ephemeral.startup_timeout_seconds` (default 20) to answer.
# Its first start on a machine creates the SQLite database and runs every migration: measured 20 s on two lightly
# loaded cores, 40 s at load 6 and 90 s with every core busy, so a new user's first `ntkdist run` failed
# (issue 7). We give it longer unless the user chose a value.
STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_SECONDS = 180
_STARTUP_TIMEOUT_MESSAGE = "Timed out while attempting to connect to ephemeral Prefect API server"


class ServerStartError(RuntimeError):
    """The embedded Prefect server did not come up; the message names the setting to raise."""


def _user_startup_timeout() -> bool:
    """Whether the user set the ephemeral server's start-up timeout anywhere Prefect reads settings from.

    That is the environment, a `.env` or `prefect.toml` file, `[tool.prefect]` in `pyproject.toml`, or the active
    profile in `$PREFECT_HOME/profiles.toml`; Prefect's own settings model resolves them all.
    """
    if STARTUP_TIMEOUT_SETTING in os.environ:
        return True
    from prefect.settings import Settings

    return "startup_timeout_seconds" in Settings().server.ephemeral.model_fields_set


def _prefect_defaults() -> None:
    """Quiet, local-first Prefect settings unless the user chose otherwise.

    Also gives the embedded server `STARTUP_TIMEOUT_SECONDS` to start (instead of Prefect's 20 s) unless the user
    set `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` themselves. Call before the flow runs.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ntkdist")
    if not _user_startup_timeout():
        os.environ[STARTUP_TIMEOUT_SETTING] = str(STARTUP_TIMEOUT_SECONDS)
    if "prefect.context" in sys.modules:
        # Prefect resolves its settings once, when prefect.context is first imported (the check above does);
        # re-read them so that what we set here is what the run uses.
        import prefect.context

        prefect.context.refresh_global_settings_context()


def _startup_timeout() -> int:
    from prefect.settings import get_current_settings

    return get_current_settings().server.ephemeral.startup_timeout_seconds


def _server_start_error(exc: BaseException) -> ServerStartError | None:
    """A clear message for the embedded server's start-up failure, or None when ``exc`` is something else."""
    text = str(exc)
    if _STARTUP_TIMEOUT_MESSAGE not in text:
        return None
    message = (
        f"the embedded Prefect server did not start within {_startup_timeout()} s (its first start creates "
        f"its database, which is slow on a busy machine). Give it longer, e.g. "
        f"`export {STARTUP_TIMEOUT_SETTING}=600`, or point PREFECT_API_URL at a running Prefect server."
    )
    # When the server process died, Prefect appends its exit code and output: keep the start of that.
    detail = " ".join(text.split()).split(_STARTUP_TIMEOUT_MESSAGE, 1)[-1].lstrip(". ")
    if detail:
        message += f" Prefect said: {detail[:400]}"
    return ServerStartError(message)


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

    try:
        result = spectrum_flow(config.to_dict(), overwrite=args.overwrite, data_digest=digest)
    except RuntimeError as exc:
        clear = _server_start_error(exc)
        if clear is None:
            raise
        raise clear from exc
    print()
    print(f"store:    {result['store']}")
    print(f"spectrum: {result['store']} (group 'spectrum'; xarray.open_zarr(store, group='spectrum'))")
    print(f"report:   {result['plot']}")
    print(f"          {result['summary']}")
    return 0


def cmd_check(args) -> int:
    config = _load(args.config, None)
    print(json.dumps(config.to_dict(), indent=2))
    print(f"store: {config.store_location}")
    return 0


def cmd_info(args) -> int:
    from .store import STAGES, RunStore

    store = RunStore.open(args.store)
    meta = store.meta
    done = int(store.finished_blocks().sum())
    print(f"store:   {store.location}")
    print(f"inputs:  {meta['n']} × {meta['dim']} float64")
    print(f"gram:    {meta['n']} × {meta['n']} {meta['dtype']}, blocks of {meta['block']}, "
          f"{done}/{len(store.upper_blocks())} upper blocks written")
    for name in STAGES:
        record = store.stage(name)
        print(f"{name:8s} {'done ' + record['completed'] if record else 'not done'}")
    return 0


def cmd_verify(args) -> int:
    """Exit 0 with one line when the store is intact; else 1, naming each bad block (after a repair: its result)."""
    from .cluster import ray_session, repair_store, verify_store
    from .cluster.verify import DEFAULT_SAMPLE
    from .config import Config
    from .store import RunStore

    store = RunStore.open(args.store)
    # The store's own config gives the network, kind, width and seed the blocks were built with.
    config = Config.from_dict(store.config, source=f"{args.store} (its recorded config)")
    built_with = {"net": config.net, "kind": config.kernel.kind, "width": config.network.width,
                  "seed": config.network.seed}
    workers = args.workers or config.cluster.workers
    sample = DEFAULT_SAMPLE if args.sample is None else args.sample
    with ray_session(config.cluster.address):
        report = verify_store(args.store, workers=workers, sample=sample, sample_seed=args.seed, **built_with)
        if not report.ok and args.repair:
            _print_bad(report)
            rebuilt = repair_store(args.store, report.bad_blocks, workers=workers, device=config.cluster.device,
                                   **built_with)
            print(f"repair: rebuilt {rebuilt.computed} block{'s' if rebuilt.computed != 1 else ''}; the next "
                  "`ntkdist run` of this store recomputes its spectrum")
            report = verify_store(args.store, workers=workers, sample=sample, sample_seed=args.seed,
                                  **built_with)
    if report.ok:
        print(report.summary())
        return 0
    _print_bad(report)
    return 1


def _print_bad(report) -> None:
    print(report.summary())
    for bad in report.bad:
        print(f"  - {bad}")


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
    info.set_defaults(func=cmd_info)
    verify = sub.add_parser("verify", help="re-check a store's blocks (checksums, mirrors, sampled recomputation)")
    verify.add_argument("store")
    verify.add_argument("--workers", type=_at_least(1), help="Ray actors to check with (default: the store's [cluster] "
                        "workers)")
    verify.add_argument("--sample", type=_at_least(0), help="rows (and the same columns) whose entries are recomputed "
                        "(default 256, ntkdist.cluster.verify.DEFAULT_SAMPLE)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the sampled rows (default 0)")
    verify.add_argument("--repair", action="store_true", help="rebuild the bad blocks, then verify again")
    verify.set_defaults(func=cmd_verify)
    return parser


def _at_least(lowest: int):
    """An argparse type: a whole number ≥ ``lowest`` (argparse then names the option in its error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < lowest:
            raise ValueError(text)
        return value

    parse.__name__ = f"whole number ≥ {lowest}"
    return parse


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"ntkdist: error: {_paragraph(exc)}", file=sys.stderr)
        return 2
    except ServerStartError as exc:  # not bad input, but the user's to fix all the same: no traceback
        print(f"ntkdist: error: {_paragraph(exc)}", file=sys.stderr)
        return 1


def _paragraph(exc: BaseException) -> str:
    """The error's message as one paragraph (one line), however it was wrapped."""
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
