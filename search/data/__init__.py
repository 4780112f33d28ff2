"""ECG datasets: loading and validating the six-tensor layout (with optional patient group ids),
normalisation, patient-grouped folds, the `data check` report, and the real and synthetic data
sources (MIT-BIH Arrhythmia Database conversion, ECG-like synthetic beats)."""

from search.data.check import CheckReport, check_report
from search.data.dataset import ASSUMED_WINDOW_S, FIELDS, GROUP_FIELDS, SPLITS, ECGDataset, NormStats
from search.data.errors import DataError
from search.data.folds import all_labelled, dataset_folds, fold_datasets, patient_folds
from search.data.loading import load_dataset, load_failure_reason
from search.data.mitdb import prepare_mitdb
from search.data.synth import make_synthetic

__all__ = [
    "ASSUMED_WINDOW_S",
    "FIELDS",
    "GROUP_FIELDS",
    "SPLITS",
    "CheckReport",
    "DataError",
    "ECGDataset",
    "NormStats",
    "all_labelled",
    "check_report",
    "dataset_folds",
    "fold_datasets",
    "load_dataset",
    "load_failure_reason",
    "make_synthetic",
    "patient_folds",
    "prepare_mitdb",
]
