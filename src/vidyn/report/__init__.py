"""vidyn.report."""
