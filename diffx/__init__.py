"""diffx: differentiable audio effects and the tasks built on them."""

__version__ = "0.1.0"
