"""Running a study: setting it up from typed settings, the trial objective, the worker loop, and the launcher
of this machine's worker processes."""
