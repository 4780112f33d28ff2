"""ECG datasets: loading and validating the six-tensor layout, normalisation, and the real and synthetic
data sources (MIT-BIH Arrhythmia Database conversion, ECG-like synthetic beats)."""

from search.data.dataset import FIELDS, SPLITS, ECGDataset, NormStats
from search.data.errors import DataError
from search.data.loading import load_dataset
from search.data.mitdb import prepare_mitdb
from search.data.synth import make_synthetic

__all__ = [
    "FIELDS",
    "SPLITS",
    "DataError",
    "ECGDataset",
    "NormStats",
    "load_dataset",
    "make_synthetic",
    "prepare_mitdb",
]
