"""cvxsnn: certified globally optimal training of LIF spiking networks.

The pipeline, one module per stage: :mod:`cvxsnn.tasks` -> :mod:`cvxsnn.witnesses`
-> :mod:`cvxsnn.dictionary` -> :mod:`cvxsnn.solver` -> :mod:`cvxsnn.reconstruct`
-> :mod:`cvxsnn.evaluate`; :mod:`cvxsnn.pipeline` runs them end to end and
:mod:`cvxsnn.sg` trains the surrogate-gradient baselines. Names below are
imported on first use, so ``import cvxsnn`` stays light.
"""

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": "cvxsnn.pipeline",
    "train": "cvxsnn.pipeline",
    "NetConfig": "cvxsnn.network",
    "ParallelLIFNet": "cvxsnn.network",
    "save_model": "cvxsnn.network",
    "load_model": "cvxsnn.network",
    "make_task": "cvxsnn.tasks",
    "sample_witnesses": "cvxsnn.witnesses",
    "build_dictionary": "cvxsnn.dictionary",
    "solve": "cvxsnn.solver",
    "duality_gap": "cvxsnn.solver",
    "reconstruct": "cvxsnn.reconstruct",
    "ConvexSNNClassifier": "cvxsnn.estimator",
    "ConvexSNNRegressor": "cvxsnn.estimator",
    "from_snntorch": "cvxsnn.interop.snntorch",
    "to_snntorch": "cvxsnn.interop.snntorch",
    "export_nir": "cvxsnn.interop.nir",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    """Import a public name from its module on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cvxsnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
