"""Model families. Importing this package registers every builder in `vidyn.registry.MODELS`."""

from vidyn.models import baselines, convlstm  # noqa: F401  (imported for registration)
