"""Interoperation with the SNN ecosystem: snnTorch models and NIR graphs.

The submodules import their third-party package only when called:
:mod:`cvxsnn.interop.snntorch` needs ``snntorch``, :mod:`cvxsnn.interop.nir`
needs ``nir`` (the optional extra ``cvxsnn[nir]``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_nir", "fit_readout", "from_snntorch", "import_nir", "to_snntorch"]

_WHERE = {
    "from_snntorch": "cvxsnn.interop.snntorch",
    "to_snntorch": "cvxsnn.interop.snntorch",
    "fit_readout": "cvxsnn.interop.snntorch",
    "export_nir": "cvxsnn.interop.nir",
    "import_nir": "cvxsnn.interop.nir",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'cvxsnn.interop' has no attribute {name!r}")
