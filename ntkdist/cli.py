"""The ``ntkdist`` command line.

    ntkdist run CONFIG.toml [--store PATH] [--ray-address ADDR] [--overwrite] [--force] [--quiet] [--json]
                                     run the spectrum flow (embedded Prefect + Ray); a finished run is reused
                                     unless --force
    ntkdist check CONFIG.toml [--store PATH] [--ray-address ADDR]
                                     validate a configuration and print it resolved
    ntkdist info STORE [--json]      what a run store holds
    ntkdist ls [ROOT] [--json]       the run stores under ROOT (default: the storage root), one line each
    ntkdist verify STORE [--workers N] [--sample K] [--seed S] [--repair] [--json]
                                     re-check every block over Ray actors; --repair rebuilds the bad ones
    ntkdist report STORE [--json]    redraw a run's figure and summary from what it stored
    ntkdist export STORE --format netcdf|npy [--out PATH] [--no-gram]
                                     the spectrum as netCDF, or inputs, spectrum and Gram as .npy files
    ntkdist theory [--activation A] [--depth L] [--weight-var W] [--bias-var B] [--dim D] [--n N] [--json]
                                     power series, sphere eigenvalues and bounds of a network, with no data
    ntkdist study CONFIG.toml [--quiet] [--json]
                                     a width study (finite_width or linearity, as [study] kind says): its
                                     Prefect flow, datasets and report

Exit status (`EXIT_CODES`): 0 success; 1 a check found a problem (`verify`: bad blocks) or the embedded Prefect
server did not start; 2 bad input (a wrong option, configuration, store or path), told in one paragraph on stderr
that names the field and the fix, without a traceback; 143 stopped by SIGTERM (the embedded Prefect server and Ray
are shut down first; a re-run resumes). A SIGTERM that lands while Ray's native code runs (mid-solve) can end the
process with SIGABRT (−6) after the same shutdown. Anything else is a bug and keeps its traceback (status 1).
``--json`` prints one JSON document on stdout and nothing else there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings

from .errors import StaleLeaseWarning, UserError


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


def _load(path: str, store: str | None, ray_address: str | None = None):
    """The configuration at ``path``, with ``--store`` and ``--ray-address`` in place of [run] store and
    [cluster] address when given (validated again, so a bad override is named like a bad key)."""
    from .config import Config, load_config

    config = load_config(path)
    if store or ray_address is not None:
        raw = config.to_dict()
        if store:
            raw["run"]["store"] = store
        if ray_address is not None:
            raw["cluster"]["address"] = ray_address
        config = Config.from_dict(raw, source=path)
    return config


#: What each exit status means (the module docstring; `--help` prints it).
EXIT_CODES = {0: "success", 1: "a check found a problem (verify: bad blocks), or the embedded Prefect server did not "
              "start", 2: "bad input: a wrong option, configuration, store or path (one paragraph on stderr)",
              128 + signal.SIGTERM: "stopped by SIGTERM, after shutting down the embedded Prefect server and Ray "
              "(a re-run resumes; mid-solve, Ray's own signal handling may end it with SIGABRT instead, after the "
              "same shutdown)"}


def _emit(args, document: dict, lines: list[str]) -> None:
    """Print ``document`` as JSON with ``--json``, else the human ``lines``."""
    if getattr(args, "json", False):
        print(json.dumps(document, indent=2, default=str))
    else:
        for line in lines:
            print(line)


def cmd_run(args) -> int:
    from . import pipeline

    config = _load(args.config, args.store, args.ray_address)
    args.overwrite = args.overwrite or args.force  # a new store: nothing of the old one is reused
    if args.quiet or args.json:
        from .cluster.progress import QUIET_SETTING

        os.environ[QUIET_SETTING] = "1"
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    digest = pipeline.preflight(config, overwrite=args.overwrite)
    _prefect_defaults()
    from flows.spectrum import spectrum_flow

    result = _run_flow(spectrum_flow, config.to_dict(), overwrite=args.overwrite, data_digest=digest)
    if args.quiet and not args.json:
        return 0
    _emit(args, {key: value for key, value in result.items() if key != "markdown"}, [
        "",
        f"store:    {result['store']}",
        f"spectrum: {result['store']} (group 'spectrum'; xarray.open_zarr(store, group='spectrum'))",
        f"report:   {result['plot']}",
        f"          {result['summary']}",
    ])
    return 0


def _run_flow(flow, *args, **kwargs):
    """Run a Prefect flow on the embedded server (after `_prefect_defaults`), turning a server that did not start
    into `ServerStartError`."""
    try:
        return flow(*args, **kwargs)
    except RuntimeError as exc:
        clear = _server_start_error(exc)
        if clear is None:
            raise
        raise clear from exc


def cmd_study(args) -> int:
    from .studies import load_study

    config = load_study(args.config)
    if args.quiet or args.json:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    _prefect_defaults()
    if config.KIND == "finite_width":
        from flows.finite_width import finite_width_flow as flow
    else:
        from flows.linearity import linearity_flow as flow
    result = _run_flow(flow, config.to_dict())
    if args.quiet and not args.json:
        return 0
    _emit(args, {"kind": config.KIND, "output": str(config.output), **result}, [
        "",
        f"study:  {config.KIND} {config.study.name}",
        f"output: {config.output} (netCDF datasets; xarray.open_dataset)",
        f"report: {result['report']}",
    ])
    return 0


def cmd_check(args) -> int:
    config = _load(args.config, args.store, args.ray_address)
    print(json.dumps(config.to_dict(), indent=2))
    print(f"store: {config.store_location}")
    return 0


def cmd_info(args) -> int:
    from .store import STAGES, RunStore, summarize_run

    store = RunStore.open(args.store)
    meta = store.meta
    summary = summarize_run(store)
    stages = {name: store.stage(name) for name in STAGES}
    lines = [f"store:   {store.location}",
             f"inputs:  {meta['n']} × {meta['dim']} float64",
             f"network: {summary.network}, {summary.kind}",
             f"gram:    {meta['n']} × {meta['n']} {meta['dtype']}, blocks of {meta['block']}, "
             f"{summary.blocks_written}/{summary.blocks_total} upper blocks written"]
    lines += [f"{name:8s} {'done ' + record['completed'] if record else 'not done'}" for name, record in stages.items()]
    _emit(args, {**summary.as_dict(), "block": meta["block"], "stages": stages}, lines)
    return 0


def cmd_ls(args) -> int:
    from .config import storage_root
    from .store import find_runs

    runs = find_runs(args.root or storage_root())
    rows = [(run.location, "" if run.n is None else str(run.n), run.network or "", run.kind or "", run.status,
             _spectrum_line(run.spectrum)) for run in runs]
    header = ("store", "N", "network", "kernel", "status", "spectrum")
    widths = [max(len(str(row[c])) for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip()
             for row in [header, *rows]] if rows else [f"no run stores under {args.root or storage_root()}"]
    _emit(args, {"runs": [run.as_dict() for run in runs]}, lines)
    return 0


def _spectrum_line(spectrum: dict | None) -> str:
    if not spectrum:
        return ""
    parts = [f"{spectrum['eigenvalues']} eigenvalues, λ1 {spectrum['lambda_1']:.4g}"]
    if "lambda_min" in spectrum:
        parts.append(f"λmin {spectrum['lambda_min']:.4g}")
    if "effective_rank" in spectrum:
        parts.append(f"eff. rank {spectrum['effective_rank']:.3g}")
    return ", ".join(parts)


def cmd_verify(args) -> int:
    """Exit 0 with one line when the store is intact; else 1, naming each bad block (after a repair: its result)."""
    from .cluster import ray_session, repair_store, verify_store
    from .cluster.verify import DEFAULT_SAMPLE
    from .store import RunStore

    store = RunStore.open(args.store)
    config = _recorded_config(store, args.store)
    # The store's own config gives the network, kind, width and seed the blocks were built with.
    built_with = {"net": config.net, "kind": config.kernel.kind, "width": config.network.width,
                  "seed": config.network.seed}
    workers = args.workers or config.cluster.workers
    sample = DEFAULT_SAMPLE if args.sample is None else args.sample
    repaired = None
    with ray_session(config.cluster.address):
        report = verify_store(args.store, workers=workers, sample=sample, sample_seed=args.seed, **built_with)
        if not report.ok and args.repair:
            if not args.json:
                _print_bad(report)
            rebuilt = repair_store(args.store, report.bad_blocks, workers=workers, device=config.cluster.device,
                                   **built_with)
            repaired = rebuilt.computed
            if not args.json:
                print(f"repair: rebuilt {rebuilt.computed} block{'s' if rebuilt.computed != 1 else ''}; the next "
                      "`ntkdist run` of this store recomputes its spectrum")
            report = verify_store(args.store, workers=workers, sample=sample, sample_seed=args.seed,
                                  **built_with)
    if args.json:
        print(json.dumps({"ok": report.ok, "summary": report.summary(), "bad": [str(bad) for bad in report.bad],
                          "bad_blocks": [list(block) for block in report.bad_blocks], "repaired_blocks": repaired},
                         indent=2))
    elif report.ok:
        print(report.summary())
    else:
        _print_bad(report)
    return 0 if report.ok else 1


def _recorded_config(store, location: str):
    """The configuration a store was built from, read from the store itself."""
    from .config import Config

    return Config.from_dict(store.config, source=f"{location} (its recorded config)")


def _print_bad(report) -> None:
    print(report.summary())
    for bad in report.bad:
        print(f"  - {bad}")


def cmd_report(args) -> int:
    """Redraw the figure and summary of a solved run from its store (same paths as the run's own report)."""
    from . import pipeline
    from .config import Config
    from .store import RunStore

    store = RunStore.open(args.store)
    raw = _recorded_config(store, args.store).to_dict()
    raw["run"]["store"] = store.location  # the store where it is now, wherever it was built
    result = pipeline.report(Config.from_dict(raw, source=f"{args.store} (its recorded config)"))
    _emit(args, {key: value for key, value in result.items() if key != "markdown"},
          [f"report:   {result['plot']}", f"          {result['summary']}"])
    return 0


def cmd_export(args) -> int:
    """The spectrum as netCDF (one file), or inputs, spectrum variables and Gram matrix as .npy files."""
    from pathlib import Path

    from .errors import StoreError
    from .store import RunStore, export_netcdf, export_npy

    store = RunStore.open(args.store)
    stem = Path(store.location.rstrip("/").rsplit("/", 1)[-1]).with_suffix("")
    if args.format == "netcdf":
        out = Path(args.out or f"{stem}.spectrum.nc")
        if not out.parent.is_dir():
            raise StoreError(f"--out: {out.parent} is not a directory; create it or choose another path")
        export_netcdf(store.read_spectrum().load(), out)
        written = [out]
    else:
        written = export_npy(store, Path(args.out or f"{stem}.npy.d"), gram=not args.no_gram)
    _emit(args, {"files": [str(path) for path in written]}, [str(path) for path in written])
    return 0


def cmd_theory(args) -> int:
    from .errors import UserError
    from .kernels import MLP
    from .theory import network_summary

    try:
        net = MLP(depth=args.depth, activation=args.activation, weight_var=args.weight_var, bias_var=args.bias_var)
        summary = network_summary(net, dim=args.dim, kind=args.kind, radius=args.radius, order=args.order,
                                  max_degree=args.degrees, n=args.n)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, UserError):
            raise
        message = " ".join(str(exc).split())
        for field in ("weight_var", "bias_var", "depth", "activation", "dim", "radius"):
            if message.startswith(f"{field}:"):  # name the option the user typed
                message = f"--{field.replace('_', '-')}{message[len(field):]}"
        raise UserError(f"ntkdist theory: {message}") from exc
    _emit(args, summary, _theory_lines(summary))
    return 0


def _theory_lines(summary: dict) -> list[str]:
    net = summary["network"]
    lines = [f"{summary['kind'].upper()} of {net['activation']} × {net['depth']} (w {net['weight_var']:g}, "
             f"b {net['bias_var']:g}) on the sphere of radius {summary['radius']:g} in R^{summary['dim']}", "",
             f"power series Θ(ρ) = Σ κ_p ρ^p  [{summary['power_series']['reference']}]"]
    lines += [f"  κ_{p:<3d} {c:.10g}" for p, c in enumerate(summary["power_series"]["coefficients"])]
    lines += [f"  tail  {summary['power_series']['tail']:.3g} (of Θ(1) = {summary['power_series']['total']:.10g})",
              "", f"sphere eigenvalues  [{summary['sphere']['reference']}]",
              "  k   μ_k               multiplicity" + ("   n·μ_k" if summary["n"] else "")]
    for row in summary["sphere"]["eigenvalues"]:
        lines.append(f"  {row['degree']:<3d} {row['eigenvalue']:<17.10g} {row['multiplicity']:<14d}"
                     + (f" {row['gram_eigenvalue']:.6g}" if "gram_eigenvalue" in row else ""))
    decay = summary["decay"]
    lines += ["", f"decay: {decay['regime']}, κ_p rate {decay['coefficient_rate']}, μ_k rate {decay['eigenvalue_rate']}"
              f"{', odd degrees ≥ 3 vanish' if decay['odd_vanish'] else ''}  [{decay['reference']}]",
              f"positivity: {summary['positivity']['statement']}  [{summary['positivity']['citation']}]"]
    return lines


EXAMPLES = {
    "run": "ntkdist run examples/sphere-relu.toml\n  ntkdist run job.toml --store s3://bucket/runs/a.zarr --quiet\n"
           "  ntkdist run job.toml --ray-address auto   # on a node of a running Ray cluster",
    "check": "ntkdist check job.toml",
    "info": "ntkdist info storage/runs/demo.zarr --json",
    "ls": "ntkdist ls\n  ntkdist ls /data/runs --json\n  ntkdist ls s3://bucket/runs",
    "verify": "ntkdist verify storage/runs/demo.zarr --workers 4\n  ntkdist verify s3://bucket/runs/a.zarr --repair",
    "report": "ntkdist report storage/runs/demo.zarr",
    "export": "ntkdist export storage/runs/demo.zarr --format netcdf --out demo.nc\n"
              "  ntkdist export storage/runs/demo.zarr --format npy --out demo/ --no-gram",
    "theory": "ntkdist theory --activation relu --depth 3 --dim 16 --n 10000\n"
              "  ntkdist theory --activation erf --depth 2 --bias-var 0.1 --json",
    "study": "ntkdist study examples/finite-width.toml\n  ntkdist study examples/linearity.toml --json",
}


def _subcommand(sub, name: str, func, help: str, **kwargs) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {EXAMPLES[name]}",
                            formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    parser.set_defaults(func=func)
    return parser


def _override_flags(parser: argparse.ArgumentParser) -> None:
    """``--store`` and ``--ray-address``: where this run stores and computes, over what the configuration says."""
    parser.add_argument("--store", help="override [run] store")
    parser.add_argument("--ray-address", help="override [cluster] address: \"auto\" joins the cluster of this "
                        "node, HOST:PORT its GCS, ray://HOST:10001 through Ray Client, \"\" an embedded Ray")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    epilog = "exit status:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(prog="ntkdist", description="NTK/NNGP Gram matrices and their spectra at scale.",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = _subcommand(sub, "run", cmd_run, "run the spectrum flow for a configuration")
    run.add_argument("config", help="path of the TOML configuration")
    _override_flags(run)
    run.add_argument("--overwrite", action="store_true", help="replace an existing store of another configuration")
    run.add_argument("--force", action="store_true", help="recompute everything, even a finished run of the same "
                     "configuration (a re-run otherwise reuses the stored Gram matrix and spectrum)")
    run.add_argument("--quiet", action="store_true", help="no progress bars, Prefect warnings only, no summary "
                     "(for schedules; errors still go to stderr)")
    _json_flag(run)
    check = _subcommand(sub, "check", cmd_check, "validate a configuration and print it with defaults filled in")
    check.add_argument("config")
    _override_flags(check)
    info = _subcommand(sub, "info", cmd_info, "describe a run store")
    info.add_argument("store")
    _json_flag(info)
    ls = _subcommand(sub, "ls", cmd_ls, "list the run stores under a folder or s3:// prefix")
    ls.add_argument("root", nargs="?", help="where to look (default: $NTKDIST_STORAGE, else ./storage)")
    _json_flag(ls)
    verify = _subcommand(sub, "verify", cmd_verify,
                         "re-check a store's blocks (checksums, mirrors, sampled recomputation)")
    verify.add_argument("store")
    verify.add_argument("--workers", type=_at_least(1), help="Ray actors to check with (default: the store's [cluster] "
                        "workers)")
    verify.add_argument("--sample", type=_at_least(0), help="rows (and the same columns) whose entries are recomputed "
                        "(default 256, ntkdist.cluster.verify.DEFAULT_SAMPLE)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the sampled rows (default 0)")
    verify.add_argument("--repair", action="store_true", help="rebuild the bad blocks, then verify again")
    _json_flag(verify)
    report = _subcommand(sub, "report", cmd_report, "redraw a solved run's figure and markdown summary")
    report.add_argument("store")
    _json_flag(report)
    export = _subcommand(sub, "export", cmd_export, "write a run's spectrum (netcdf) or its arrays (npy) as files")
    export.add_argument("store")
    export.add_argument("--format", choices=("netcdf", "npy"), required=True)
    export.add_argument("--out", help="netcdf: the file (default STORE-NAME.spectrum.nc); npy: the folder (default "
                        "STORE-NAME.npy.d)")
    export.add_argument("--no-gram", action="store_true", help="npy: leave the Gram matrix out (it is N² values)")
    _json_flag(export)
    theory = _subcommand(sub, "theory", cmd_theory,
                         "what theory says of a network before any data: power series, sphere eigenvalues with "
                         "multiplicities, decay, positive definiteness")
    theory.add_argument("--activation", default="relu", help="relu, erf, tanh, gelu, … (default relu)")
    theory.add_argument("--depth", type=_at_least(1), default=3, help="hidden layers (default 3)")
    theory.add_argument("--weight-var", type=float, default=2.0, help="W_std² (default 2)")
    theory.add_argument("--bias-var", type=float, default=0.0, help="b_std² (default 0)")
    theory.add_argument("--kind", choices=("ntk", "nngp"), default="ntk")
    theory.add_argument("--dim", type=_at_least(2), default=16, help="input dimension d (default 16)")
    theory.add_argument("--radius", type=float, default=1.0, help="norm of the inputs (default 1)")
    theory.add_argument("--order", type=_at_least(0), default=8, help="power-series terms κ_0..κ_order (default 8)")
    theory.add_argument("--degrees", type=_at_least(0), default=8, help="sphere eigenvalues μ_0..μ_K (default 8)")
    theory.add_argument("--n", type=_at_least(1), help="number of points: also print the Gram eigenvalues n·μ_k")
    _json_flag(theory)
    study = _subcommand(sub, "study", cmd_study, "run a width study (finite_width or linearity, as its [study] kind "
                        "says): datasets, figures and report in its output folder")
    study.add_argument("config", help="path of the study's TOML configuration")
    study.add_argument("--quiet", action="store_true", help="Prefect warnings only, no summary (for schedules)")
    _json_flag(study)
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
    _unwind_on_sigterm()
    # The settings a command puts into the environment (Prefect's defaults, the log level and quiet flag of
    # --quiet/--json) are for that command only: a caller that runs `main` in its own process (a notebook, a test,
    # a scheduler's Python task) gets its environment back, and its next command starts from it. Only on a return:
    # any exception that escapes (SystemExit, Ctrl-C, a bug's traceback) skips the restore, since the process is
    # usually ending then and the services' exit handlers still read those settings.
    environment = dict(os.environ)
    code = _dispatch(args)
    _restore_environment(environment)
    return code


def _dispatch(args) -> int:
    # The lease's take-over warning is logged as well (what a run's log and Prefect's UI show): printed once, not
    # twice. (A process-wide filter: `warnings.catch_warnings` here, unwound by SIGTERM's SystemExit, left a child
    # of the terminated run alive for a minute in tests/test_cli_signals.py.)
    warnings.filterwarnings("ignore", category=StaleLeaseWarning)
    try:
        return args.func(args)
    except SystemExit as exc:
        # Inside a flow run Prefect's engine handles SIGTERM itself (the run is marked crashed, everything unwinds)
        # and the process exits with 15; nothing in ntkdist exits with 15, so report the same 143 as outside one.
        if exc.code == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    except UserError as exc:
        print(f"ntkdist: error: {_paragraph(exc)}", file=sys.stderr)
        return 2
    except ServerStartError as exc:  # not bad input, but the user's to fix all the same: no traceback
        print(f"ntkdist: error: {_paragraph(exc)}", file=sys.stderr)
        return 1


def _restore_environment(before: dict[str, str]) -> None:
    """Make os.environ what ``before`` holds again (keys added since are removed, changed ones set back)."""
    for key in set(os.environ) - set(before):
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _unwind_on_sigterm() -> None:
    """Make SIGTERM (a scheduler cancelling the job, `kill`, an evicted pod) raise SystemExit(143) in the main thread.

    By default SIGTERM ends the process on the spot: no `finally`, no atexit, so the embedded Prefect server and
    Ray's agents outlive the run and keep their ports and files. As an exception it unwinds: the writer's lease is
    released, the embedded services stop, and every block already recorded stays (a re-run resumes). A second
    SIGTERM kills at once, as usual. A handler installed by whoever embeds the CLI stands.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signal.SIGTERM)


def _paragraph(exc: BaseException) -> str:
    """The error's message as one paragraph (one line), however it was wrapped."""
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
