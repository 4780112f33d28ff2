"""Training one model: the flat config's training part, the loop, losses, scoring and metrics."""
