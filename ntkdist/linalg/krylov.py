"""Top-k eigenpairs by randomized block Krylov iteration with Rayleigh–Ritz, locking and certified errors.

The algorithm is Musco & Musco (2015), *Randomized Block Krylov Methods for Stronger and Faster Approximate
Singular Value Decomposition*, Algorithm 2, specialised to a symmetric matrix (Halko, Martinsson & Tropp 2011,
*Finding structure with randomness*, §4.4, Algorithm 4.4, and §5.3 for the eigenvalue post-processing):
the range of the Krylov matrix [Ω, KΩ, K²Ω, …, K^q Ω] is orthonormalised, K is projected onto it, and the Ritz
pairs of the projection approximate the top eigenpairs of K.

How the Krylov basis is grown (and why)
---------------------------------------
One pass over K costs minutes at scale, the vector arithmetic seconds, so nothing here spends a pass that the
textbook would not:

- We keep the basis Q *and* its product KQ (each pass returns KV for the block V it was asked for), so the
  Rayleigh–Ritz projection H = QᵀKQ, the Ritz vectors U = QS, their products KU = (KQ)S and the residuals
  R = KU − UΘ all come without another pass.
- The next block is built from the residuals R of the Ritz vectors of the current *window* (the top ``block``
  Ritz pairs). A Rayleigh–Ritz residual is orthogonal to the basis, and span(Q, R) = span(Q, KQ): in exact
  arithmetic this is exactly the block Krylov space [Ω, KΩ, …] of Musco & Musco (the same space block Lanczos
  builds, Golub & Underwood 1977), but it is built from vectors that are explicitly re-orthogonalised against
  the whole basis (classical Gram–Schmidt twice, Giraud, Langou & Rozložník 2005), so block Lanczos' loss of
  orthogonality never arises.
- **Locking** (soft locking, Knyazev 2001 §5; PRIMME's "locking" in Stathopoulos & McCombs 2010): a Ritz pair whose
  certified error already meets the tolerance contributes no residual to the next block, so later passes
  multiply only the directions that still need work. Locked vectors stay in the basis, where Rayleigh–Ritz keeps
  improving them for free.
- **Thick restart** (Wu & Simon 2000; Stathopoulos, Saad & Wu 1998): Q and KQ are N × m each; when m would exceed
  ``max_basis`` (by default what fits in ``BASIS_MEMORY_BYTES``), the basis is replaced by the top Ritz vectors
  and their products, U and KU — exact as KQ is, so a restart costs no pass.
- **Clusters.** Block Krylov converges for λ_i at a rate set by the gap between λ_i and λ_{b+1}, b the block size
  (Saad 1980, Thm 2; Musco & Musco Thm 13): when the k-th eigenvalue lies inside a large near-degenerate
  cluster (at d = 64 the quadratic spherical harmonics form a cluster of d(d+1)/2 − 1 = 2079 members) and the
  block ends inside it, that gap is tiny and a fixed block stalls. After each pass the solver predicts, from the
  Chebyshev bound and the Ritz values, how many passes θ_k still needs; when that exceeds the budget it grows the
  block past the cluster's edge (read off the Ritz values) by adding fresh random directions, and records it in
  ``info["growth"]``.

Certified errors come from `ntkdist.linalg.certify` (residual bound, Kato–Temple where a gap is certified, plus
the operator's own ``error_bound`` by Weyl). What is rigorous and what is probabilistic is stated there.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .certify import certified_errors, rounding_term
from .operator import SymmetricOperator
from .passes import EigenResult, PassBudgetExhausted, Product, run_program

#: Memory the driver may spend on the basis Q and its product KQ together (both N × m float64) before a
#: thick restart; at N = 10⁵ this is about 670 columns, at N = 8000 more than any run here uses.
BASIS_MEMORY_BYTES = 2 ** 30

#: Rows per slab when a product with the basis is formed: the temporaries are slab × b, not N × b (at N = 10⁵
#: an N × 150 temporary is 120 MB; a slab is 5 MB), so the driver's peak is its arrays, not their scratch.
SLAB_ROWS = 4096

#: Singular values of a (unit-column) candidate block below this fraction of the largest are dropped: such
#: directions are numerically already in the basis or duplicates of one another.
RANK_TOLERANCE = 1e-8

#: Fraction of the remaining pass budget the Chebyshev prediction may use before the block is grown; the
#: prediction is optimistic (Ritz values lie below the eigenvalues they approximate), hence the margin.
GROWTH_BUDGET_FRACTION = 0.5


def default_block(k: int, n: int) -> int:
    """Block size for the top ``k``: ``max(k + 50, ⌈1.5 k⌉)``, at most ``n``.

    Why: block Krylov converges for λ_k at a rate set by the gap between λ_k and λ_{b+1} (Musco & Musco 2015,
    Thm 13), so the block carries guard vectors beyond k; on the depth-3 ReLU NTK (N = 8000, d = 16) a block of
    150–200 for k = 100 reaches 1e-10 in about 5 passes.
    """
    return int(min(n, max(k + 50, math.ceil(1.5 * k))))


def block_krylov_program(n: int, k: int, *, seed: int, tol: float, max_passes: int, block: int | None = None,
                         vectors: bool = False, operator_error: float = 0.0, max_block: int | None = None,
                         max_basis: int | None = None, grow: bool = True):
    """Randomized block Krylov iteration for the k largest eigenpairs, as a reverse-communication program.

    Musco & Musco (2015), Algorithm 2 (block Krylov range finder, with Rayleigh–Ritz post-processing as in
    Halko, Martinsson & Tropp 2011, Algorithm 4.4 and §5.3), extended with locking, thick restart and block
    growth at clusters (see the module docstring). A generator: it yields `Product` requests and returns an
    `EigenResult`; run it with `ntkdist.linalg.passes.run_program` or alongside other programs with
    `run_programs`.

    Parameters
    ----------
    n : int
        Dimension of the operator.
    k : int
        Number of eigenpairs, 1 ≤ k < n.
    seed : int
        Seed of the Gaussian starting block Ω (and of the directions added when the block grows).
    tol : float
        Relative tolerance: pair i is converged (and locked) when its certified error, storage error excluded,
        is at most ``tol·|θ_i|``.
    max_passes : int
        Passes this program may ask for; after the last one it returns its best certified result.
    block : int, optional
        Block size b (default `default_block`: ``max(k + 50, 1.5k)``).
    vectors : bool
        Return the k Ritz vectors (N × k) as well.
    operator_error : float
        η ≥ ‖K_operator − K‖₂, added to every error bound by Weyl's inequality. It is outside the solver's
        control, so convergence is judged without it (``info["operator_error_dominates"]`` says when it is
        larger than the tolerance).
    max_block : int, optional
        Largest block the cluster handling may grow to (default ``min(n // 2, 4096)``; never below ``block``,
        never above ``max_basis // 2``).
    max_basis : int, optional
        Largest basis (columns of Q) before a thick restart (default: what fits in `BASIS_MEMORY_BYTES` for Q and
        KQ together, at least 2·block: 671 columns at N = 10⁵). It also caps the block growth at half of it, so
        a cluster as large as d = 64's (≈ 2150 eigenvalues down to its edge) needs ``max_basis`` ≳ 4500.
    grow : bool
        Allow the block to grow when k cuts through a cluster.

    Returns
    -------
    EigenResult
        ``method="krylov"``; values descending; ``errors`` bound |λ_i − θ_i| for the i-th largest eigenvalue of
        the requested matrix (probabilistic only in the assumption that no eigenvalue above θ_k was missed, see
        `ntkdist.linalg.certify`); ``info`` holds the block sizes, basis sizes, locked counts and worst relative
        error per pass, the driver-side arithmetic time per pass (orthogonalisation, Rayleigh–Ritz), restarts and
        block growth.

    Notes
    -----
    Per pass: one product K·V with V of width ≤ b; then O(N·m·b) flops of re-orthogonalisation and Rayleigh–Ritz
    for a basis of m columns. The driver holds Q, KQ (N × m each) and a few N × b blocks.

    Long because: a program's state lives in its local variables across the yields of its passes (reverse
    communication, `ntkdist.linalg.passes`): the basis, the Ritz step, the window, the pending growth and the
    start block's coordinates change together in one loop whose order (certify, grow, form candidates, restart,
    orthogonalise) is the algorithm; the sizes (`_block_sizes`) and the result (`_krylov_result`) are helpers.
    """
    _validate(n, k, tol, max_passes)
    b, max_block, max_basis = _block_sizes(n, k, block, max_block, max_basis)
    rng = np.random.default_rng(seed)
    basis = _Basis(n)
    info = {"block": b, "block_per_pass": [], "basis_per_pass": [], "locked_per_pass": [],
            "worst_relative_error_per_pass": [], "arithmetic_seconds_per_pass": [], "restarts": 0, "growth": [],
            "operator_error": float(operator_error), "max_basis": max_basis, "max_block": max_block,
            "stopped_by": None}

    omega = rng.standard_normal((n, b))
    V = _orthonormal_directions(omega, basis)
    # Coordinates of the start block in the first basis block (Ω = Q₁C), for the quadrature count of a cluster.
    start_coords = V.T @ omega
    del omega
    passes = 0
    ritz = None
    window = b
    pending_growth = 0
    last_growth = -10
    while True:
        try:
            KV = yield Product(V)
        except PassBudgetExhausted:
            info["stopped_by"] = "pass budget of the run"
            break
        passes += 1
        started = time.perf_counter()
        basis.append(V, KV)
        del V, KV
        ritz = _rayleigh_ritz(basis, min(basis.size, max(window, k)))
        solver_errors, gap_certified = _certify(ritz, n, basis.size)
        relative = solver_errors / np.maximum(np.abs(ritz.values[:ritz.window]), np.finfo(np.float64).tiny)
        locked = relative <= tol
        info["block_per_pass"].append(int(basis.blocks[-1].shape[1]))
        info["basis_per_pass"].append(basis.size)
        info["locked_per_pass"].append(int(np.count_nonzero(locked[:k])))
        info["worst_relative_error_per_pass"].append(float(np.max(relative[:k])))
        ritz.errors, ritz.gap_certified, ritz.relative = solver_errors, gap_certified, relative
        if np.all(locked[:k]):
            info["stopped_by"] = "converged"
            break
        if passes >= max_passes:
            info["stopped_by"] = "max_passes"
            break
        if basis.size >= n:
            info["stopped_by"] = "basis spans the whole space"
            break
        # A grown block needs two passes before its Ritz values say anything new.
        if grow and passes - last_growth > 2 and window < max_block:
            weights = None
            if start_coords is not None:
                # ‖Ωᵀu_j‖² / b for every Ritz vector u_j: Ω lies in the first block, Ω = Q₁C.
                b0 = start_coords.shape[0]
                weights = np.sum((start_coords.T @ ritz.S[:b0]) ** 2, axis=0) / start_coords.shape[1]
            target, detail = _growth_target(ritz, k, window, tol, max_passes - passes, max_block, weights)
            if target > window:
                info["growth"].append({"after_pass": passes, "from": window, "to": target,
                                       "theta_k": float(ritz.values[k - 1]), **detail,
                                       "reason": "predicted passes for θ_k exceed the budget: the block ends too "
                                                 "close to θ_k (k cuts through a cluster)"})
                pending_growth = target - window
                window = target
                last_growth = passes
        # Next block: residuals of the unlocked window pairs (the Krylov directions still needed) and, after a
        # growth, fresh random directions that start new Krylov sequences reaching past the cluster.
        unlocked = np.flatnonzero(~locked[:ritz.window])
        candidates = ritz.residuals if unlocked.size == ritz.residuals.shape[1] else ritz.residuals[:, unlocked]
        ritz.residuals = None  # memory: at N = 10⁵ every N × b array is 80–160 MB
        norms = np.linalg.norm(candidates, axis=0)
        if not np.all(norms > 0):
            candidates, norms = candidates[:, norms > 0], norms[norms > 0]
        candidates /= norms
        if pending_growth:
            candidates = np.concatenate([candidates, rng.standard_normal((n, pending_growth)) / math.sqrt(n)], axis=1)
            pending_growth = 0
        # Restart before the new block is formed (it will have at most this many columns): the orthogonalisation
        # then runs against the smaller basis, and the old Q is freed before its scratch is needed.
        width = min(window, candidates.shape[1])
        if basis.size + width > max_basis:
            keep = max(min(basis.size, window, max_basis - width), k)
            basis.restart(ritz, keep)
            start_coords = None  # Ω has left the basis
            info["restarts"] += 1
            # The residuals are orthogonal to the old basis, hence to the Ritz vectors kept from it.
        if not vectors:
            ritz.vectors = None  # a restart already took what it needs
        V = _orthonormal_directions(candidates, basis, limit=window, overwrite=True)
        del candidates
        if V.shape[1] == 0:
            info["stopped_by"] = "no new directions (Krylov space exhausted)"
            break
        info["arithmetic_seconds_per_pass"].append(time.perf_counter() - started)

    return _krylov_result(ritz, k, passes=passes, window=window, tol=tol, operator_error=operator_error,
                          vectors=vectors, info=info)


def _block_sizes(n: int, k: int, block: int | None, max_block: int | None,
                 max_basis: int | None) -> tuple[int, int, int]:
    """The start block b, the largest block and the largest basis of `block_krylov_program` (its Parameters)."""
    b = default_block(k, n) if block is None else int(block)
    if not 1 <= b <= n:
        raise ValueError(f"block: must be between 1 and n = {n}, got {block}")
    b = max(b, min(k, n))
    max_block = max(b, min(n // 2, 4096) if max_block is None else int(max_block))
    if max_basis is None:
        # The memory budget decides, but never below two blocks (one kept through a restart, one new).
        max_basis = max(2 * b, BASIS_MEMORY_BYTES // (16 * n))
    max_basis = min(n, max(int(max_basis), b + k))
    # A thick restart keeps the window and adds one block, so the block may grow to half the basis at most.
    max_block = max(b, min(max_block, max_basis // 2))
    return b, max_block, max_basis


def _krylov_result(ritz, k: int, *, passes: int, window: int, tol: float, operator_error: float, vectors: bool,
                   info: dict) -> EigenResult:
    """The `EigenResult` of `block_krylov_program` from its last Rayleigh–Ritz step (None: no pass was made)."""
    if ritz is None:  # budget spent before the first product
        nan = np.full(k, np.nan)
        return EigenResult(method="krylov", values=nan, errors=np.full(k, np.inf), residual_norms=nan,
                           gap_certified=np.zeros(k, dtype=bool), passes=0, converged=False, info=info)
    values = ritz.values[:k].copy()
    errors = ritz.errors[:k] + operator_error
    info["operator_error_dominates"] = bool(operator_error > tol * np.min(np.abs(values)))
    info["final_block"] = window
    return EigenResult(
        method="krylov", values=values, errors=errors, residual_norms=ritz.residual_norms[:k].copy(),
        gap_certified=ritz.gap_certified[:k].copy(), passes=passes, converged=bool(np.all(ritz.relative[:k] <= tol)),
        vectors=ritz.vectors[:, :k].copy() if vectors else None, info=info,
    )


def topk_eigenpairs(operator: SymmetricOperator, k: int, *, seed: int = 0, tol: float = 1e-10,
                    max_passes: int = 20, block: int | None = None, vectors: bool = False,
                    **options) -> EigenResult:
    """The k largest eigenvalues of ``operator`` with certified error bounds, by randomized block Krylov.

    The plain-function form of `block_krylov_program` (Musco & Musco 2015, Alg. 2 with Rayleigh–Ritz); the
    operator's ``error_bound`` is added to every bound (Weyl). ``options`` go to `block_krylov_program`
    (``max_block``, ``max_basis``, ``grow``).

    Examples
    --------
    >>> import numpy as np
    >>> from ntkdist.linalg import DenseOperator
    >>> A = np.diag(np.arange(1.0, 201.0))
    >>> result = topk_eigenpairs(DenseOperator(A), 3, seed=0)
    >>> np.round(result.values, 6).tolist(), bool(np.all(result.errors < 1e-6))
    ([200.0, 199.0, 198.0], True)
    """
    n = operator.shape[0]
    program = block_krylov_program(n, k, seed=seed, tol=tol, max_passes=max_passes, block=block, vectors=vectors,
                                   operator_error=float(operator.error_bound), **options)
    return run_program(operator, program)


# -- internals ---------------------------------------------------------------------------------------------------
def _validate(n: int, k: int, tol: float, max_passes: int) -> None:
    if not 1 <= k < n:
        raise ValueError(f"k: must satisfy 1 ≤ k < n = {n}, got {k}")
    if not tol > 0:
        raise ValueError(f"tol: must be > 0, got {tol}")
    if max_passes < 1:
        raise ValueError(f"max_passes: must be ≥ 1, got {max_passes}")


class _Basis:
    """An orthonormal basis Q kept as a list of N × b blocks, their products KQ, and H = QᵀKQ.

    Blocks rather than one growing array, so appending never copies the basis (at N = 10⁵ each block of 200
    columns is 160 MB).
    """

    def __init__(self, n: int):
        self.n = n
        self.blocks: list[np.ndarray] = []
        self.products: list[np.ndarray] = []
        self.H = np.zeros((0, 0))

    @property
    def size(self) -> int:
        return self.H.shape[0]

    def project(self, W: np.ndarray) -> np.ndarray:
        """QᵀW."""
        if not self.blocks:
            return np.zeros((0, W.shape[1]))
        return np.concatenate([Qb.T @ W for Qb in self.blocks], axis=0)

    def combine(self, arrays: list[np.ndarray], S: np.ndarray) -> np.ndarray:
        """[A₁ A₂ …]·S for the list of blocks ``arrays`` (Q or KQ), formed slab by slab of rows."""
        if not arrays:
            return np.zeros((self.n, S.shape[1]))
        out = np.empty((self.n, S.shape[1]))
        pieces = _split_rows(arrays, S)
        for rows in _slabs(self.n):
            out[rows] = sum_of_products(pieces, rows)
        return out

    def remove_from(self, W: np.ndarray) -> np.ndarray:
        """W − Q(QᵀW), in place (one classical Gram–Schmidt sweep), slab by slab of rows."""
        if not self.blocks:
            return W
        pieces = _split_rows(self.blocks, self.project(W))
        for rows in _slabs(self.n):
            W[rows] -= sum_of_products(pieces, rows)
        return W

    def append(self, V: np.ndarray, KV: np.ndarray) -> None:
        """Add an orthonormal block V (orthogonal to Q) and its product; extend H by [Q V]ᵀ(KV)."""
        m, r = self.size, V.shape[1]
        column = np.concatenate([self.project(KV), V.T @ KV], axis=0)  # (m + r) × r
        H = np.zeros((m + r, m + r))
        H[:m, :m] = self.H
        H[:, m:] = column
        H[m:, :m] = column[:m].T  # K is symmetric: VᵀKQ = (QᵀKV)ᵀ
        H[m:, m:] = 0.5 * (column[m:] + column[m:].T)
        self.H = H
        self.blocks.append(V)
        self.products.append(KV)

    def restart(self, ritz: "_Ritz", keep: int) -> None:
        """Thick restart: replace Q, KQ by the top ``keep`` Ritz vectors U = QS and their products KU = (KQ)S."""
        S = ritz.S[:, :keep]
        if ritz.vectors is not None and ritz.vectors.shape[1] >= keep:
            U = ritz.vectors[:, :keep]  # already QS: reuse it rather than hold a second N × keep array
        else:
            U = self.combine(self.blocks, S)
        self.blocks = [U]  # the old Q blocks are freed here, before KU is formed
        KU = self.combine(self.products, S)
        self.products = [KU]
        self.H = np.diag(ritz.values[:keep])  # UᵀKU = SᵀHS = Θ


class _Ritz:
    """Rayleigh–Ritz pairs of the basis: all values, and vectors/residuals for the top ``window``."""

    def __init__(self, values, S, vectors, residuals, residual_norms, window, smallest):
        self.values, self.S, self.vectors, self.residuals = values, S, vectors, residuals
        self.residual_norms, self.window, self.smallest = residual_norms, window, smallest
        self.errors = self.gap_certified = self.relative = None


def _slabs(n: int):
    return (slice(start, min(start + SLAB_ROWS, n)) for start in range(0, n, SLAB_ROWS))


def _split_rows(arrays: list[np.ndarray], S: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair each block of columns with its rows of S: [A₁ A₂ …]·S = Σ_b A_b·S_b."""
    pieces, start = [], 0
    for A in arrays:
        pieces.append((A, S[start:start + A.shape[1]]))
        start += A.shape[1]
    return pieces


def sum_of_products(pieces: list[tuple[np.ndarray, np.ndarray]], rows: slice) -> np.ndarray:
    """Σ_b A_b[rows]·S_b: one slab of [A₁ A₂ …]·S."""
    total = None
    for A, S in pieces:
        term = A[rows] @ S
        if total is None:
            total = term
        else:
            total += term
    return total


def _rayleigh_ritz(basis: _Basis, window: int) -> _Ritz:
    """Eigenpairs of H = QᵀKQ (descending); Ritz vectors U = QS, residuals R = (KQ)S − UΘ for the top ``window``.

    No pass: KQ is kept. The residual of a Rayleigh–Ritz pair is orthogonal to the basis, which is why it is the
    next Krylov direction.
    """
    theta, S = np.linalg.eigh(basis.H)
    theta, S = theta[::-1], S[:, ::-1]
    window = min(window, theta.size)
    Sw = S[:, :window]
    U = basis.combine(basis.blocks, Sw)
    R = basis.combine(basis.products, Sw)
    for rows in _slabs(basis.n):
        R[rows] -= U[rows] * theta[:window]
    return _Ritz(theta, S, U, R, np.linalg.norm(R, axis=0), window, float(theta[-1]))


def _certify(ritz: _Ritz, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Certified errors (storage error excluded) of the window's Ritz values.

    The unknown rest of the spectrum lies below the window; under the no-missed-eigenvalue assumption its
    largest member λ_{w+1} ≤ λ_w ≤ θ_w + ρ_w, which is the outer edge handed to `certified_errors`. When the basis
    is the whole space nothing is unknown.
    """
    theta = ritz.values[:ritz.window]
    rho = ritz.residual_norms
    if m >= n and ritz.window == m:
        outer = -np.inf
    else:
        outer = float(theta[-1] + rho[-1] + rounding_term(n, np.max(np.abs(theta))))
    return certified_errors(theta, rho, n=n, side="largest", outer_edge=outer)


def _orthonormal_directions(W: np.ndarray, basis: _Basis, limit: int | None = None,
                            overwrite: bool = False) -> np.ndarray:
    """An orthonormal basis of the part of range(W) orthogonal to Q, at most ``limit`` columns.

    Classical Gram–Schmidt twice against Q ("twice is enough", Giraud et al. 2005), then SVQB (Stathopoulos &
    Wu 2002, "A block orthogonalization procedure with constant synchronization requirements", SIAM J. Sci.
    Comput. 23(6), Alg. 4): with D the column norms, the eigendecomposition of the scaled Gram matrix
    D⁻¹WᵀWD⁻¹ = VΛVᵀ gives the dominant directions W·D⁻¹VΛ^{-1/2}; those with σ = √λ below `RANK_TOLERANCE`·σ₁
    are dropped — dependent or already spanned directions are removed rather than normalised into noise. A second
    sweep (Gram–Schmidt, SVQB without dropping) restores orthogonality to working precision, since the first
    leaves an error of about ε·κ² ≤ ε/`RANK_TOLERANCE`². Every step writes into W itself, slab by slab, so the
    driver needs no N-row scratch (the returned block is a view of W when ``overwrite``).
    """
    W = np.array(W, dtype=np.float64, copy=not overwrite)
    free = basis.n - basis.size
    for sweep in range(2):
        for _ in range(2):
            basis.remove_from(W)
        W = _svqb(W, RANK_TOLERANCE if sweep == 0 else 0.0, limit if sweep == 0 else None, free)
        if W.shape[1] == 0:
            return np.zeros((basis.n, 0))
    return W


def _svqb(W: np.ndarray, tolerance: float, limit: int | None, free: int) -> np.ndarray:
    """One SVQB sweep in place (see `_orthonormal_directions`): the kept directions, as the leading columns of W."""
    norms = np.linalg.norm(W, axis=0)
    if norms.size == 0 or not norms.max() > 0:
        return W[:, :0]
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    gram = (W.T @ W) * scale[:, None] * scale[None, :]
    lam, vectors = np.linalg.eigh(0.5 * (gram + gram.T))
    lam, vectors = lam[::-1], vectors[:, ::-1]
    if not lam[0] > 0:
        return W[:, :0]
    rank = int(np.count_nonzero(lam > max(tolerance ** 2, np.finfo(np.float64).tiny) * lam[0]))
    if limit is not None:
        rank = min(rank, int(limit))
    rank = min(rank, free)
    combination = scale[:, None] * vectors[:, :rank] / np.sqrt(lam[:rank])
    for rows in _slabs(W.shape[0]):
        W[rows, :rank] = W[rows] @ combination
    return W[:, :rank]


def _predicted_passes(theta_k: float, theta_edge: float, floor: float, reduction: float) -> float:
    """Passes for block Krylov to reduce θ_k's error by ``reduction`` when the block ends at ``theta_edge``.

    Saad (1980), Thm 2 / Musco & Musco (2015), Lemma 5: the eigenvalue error after q passes is at most
    C·T_q(1 + 2γ)⁻², γ = (λ_k − λ_{b+1})/(λ_{b+1} − λ_min), T_q the Chebyshev polynomial; so
    q ≥ acosh(reduction^{-1/2})/acosh(1 + 2γ).
    """
    spread = theta_edge - floor
    gamma = (theta_k - theta_edge) / spread if spread > 0 else np.inf
    if not gamma > 0:
        return np.inf
    return math.acosh(max(1.0, reduction ** -0.5)) / math.acosh(1.0 + 2.0 * min(gamma, 1e12))


def _growth_target(ritz: _Ritz, k: int, window: int, tol: float, remaining: int, max_block: int,
                   start_weights: np.ndarray | None) -> tuple[int, dict]:
    """The block the spectrum asks for: ``window`` if it suffices, else one reaching past the cluster around θ_k.

    θ_k's error must fall from its current relative value to ``tol``. With the block ending at θ_{b+1},
    `_predicted_passes` says how many passes that takes; if that is more than `GROWTH_BUDGET_FRACTION` of the
    remaining budget, k cuts through a cluster that reaches past the block. Solving the same Chebyshev bound for
    the edge value θ_edge that *would* fit the budget, the new block must hold every eigenvalue above θ_edge.
    Ritz values alone undercount them (those deep in the basis lie below their eigenvalues), so they are counted
    by block Gauss quadrature on the random start block Ω (Golub & Meurant 2010, ch. 7; the estimator of
    stochastic Lanczos quadrature, Ubaru, Chen & Saad 2017, eq. 3.2, with the block's b columns as probes):
    #{λ > t} = E tr(Ωᵀ 1[K > t] Ω)/b ≈ Σ_{θ_j > t} ‖Ωᵀ u_j‖²/b, which needs no pass. Its standard deviation
    is about √(2c/b) for a count c, a few members even for the 2080-fold cluster at d = 64. When Ω is no longer in
    the basis (after a restart) the block is doubled instead.
    """
    theta = ritz.values
    m = theta.size
    if m <= window or remaining < 1:
        return window, {}
    reduction = min(1.0, max(tol / max(float(ritz.relative[k - 1]), tol), 1e-16))
    floor = ritz.smallest
    allowed = max(1.0, GROWTH_BUDGET_FRACTION * remaining)
    predicted = _predicted_passes(theta[k - 1], theta[window], floor, reduction)
    if predicted <= allowed:
        return window, {}
    # Chebyshev bound solved for the edge: acosh(1 + 2γ) = acosh(reduction^{-1/2})/allowed.
    gamma = 0.5 * (math.cosh(math.acosh(reduction ** -0.5) / allowed) - 1.0)
    edge = (theta[k - 1] + gamma * floor) / (1.0 + gamma)
    detail = {"predicted_passes": float(predicted), "allowed_passes": float(allowed), "edge_value": float(edge)}
    if start_weights is None:
        target = 2 * window
    else:
        count = float(np.sum(start_weights[theta > edge]))
        detail["estimated_count_above_edge"] = count
        target = max(int(math.ceil(1.2 * count)) + 16, int(1.25 * window))
    return int(min(max_block, target)), detail
