"""vidyn: a PyTorch toolkit for learning video dynamics."""

__version__ = "0.1.0"
