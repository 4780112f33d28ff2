"""Looking at a study: the HTML report and optuna-dashboard."""
