"""Datasets, video I/O and data modules.

Sample contract: every dataset's `__getitem__` returns a dict with
  "frames": float32 `(T, C, H, W)` in [0, 1],
  "times":  float32 `(T,)` timestamps in seconds,
  "label":  int64 scalar tensor (the class; 0 where a dataset has none),
and datasets are registered in `vidyn.registry.DATASETS` with builders taking `split` plus explicit,
typed keyword arguments. uint8 `(T, H, W, C)` exists only inside video I/O and the prepared store.
"""
