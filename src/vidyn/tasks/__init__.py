"""vidyn.tasks."""
