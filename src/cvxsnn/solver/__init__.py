"""Certified convex solver of the spike-dictionary program (SPEC section 4).

    min_{W, b}  F(D W + 1 b^T, Y) + rho * R(W)

with F the squared / logistic / softmax loss (per output head, weighted) and R the entrywise
l1 or row-wise group l2 penalty. Every solve returns a duality-gap certificate;
:func:`duality_gap` certifies any (W, b), including another solver's answer.
"""

from cvxsnn.solver.certificate import Certificate, Dictionary, duality_gap, prepare_dictionary
from cvxsnn.solver.engine import (
    RHO_MAX_FLOOR,
    STOP_RULE,
    ConvergenceWarning,
    SolveResult,
    estimate_solve_bytes,
    rho_max,
    solve,
)
from cvxsnn.solver.losses import LOSSES
from cvxsnn.solver.path import rho_grid, solve_path
from cvxsnn.solver.penalties import PENALTIES
from cvxsnn.solver.support import estimate_reduction_bytes, reduce_support

__all__ = [
    "LOSSES",
    "PENALTIES",
    "RHO_MAX_FLOOR",
    "STOP_RULE",
    "Certificate",
    "ConvergenceWarning",
    "Dictionary",
    "SolveResult",
    "duality_gap",
    "estimate_reduction_bytes",
    "estimate_solve_bytes",
    "prepare_dictionary",
    "reduce_support",
    "rho_grid",
    "rho_max",
    "solve",
    "solve_path",
]
