"""vidyn.metrics."""
