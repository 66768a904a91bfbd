"""vidyn.tasks: the Lightning systems that train each model family, registered in `TASKS`.

`prediction` (predictors), `recognition` (classifiers); `base` holds what they share (`TaskRun`,
`VidynTask`, `build_task`), `engine` the Trainer, `optim` the optimisers and schedules, `splits` the
prediction modes, `sampling` scheduled sampling.
"""

from vidyn.tasks import generation, latent_sde, prediction, recognition  # noqa: F401  (registers the tasks)
from vidyn.tasks.base import TaskRun, VidynTask, build_task, resolved_task_args

__all__ = ["TaskRun", "VidynTask", "build_task", "resolved_task_args"]
