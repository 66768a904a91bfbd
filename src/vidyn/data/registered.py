"""Importing this module registers every dataset builder in `vidyn.registry.DATASETS`."""

from vidyn.data import folder, kinetics, moving_mnist, synthetic, ucf101  # noqa: F401
