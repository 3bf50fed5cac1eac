"""cvxsnn: certified globally optimal training of LIF spiking networks."""
__version__ = "0.1.0"
