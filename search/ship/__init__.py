"""From a study to a served model: retrain the chosen config, write the export bundle, predict with it."""
