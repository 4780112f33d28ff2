-- Runs once, when the postgres volume is first initialised (as POSTGRES_USER, who owns it).
-- The studies live in POSTGRES_DB; MLflow gets a database of its own so its migrations never
-- touch Optuna's tables.
CREATE DATABASE mlflow;
