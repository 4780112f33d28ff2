"""Installed versions of the packages a study or an export depends on, from package metadata.

A leaf module (standard library only) so that the worker's compatibility check and the export bundle
read versions the same way without importing the packages themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

# A worker may join a study only when it runs these at the versions the study was created with.
STUDY_PACKAGES = ("ecgsearch", "optuna", "torch")
# Recorded in an export bundle: what trained, exported and checked the model.
BUNDLE_PACKAGES = ("ecgsearch", "torch", "optuna", "onnx", "onnxruntime", "mlflow", "numpy")
# What a package that is not installed (e.g. a source tree never installed) is reported as.
UNKNOWN = "unknown"


def package_versions(names: Sequence[str] = BUNDLE_PACKAGES) -> dict[str, str | None]:
    """name -> installed version (as pip reports it, e.g. torch '2.13.0+cpu'), None when not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def study_versions() -> dict[str, str]:
    """The versions a study records when it is created and a joining worker must match."""
    return {name: found or UNKNOWN for name, found in package_versions(STUDY_PACKAGES).items()}
