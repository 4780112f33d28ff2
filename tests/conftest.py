"""Shared fixtures: the real MIT-BIH data (prepared once per session) and small real slices of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pg_fixtures import postgres_url  # noqa: F401 - shared fixture: a fresh PostgreSQL database per test

REPO_ROOT = Path(__file__).resolve().parents[1]
MITDB_RAW = Path(os.environ.get("MITDB_DIR", REPO_ROOT.parent / "shared" / "data" / "mitdb"))

# Two cores in CI: intra-op threads beyond that only add contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mitdb_raw_dir() -> Path:
    if not (MITDB_RAW / "100.hea").exists():
        pytest.skip(
            f"real MIT-BIH records not found in {MITDB_RAW} (set MITDB_DIR, or place the PhysioNet "
            "mitdb 1.0.0 files in ../shared/data/mitdb)"
        )
    return MITDB_RAW


@pytest.fixture(scope="session")
def mitdb_prepared_dir(mitdb_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole database converted once per test session (six-file layout + meta.json)."""
    from search.data import prepare_mitdb

    out = tmp_path_factory.mktemp("mitdb_prepared")
    prepare_mitdb(mitdb_raw_dir, out)
    return out


@pytest.fixture(scope="session")
def small_real_dir(mitdb_prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real slice (both classes in every split) in the six-file layout, for fast tests."""
    from search.data import load_dataset

    out = tmp_path_factory.mktemp("mitdb_small")
    load_dataset(mitdb_prepared_dir).subset(max_train=96, max_val=48, max_test=48, seed=0).save(out)
    return out


@pytest.fixture(scope="session")
def tiny_real_dir(mitdb_prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An even smaller real slice for searches with many trials."""
    from search.data import load_dataset

    out = tmp_path_factory.mktemp("mitdb_tiny")
    load_dataset(mitdb_prepared_dir).subset(max_train=48, max_val=32, max_test=32, seed=1).save(out)
    return out
