"""The human-readable report of a run: a log-log plot of the spectrum and a short markdown summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_spectrum(eigenvalues: np.ndarray, path: Path, *, title: str, kind: str = "ntk") -> Path:
    """Eigenvalues against their index on log-log axes (non-positive eigenvalues are left out and counted)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    values = np.asarray(eigenvalues, dtype=np.float64)
    index = np.arange(1, len(values) + 1)
    positive = values > 0
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.loglog(index[positive], values[positive], ".", ms=3, color="C0", label=f"{kind.upper()} Gram eigenvalues")
    dropped = int((~positive).sum())
    if dropped:
        ax.text(0.02, 0.02, f"{dropped} eigenvalue(s) ≤ 0 not shown", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("index ℓ")
    ax.set_ylabel("λ_ℓ")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_markdown(config, store, eigenvalues: np.ndarray, paths: dict) -> str:
    """A short markdown summary: the run, the spectrum's headline numbers, the stage timings, the paths."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    trace = float(store.diagonal().sum())
    n = store.n
    lam_max, lam_min = float(values[0]), float(values[-1])
    all_modes = len(values) == n
    stages = store.meta["stages"]
    lines = [
        f"# ntkdist run `{config.run.name}`",
        "",
        f"- data: {stages.get('prepare', {}).get('data', config.data.source)}; N = {n}, d = {store.dim}",
        f"- network: depth {config.network.depth}, {config.network.activation}, weight_var = "
        f"{config.network.weight_var:g}, bias_var = {config.network.bias_var:g} (NTK parameterization)",
        f"- kernel: {config.kernel.kind.upper()}, stored as {config.kernel.dtype} in blocks of {store.block}",
        f"- solver: {config.solver.method}, {len(values)} of {n} eigenvalues",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| λ_max | {lam_max:.6e} |",
        f"| {'λ_min' if all_modes else f'λ_{len(values)}'} | {lam_min:.6e} |",
        f"| trace (Σ K_ii) | {trace:.6e} |",
        f"| effective rank Tr/λ_max | {trace / lam_max:.4f} |",
    ]
    if all_modes and lam_min > 0:
        lines.append(f"| condition number | {lam_max / lam_min:.4e} |")
    lines += ["", "Top eigenvalues: " + ", ".join(f"{v:.4e}" for v in values[:8]), "", "| stage | seconds |",
              "| --- | --- |"]
    for name in ("prepare", "build", "solve"):
        if name in stages and "seconds" in stages[name]:
            lines.append(f"| {name} | {stages[name]['seconds']} |")
    lines += ["", f"- store: `{store.path}`", f"- plot: `{paths['plot']}`", ""]
    return "\n".join(lines)
