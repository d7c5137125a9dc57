"""The run configuration: a TOML file, validated on load.

Every key is checked before anything is computed or written: an unknown key, a wrong type or an impossible
value raises `ConfigError` with one paragraph naming the key (``[data] n``) and the fix. Relative paths are
resolved against the current working directory.

    [run]      name, store (a local path or an s3:// URL; default: $NTKDIST_STORAGE or ./storage, then runs/<name>.zarr)
    [data]     source = "sphere" | "gaussian" | "npy", n, dim, seed, path (npy), radius (sphere)
    [network]  depth, activation, weight_var, bias_var, width and seed (finite-width kinds)
    [kernel]   kind = "ntk" | "nngp" | "empirical_ntk" | "empirical_nngp", dtype = "float64" | "float32", block
    [solver]   method = "auto" | "exact" | "krylov" | "nystrom", k, tol, max_passes, smallest, density, vectors,
               seed, operator = "auto" | "memory" | "stored" | "matrix_free", driver_memory_gb
    [cluster]  address ("" starts an embedded local Ray), workers, device, cpus_per_worker, memory_budget_gb
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import ConfigError
from .kernels import MLP, ActivationScope, available_activations, current_scope, get_activation

#: Largest N the exact dense eigensolver accepts (the matrix and LAPACK's workspace must fit in memory).
EXACT_MAX_N = 50_000
#: Largest N for which ``method = "auto"`` picks the exact solver: beyond it a dense eigen-decomposition costs
#: minutes to hours (LAPACK takes ~9 min at N = 20000 on two cores) while block Krylov takes seconds.
AUTO_EXACT_MAX_N = 6_000
#: Eigenvalues from the top that ``method = "krylov"``/``"nystrom"`` computes when ``k`` is not given.
DEFAULT_TOP_K = 100
#: Largest Gram block edge: one float64 block of this size is 2 GiB in a worker's memory.
MAX_BLOCK = 16_384
DEFAULT_BLOCK = 2048


def storage_root() -> Path:
    """The local root of run stores and reports: ``$NTKDIST_STORAGE``, else ``./storage``."""
    return Path(os.environ.get("NTKDIST_STORAGE", "storage")).expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


#: Object-store URL schemes a ``[run] store`` may use (the store's own list: ``ntkdist.store.location``).
STORE_URL_SCHEMES = ("s3",)


class RunSection(_Section):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="the run's name: letters, digits, . _ - (names the store and the report)")
    store: str | None = Field(default=None, description="where the run store lives: a local path or "
                              "s3://bucket/prefix/NAME.zarr; default $NTKDIST_STORAGE (or ./storage)/runs/NAME.zarr")

    @field_validator("store")
    @classmethod
    def _local_path_or_s3_url(cls, store: str | None) -> str | None:
        if store is not None and "://" in store:
            scheme, rest = store.split("://", 1)
            if scheme not in STORE_URL_SCHEMES or not rest.split("/", 1)[0]:
                raise ValueError(f"{store!r} is neither a local path nor an s3://bucket/prefix URL; give a "
                                 "directory such as storage/runs/demo.zarr or s3://bucket/runs/demo.zarr")
        return store


class DataSection(_Section):
    source: Literal["sphere", "gaussian", "npy"] = Field(description="uniform on the sphere of `radius`, i.i.d. "
                                                         "standard Gaussian, or a .npy file at `path`")
    n: int | None = Field(default=None, ge=1, description="number of points; required for sphere/gaussian, checked "
                          "against the file for npy")
    dim: int | None = Field(default=None, ge=1, description="input dimension d; required for sphere/gaussian, "
                            "checked against the file for npy")
    seed: int = Field(default=0, ge=0, description="generated data are reproducible from the seed")
    path: str | None = Field(default=None, description="npy only: a 2-D float array of shape (n, dim), never "
                             "unpickled")
    radius: float = Field(default=1.0, gt=0.0, description="sphere only: the norm of every point")

    @model_validator(mode="after")
    def _source_fields(self):
        if self.source == "npy":
            if not self.path:
                raise ValueError("path: required when source = \"npy\" (the .npy file of shape (n, dim))")
        else:
            if self.path is not None:
                raise ValueError(f"path: only used with source = \"npy\"; remove it for source = {self.source!r}")
            for key in ("n", "dim"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: required when source = {self.source!r}")
        if self.source == "sphere" and self.dim is not None and self.dim < 2:
            raise ValueError("dim: the sphere S^(dim-1) needs dim ≥ 2")
        if self.source != "sphere" and self.radius != 1.0:  # (to_dict writes the default 1.0 for every source)
            raise ValueError(f"radius: only used with source = \"sphere\"; remove it for source = {self.source!r}")
        return self


class NetworkSection(_Section):
    depth: int = Field(ge=1, le=1000, description="hidden Dense + activation layers, then a linear readout "
                       "(neural-tangents stax, NTK parameterization)")
    activation: str = Field(default="relu", description="a name from `Activations`, e.g. relu, erf, tanh, "
                            "leaky_relu(0.1), tanh(tol=1e-12), custom:NAME")
    weight_var: float = Field(default=2.0, gt=0.0, description="W_std²")
    bias_var: float = Field(default=0.0, ge=0.0, description="b_std²")
    width: int | list[int] | None = Field(default=None, description="empirical kinds only: the sampled network's "
                                         "hidden width (one, or one per hidden layer)")
    seed: int = Field(default=0, ge=0, description="empirical kinds only: the sampled network's seed")

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str, info: ValidationInfo) -> str:
        scope = (info.context or {}).get("activations")
        try:
            return get_activation(value, scope=scope).describe()
        except (ValueError, TypeError) as exc:
            if value.strip().lower().startswith("custom:"):  # its message says where custom names are found
                raise ValueError(str(exc).removeprefix("activation: ")) from None
            raise ValueError(f"unknown activation {value!r}; use one of {', '.join(available_activations())}")


class KernelSection(_Section):
    kind: Literal["ntk", "nngp", "empirical_ntk", "empirical_nngp"] = Field(
        default="ntk", description="infinite-width NTK or NNGP, or those of one sampled finite-width network")
    dtype: Literal["float64", "float32"] = Field(default="float64", description="storage precision (arithmetic "
                                                 "is always float64; float32 halves the store, its error is bounded)")
    block: int = Field(default=DEFAULT_BLOCK, ge=1, le=MAX_BLOCK, description="rows per Gram block = the chunk "
                       "edge of the stored matrix")


class SolverSection(_Section):
    """How the spectrum is computed (see docs/solvers.md).

    ``method``: "exact" (dense LAPACK, every eigenvalue), "krylov" (randomized block Krylov for the top k,
    LOBPCG for the ``smallest``, stochastic Lanczos for the density, sharing passes over K), "nystrom" (one pass,
    single-pass Nyström for the top k), or "auto" (exact up to N = 6000, krylov beyond).
    ``operator``: where K lives while it is multiplied: "memory" (actors hold their block-row panels), "stored"
    (actors stream their panels from the store every pass), "matrix_free" (actors recompute their panels from X
    every pass; the Gram matrix is never stored), or "auto" (memory when the panels fit ``[cluster]
    memory_budget_gb``, else stored).
    """

    method: Literal["auto", "exact", "krylov", "nystrom"] = Field(
        default="auto", description="exact (LAPACK, every eigenvalue, n ≤ 50000), krylov (top k, λ_min, density), "
        "nystrom (one pass), or auto: exact up to n = 6000, krylov beyond")
    k: int | None = Field(default=None, ge=1, description="the k largest eigenvalues (default: all for exact, 100 "
                          "otherwise)")
    tol: float = Field(default=1e-8, gt=0.0, lt=1.0, description="relative tolerance on every certified eigenvalue "
                       "error")
    max_passes: int = Field(default=40, ge=1, le=10_000, description="passes over K shared by the top k, λ_min and "
                            "the density")
    smallest: int = Field(default=1, ge=0, description="how many of the smallest eigenvalues (λ_min first); 0 skips "
                          "them")
    density: bool = Field(default=True, description="the spectral density (stochastic Lanczos quadrature)")
    vectors: bool = Field(default=False, description="also store the top-k eigenvectors")
    seed: int = Field(default=0, ge=0, description="start blocks, probes and sketches")
    operator: Literal["auto", "memory", "stored", "matrix_free"] = Field(
        default="auto", description="where K lives while it is multiplied: memory (actors hold their panels), "
        "stored (actors stream them), matrix_free (actors recompute them every pass; K is never stored), auto "
        "(memory if the panels fit [cluster] memory_budget_gb, else stored)")
    #: It sizes the solvers' N-row arrays (`ntkdist.linalg.spectrum.memory_shares`).
    driver_memory_gb: float = Field(default=1.5, gt=0.0, description="memory for the solvers' arrays in the driver "
                                    "(Krylov basis, λ_min preconditioner, density deflation); the process takes "
                                    "about 0.2 GB more")

    def resolved_method(self, n: int) -> str:
        """The method that runs for N = n ("auto" resolved)."""
        if self.method != "auto":
            return self.method
        return "exact" if n <= AUTO_EXACT_MAX_N else "krylov"

    def resolved_k(self, n: int) -> int:
        """How many of the largest eigenvalues are computed for N = n."""
        if self.k is not None:
            return self.k
        return n if self.resolved_method(n) == "exact" else min(DEFAULT_TOP_K, n - 1)


class ClusterSection(_Section):
    address: str = Field(default="", description="\"\" starts an embedded local Ray on loopback; else \"auto\", "
                         "\"host:port\" or \"ray://host:port\" of an existing cluster")
    workers: int = Field(default=2, ge=1, le=4096, description="Ray actors; with GPUs, one per GPU")
    device: Literal["auto", "cpu", "gpu"] = Field(default="auto", description="where the actors compute")
    cpus_per_worker: float | None = Field(default=None, gt=0.0, description="default: the machine's CPUs shared "
                                          "among the workers")
    memory_budget_gb: float = Field(default=4.0, gt=0.0, description="per actor, for holding its Gram panels in "
                                    "memory (operator = memory or auto)")

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str) -> str:
        if value in ("", "auto") or re.fullmatch(r"(ray://)?[A-Za-z0-9._\-\[\]:]+:\d{1,5}", value):
            return value
        raise ValueError(f"must be \"\" (an embedded Ray), \"auto\", \"host:port\" or \"ray://host:port\", got "
                         f"{value!r}")


class Config(_Section):
    """A validated run configuration. Build it with `load_config` or `Config.from_dict`."""

    run: RunSection
    data: DataSection
    network: NetworkSection
    kernel: KernelSection = KernelSection()
    solver: SolverSection = SolverSection()
    cluster: ClusterSection = ClusterSection()
    #: The custom activations ``[network] activation = "custom:NAME"`` may name (a snapshot; see `from_dict`).
    _activations: ActivationScope = PrivateAttr(default_factory=ActivationScope)

    @model_validator(mode="after")
    def _cross_section(self):
        empirical = self.kernel.kind.startswith("empirical")
        width = self.network.width
        if empirical and width is None:
            raise ValueError(f"[network] width: required for [kernel] kind = {self.kernel.kind!r} (the hidden width "
                             "of the sampled network)")
        # (to_dict writes the default seed 0, so only a chosen seed counts as given)
        if not empirical and (width is not None or self.network.seed != 0):
            raise ValueError("[network] width: width and seed describe a sampled network; they are only used with "
                             "[kernel] kind = \"empirical_ntk\" or \"empirical_nngp\"")
        if width is not None:
            widths = [width] if isinstance(width, int) else list(width)
            if len(widths) not in (1, self.network.depth) or min(widths) < 1:
                raise ValueError(f"[network] width: give one width ≥ 1 or one per hidden layer "
                                 f"({self.network.depth}), got {width!r}")
        if empirical and self.solver.operator == "matrix_free":
            raise ValueError("[solver] operator: \"matrix_free\" recomputes the infinite-width kernel; the empirical "
                             "kinds need their Gram matrix stored: use \"auto\", \"memory\" or \"stored\"")
        if self.solver.method == "exact" and self.solver.operator == "matrix_free":
            raise ValueError("[solver] method: \"exact\" needs the whole matrix in memory; with operator = "
                             "\"matrix_free\" use method = \"krylov\" (or \"auto\")")
        n = self.data.n
        if n is not None:
            check_solver_size(self.solver, n)
        return self

    # -- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "", activations=None) -> "Config":
        """Validate a parsed TOML document; raises `ConfigError` naming every bad key.

        ``activations`` (an `ActivationScope`, or an iterable of custom activations) is where ``"custom:NAME"``
        is looked up; by default the current scope (``with ActivationScope():``). The configuration keeps a
        snapshot of it, so its network does not change when the scope does, and no other configuration's custom
        activations are ever visible to it.
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"{source or 'configuration'}: expected a table of sections, got {type(raw).__name__}")
        if "study" in raw and "run" not in raw:
            raise ConfigError(f"{source or 'configuration'}: this is a width study's configuration (it has a [study] "
                              f"table), not a spectrum job's; run it with `ntkdist study {source or 'CONFIG.toml'}`")
        if activations is None:
            activations = current_scope() or ActivationScope()
        elif not isinstance(activations, ActivationScope):
            activations = ActivationScope(activations)
        activations = activations.copy()
        try:
            config = cls.model_validate(raw, context={"activations": activations})
        except ValidationError as exc:
            raise ConfigError(explain(exc, source)) from None
        config._activations = activations
        return config

    @property
    def activations(self) -> ActivationScope:
        """The custom activations this configuration can name (a snapshot taken when it was made)."""
        return self._activations

    # -- derived values -----------------------------------------------------------------------------------------
    @property
    def net(self) -> MLP:
        """The network as the kernels see it."""
        return MLP(
            depth=self.network.depth,
            activation=get_activation(self.network.activation, scope=self._activations),
            weight_var=self.network.weight_var,
            bias_var=self.network.bias_var,
        )

    @property
    def store_location(self) -> str:
        """Where the run's zarr group lives: an absolute local path, or the ``s3://`` URL as given."""
        if self.run.store and "://" in self.run.store:
            return self.run.store.rstrip("/")
        if self.run.store:
            return str(Path(self.run.store).expanduser().resolve())
        return str((storage_root() / "runs" / f"{self.run.name}.zarr").resolve())

    @property
    def data_path(self) -> Path | None:
        return Path(self.data.path).expanduser().resolve() if self.data.path else None

    def to_dict(self) -> dict[str, Any]:
        """The configuration with every default filled in (JSON-ready; what the store records)."""
        return self.model_dump(mode="json")

    def kernel_fingerprint(self, data_digest: str) -> str:
        """A digest of everything that determines the stored Gram matrix.

        Two runs with the same fingerprint write the same bytes, so a store with a matching fingerprint can be
        resumed; ``data_digest`` is the digest of the input array (see `ntkdist.datasets.digest`).
        """
        network = self.net.describe()
        if self.kernel.kind.startswith("empirical"):
            network = {**network, "width": self.network.width, "seed": self.network.seed}
        payload = {
            "data": data_digest,
            "network": network,
            "kernel": {"kind": self.kernel.kind, "dtype": self.kernel.dtype, "block": self.kernel.block},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_solver_size(solver: SolverSection, n: int) -> None:
    """Refuse solver settings that cannot work for an N×N matrix (ValueError naming the ``[solver]`` key)."""
    method = solver.resolved_method(n)
    if solver.k is not None:
        if method == "exact" and solver.k > n:
            raise ValueError(f"[solver] k: asks for {solver.k} eigenvalues of a {n}×{n} matrix; use k ≤ {n}")
        if method != "exact" and solver.k >= n:
            raise ValueError(f"[solver] k: the {method} solver computes k < N eigenvalues, got k = {solver.k} for "
                             f"N = {n}; use k ≤ {n - 1}, or method = \"exact\" for all of them")
    if method == "exact" and n > EXACT_MAX_N:
        gib = 16 * n * n / 2**30
        raise ValueError(
            f"[solver] method: \"exact\" holds the whole {n}×{n} matrix (about {gib:.0f} GiB with workspace); it "
            f"accepts n ≤ {EXACT_MAX_N}; use method = \"krylov\" (or \"auto\")"
        )
    if method == "exact" and solver.smallest > n:
        raise ValueError(f"[solver] smallest: asks for {solver.smallest} of the smallest eigenvalues of a {n}×{n} "
                         f"matrix; use smallest ≤ {n}")
    # LOBPCG works on a block of 3·smallest vectors [X, W, P], which must stay well inside R^N.
    if method != "exact" and 3 * solver.smallest >= n:
        raise ValueError(f"[solver] smallest: asks for {solver.smallest} of the smallest eigenvalues of a {n}×{n} "
                         f"matrix with an iterative method (LOBPCG's block holds 3·smallest vectors); use smallest "
                         f"< {max(n // 3, 1)}, or method = \"exact\"")


def load_config(path: str | os.PathLike, model=None):
    """Read and validate a TOML configuration file: a `Config`, or ``model.from_dict`` of it (a study's config).

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, or fails validation.
    """
    return (model or Config).from_dict(read_toml(path), source=str(path))


def read_toml(path: str | os.PathLike) -> dict:
    """The parsed TOML document at ``path`` (`ConfigError` naming the fix if it is missing or not TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file; pass the path of a TOML file such as examples/demo.toml")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax and run again") from None


def _where(loc: tuple) -> str:
    """('data', 'n') → '[data] n'; ('data',) → '[data]'."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return "(top level)"
    section, rest = parts[0], parts[1:]
    return f"[{section}]" + (f" {'.'.join(rest)}" if rest else "")


def explain(exc: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One paragraph naming every bad key of a failed validation of ``model`` (a model of sections; `Config`
    by default), what is wrong with it and the fix: the text of `ConfigError`. Study configurations
    (`ntkdist.studies`) validate their own sections and explain their errors with it too."""
    sections = {name: sorted(field.annotation.model_fields)
                for name, field in (model or Config).model_fields.items()}
    problems = []
    for err in exc.errors(include_url=False):
        loc, kind, msg = tuple(err["loc"]), err["type"], err["msg"]
        where = _where(loc)
        if kind == "extra_forbidden":
            if len(loc) == 1:
                problems.append(f"[{loc[0]}] is not a known section (known: {', '.join(sections)})")
            else:
                known = sections.get(str(loc[0]), [])
                problems.append(f"{where} is not a known key of [{loc[0]}] (known: {', '.join(known)})")
            continue
        if kind == "missing":
            problems.append(f"{where} is required")
            continue
        if kind == "value_error":
            # Our own validators phrase the whole problem; they may name a key inside the section.
            text = msg.removeprefix("Value error, ")
            head = text.split(":", 1)[0]
            if len(loc) == 1 and head in sections.get(str(loc[0]), []):
                problems.append(f"[{loc[0]}] {text}")
            elif not loc:
                problems.append(text)
            else:
                problems.append(f"{where}: {text}")
            continue
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        problems.append(f"{where}: {msg[0].lower()}{msg[1:]}{shown}")
    plural = "s" if len(problems) > 1 else ""
    where_from = f" {source}" if source else ""
    return f"Invalid configuration{where_from}: " + "; ".join(problems) + f". Fix the key{plural} named and run again."



# -- the reference -------------------------------------------------------------------------------------------------
#: The sections of a configuration, in the order the reference lists them.
SECTIONS = {"run": RunSection, "data": DataSection, "network": NetworkSection, "kernel": KernelSection,
            "solver": SolverSection, "cluster": ClusterSection}


def config_reference() -> str:
    """Every key of every section as markdown tables (type, default, meaning), generated from the schema above.

    README.md carries this text between its ``config-reference`` markers, and a test keeps the two equal:
    regenerate it with ``python -m ntkdist.config``.
    """
    lines = []
    for name, section in SECTIONS.items():
        lines += [f"**[{name}]**", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key, field in section.model_fields.items():
            default = ("required" if field.is_required() else "omitted" if field.default is None
                       else f"`{json.dumps(field.default)}`")
            lines.append(f"| `{key}` | {_type_name(field.annotation)} | {default} | {field.description} |")
        lines.append("")
    return "\n".join(lines)


def _type_name(annotation) -> str:
    """A TOML reader's name for a field's type: ``"a" \\| "b"`` for choices, ``int or null`` for optional ones."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f'"{arg}"' for arg in args)
    if args:  # a union (X | None) or list[X]
        if origin is list:
            return f"list of {_type_name(args[0])}"
        return " or ".join("omitted" if arg is type(None) else _type_name(arg) for arg in args)
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


if __name__ == "__main__":  # python -m ntkdist.config: the reference README.md carries
    print(config_reference())
