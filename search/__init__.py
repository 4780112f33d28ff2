"""ecgsearch engine: data, training loop, workers, MLflow mirror, retrain/export and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ecgsearch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
