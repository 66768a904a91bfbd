"""Model families. Importing this package registers every builder in `vidyn.registry.MODELS`."""

from vidyn.models import (  # noqa: F401
    baselines,
    cnn_rnn,
    convlstm,
    ode_gan,
    predrnn,
    sde_video,
    transformer,
    vid_ode,
)
