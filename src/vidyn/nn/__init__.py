"""vidyn.nn."""
