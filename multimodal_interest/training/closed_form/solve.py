"""Solves of the chosen setting: the exact reduced-rank fit, and the approximate one over
every fit row (subset of regressors, "Nyström") when there are too many rows for ``[n, n]``.

Exact (``n`` fit rows): ``V`` ``[N_t, r]`` the top ``r`` right singular vectors of the fitted
scores ``A = K G Y = Y - lam G Y`` (never formed when large: a randomized range finder applies
``A`` and ``A^T`` through the Cholesky factor), and ``alpha = G Y V`` ``[n, r]``.

Approximate (``n`` rows, ``m`` landmark rows ``L``): the scores are ``k(z, L) beta`` with
``beta = (K_Ln K_nL + lam K_LL)^-1 K_Ln Y`` ``[m, N_t]``, the kernel ridge restricted to the
landmarks' span; ``K_Ln K_nL`` ``[m, m]`` and ``K_Ln Y`` ``[m, N_t]`` are summed a chunk of rows
at a time, so memory does not grow with ``n``. ``V`` comes from the landmarks' fitted scores
``K_LL beta``, and ``alpha = beta V``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from multimodal_interest.training.closed_form.kernels import combine

DENSE_SVD = 1 << 25  # n * N_t at most: the fitted scores are formed and decomposed exactly
SOLVE_COLUMNS = 4096  # target items solved for at once (float64) in NystromSums.beta
OVERSAMPLE, POWER_ITERS = 16, 2  # the randomized range finder's extra columns and power iterations


def top_right_vectors(apply: Callable[[torch.Tensor], torch.Tensor], apply_t: Callable[[torch.Tensor], torch.Tensor],
                      shape: tuple[int, int], rank: int, seed: int = 0) -> torch.Tensor:
    """``[N, rank]`` orthonormal: the top right singular vectors of an ``[n, N]`` matrix ``A``
    given as ``apply(x [N, q]) = A x`` and ``apply_t(z [n, q]) = A^T z`` (randomized range
    finder with :data:`POWER_ITERS` power iterations on ``A^T``)."""
    n, big_n = shape
    q = min(rank + OVERSAMPLE, n, big_n)
    g = torch.Generator().manual_seed(seed)
    z = apply_t(torch.randn(n, q, generator=g))  # [N, q]
    for _ in range(POWER_ITERS):
        z = torch.linalg.qr(z)[0]
        z = apply_t(torch.linalg.qr(apply(z))[0])
    basis = torch.linalg.qr(z)[0]  # [N, q]
    w = torch.linalg.svd(apply(basis), full_matrices=False)[2]  # [q, q]: right vectors of A basis
    return (basis @ w.T)[:, :rank]


def exact_factors(chol: torch.Tensor, y: sp.csr_matrix, lam: float, rank: int) -> np.ndarray:
    """``V [N_t, rank]`` of the exact fit whose ``K + lam I`` has Cholesky factor ``chol``."""
    yt = sp.csr_matrix(y.T, dtype=np.float32)
    y = sp.csr_matrix(y, dtype=np.float32)
    if y.shape[0] * y.shape[1] <= DENSE_SVD:
        dense = torch.from_numpy(y.toarray())
        fitted = dense - lam * torch.cholesky_solve(dense, chol)
        return torch.linalg.svd(fitted, full_matrices=False)[2].T[:, :rank].numpy()

    def apply(x: torch.Tensor) -> torch.Tensor:  # A x = Y x - lam G (Y x)
        yx = torch.from_numpy(np.ascontiguousarray(y @ x.numpy()))
        return yx - lam * torch.cholesky_solve(yx, chol)

    def apply_t(z: torch.Tensor) -> torch.Tensor:  # A^T z = Y^T (z - lam G z)
        return torch.from_numpy(np.ascontiguousarray(yt @ (z - lam * torch.cholesky_solve(z, chol)).numpy()))

    return top_right_vectors(apply, apply_t, y.shape, rank).numpy()


def coefficients(chol: torch.Tensor, y: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
    """``alpha = G Y V`` ``[n, r]``."""
    yv = torch.from_numpy(np.ascontiguousarray(sp.csr_matrix(y, dtype=np.float32) @ v))
    return torch.cholesky_solve(yv, chol).numpy()


def process_share(chunks: range) -> range:
    """This process's share of ``chunks`` (every ``N``-th from its rank) when ``N`` processes
    were launched together (``accelerate launch``, torchrun); all of them alone."""
    state = _processes()
    return chunks[state.process_index::state.num_processes]


def all_summed(*arrays: np.ndarray) -> None:
    """Each array replaced, in place, by its sum over the launched processes (an all-reduce;
    every process gets the same sum); nothing to do alone."""
    state = _processes()
    if state.num_processes == 1:
        return
    import torch.distributed as dist

    on_cpu = state.device.type == "cpu"  # gloo reduces the array's own memory; NCCL wants it on the GPU
    for a in arrays:
        t = torch.from_numpy(a) if on_cpu else torch.from_numpy(a).to(state.device)
        dist.all_reduce(t)
        if not on_cpu:
            a[...] = t.cpu().numpy()


def _processes():
    """accelerate's ``PartialState``: joins the launched processes in one group (gloo on CPUs)."""
    from accelerate import PartialState

    from multimodal_interest.parallel import cpu_only

    return PartialState(cpu=cpu_only())


class NystromSums:
    """``K_Ln K_nL`` ``[m, m]`` (float64) and ``K_Ln Y`` ``[m, N_t]`` over every fit row, from
    ``chunks`` of ``(kernels to the landmarks {b: [c, m]}, targets [c, N_t])``. Launched in
    several processes, each gives its share of the chunks (:func:`process_share`) and the sums
    are all-reduced: every process holds the sums over every chunk."""

    def __init__(self, chunks: Iterator[tuple[dict, sp.csr_matrix]], weights: dict[str, float], m: int, n_t: int):
        self.kk = np.zeros((m, m))
        ky_t = np.zeros((n_t, m), dtype=np.float32)  # K_nL^T Y, stored [N_t, m]: each chunk adds a row-major product
        rows = np.zeros(1)
        for kcl, y in chunks:
            k = combine(kcl, weights)  # [c, m]
            k64 = k.astype(np.float64)
            self.kk += k64.T @ k64  # numpy sees the symmetric product: half the work of a general one
            ky_t += sp.csr_matrix(sp.csr_matrix(y, dtype=np.float32).T) @ k  # [N_t, m]; a transposed add was 15x slower
            rows += k.shape[0]
        all_summed(self.kk, ky_t, rows)
        self.ky = ky_t.T  # [m, N_t] (a view)
        self.rows = int(rows[0])

    def factor(self, kll: np.ndarray, lam: float) -> torch.Tensor:
        """The Cholesky factor of ``A = K_Ln K_nL + lam K_LL`` ``[m, m]`` (float64; ``kll`` the
        weighted ``K_LL``): what :meth:`scores` and :meth:`beta` solve with."""
        a = self.kk + lam * kll.astype(np.float64)
        a[np.diag_indices_from(a)] += 1e-6 * max(float(np.trace(a)) / len(a), 1e-12)  # K_LL may be singular
        return torch.linalg.cholesky(torch.from_numpy(a))

    def scores(self, chol: torch.Tensor, kxl: np.ndarray) -> np.ndarray:
        """``[X, N_t]`` ``kxl @ beta`` for rows ``kxl [X, m]``, solved for the ``X`` rows
        (``(A^-1 kxl^T)^T K_LnY``, ``chol`` from :meth:`factor`) instead of for every target
        item: cheap when ``X << N_t``."""
        x = torch.cholesky_solve(torch.from_numpy(np.ascontiguousarray(kxl.T, dtype=np.float64)), chol)  # [m, X]
        return x.float().numpy().T @ self.ky

    def beta(self, chol: torch.Tensor) -> np.ndarray:
        """``[m, N_t]`` the landmarks' coefficients ``A^-1 K_LnY`` (``chol`` from :meth:`factor`)."""
        out = np.empty(self.ky.shape, dtype=np.float32)
        for lo in range(0, out.shape[1], SOLVE_COLUMNS):  # float64 a slice at a time, not [m, N_t]
            part = torch.from_numpy(self.ky[:, lo:lo + SOLVE_COLUMNS]).double()
            out[:, lo:lo + SOLVE_COLUMNS] = torch.cholesky_solve(part, chol).float().numpy()
        return out


def landmark_factors(kll: np.ndarray, beta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha [m, r], V [N_t, r])`` from the landmarks' fitted scores ``K_LL beta``."""
    fitted = torch.from_numpy(kll @ beta)  # [m, N_t]
    if rank >= min(fitted.shape) or fitted.numel() <= DENSE_SVD:
        v = torch.linalg.svd(fitted, full_matrices=False)[2].T[:, :rank]
    else:
        v = top_right_vectors(lambda x: fitted @ x, lambda z: fitted.T @ z, tuple(fitted.shape), rank)
    v = v.numpy()
    return beta @ v, v
