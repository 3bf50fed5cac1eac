"""cvxsnn: certified globally optimal training of LIF spiking networks."""
__version__ = "0.1.0"

_LAZY = {
    "ConvexSNNClassifier": "cvxsnn.estimator",
    "ConvexSNNRegressor": "cvxsnn.estimator",
    "from_snntorch": "cvxsnn.interop.snntorch",
    "to_snntorch": "cvxsnn.interop.snntorch",
    "export_nir": "cvxsnn.interop.nir",
}


def __getattr__(name: str):
    """Import the estimators and interoperation helpers on first use (keeps ``import cvxsnn`` light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cvxsnn' has no attribute {name!r}")
