"""Running a study: the trial objective, the worker loop, and the launcher of worker processes."""
