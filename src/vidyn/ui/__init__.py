"""vidyn.ui."""
