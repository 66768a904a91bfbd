"""Model families. Importing this package registers every builder in `vidyn.registry.MODELS`."""

from vidyn.models import baselines, cnn_rnn, convlstm, predrnn, transformer, vid_ode  # noqa: F401
