"""One WFDB record (header, signals, reference annotations) -> fixed-length labelled windows.

Sampling rate, lead names and length come from each record's header; nothing about a particular
database is assumed here beyond the WFDB annotation codes.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from search.data.errors import DataError

# WFDB beat annotation codes (physionet.org/physiobank/annotations.shtml); 'N' is the normal beat.
BEAT_CODES = frozenset("NLRBAaJSVrFejnE/fQ?!")
# Besides beats other than 'N', the MIT-BIH reference rule counts these marks as abnormal:
# 'x' non-conducted P wave (blocked APC), '[' and ']' start/end of ventricular flutter/fibrillation.
ABNORMAL_MARKS = frozenset((BEAT_CODES - {"N"}) | {"x", "[", "]"})
RHYTHM_CODE = "+"
NORMAL_RHYTHM = "(N"


def _wfdb():
    """wfdb (and the pandas it loads) only when records are read: `load_dataset` never needs it."""
    import wfdb

    return wfdb


def _quiet_wfdb(function):
    """Silences the pandas deprecation warnings wfdb 4.3 raises on import and on every rdann call."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*inplace keyword.*")
            return function(*args, **kwargs)

    return wrapper


@dataclass
class RecordWindows:
    """The windows of one record: X `(n, slots, samples)` float32 (None when only labels were read)."""

    record: str
    y: np.ndarray
    X: np.ndarray | None
    lead_names: dict[str, str | None]
    fs: float
    rhythms: list[str]

    @property
    def lead_mask(self) -> list[int]:
        return [int(name is not None) for name in self.lead_names.values()]


def window_labels(
    samples: Sequence[int] | np.ndarray,
    symbols: Sequence[str],
    aux_notes: Sequence[str],
    n_windows: int,
    window_len: int,
) -> np.ndarray:
    """1.0 for each window that holds an abnormal mark or overlaps any rhythm other than '(N'.

    The rhythm named by a '+' annotation stays in force until the next one, across windows;
    before the first rhythm annotation no rhythm is known and none counts against a window.
    """
    samples = np.asarray(samples, dtype=np.int64)
    labels = np.zeros(n_windows, dtype=bool)
    abnormal = np.fromiter((symbol in ABNORMAL_MARKS for symbol in symbols), dtype=bool, count=len(symbols))
    hit = samples[abnormal] // window_len
    labels[hit[(hit >= 0) & (hit < n_windows)]] = True

    changes = [
        (int(sample), note.rstrip("\x00").strip())
        for sample, symbol, note in zip(samples, symbols, aux_notes, strict=True)
        if symbol == RHYTHM_CODE and note.rstrip("\x00").strip().startswith("(")
    ]
    end_of_windows = n_windows * window_len
    for index, (start, rhythm) in enumerate(changes):
        end = changes[index + 1][0] if index + 1 < len(changes) else end_of_windows
        end = min(end, end_of_windows)
        if rhythm != NORMAL_RHYTHM and end > start:
            labels[start // window_len : (end - 1) // window_len + 1] = True
    return labels.astype(np.float32)


@_quiet_wfdb
def read_windows(
    source: Path,
    record: str,
    *,
    lead_slots: Mapping[str, Sequence[str]],
    fs_out: int,
    window_s: float,
    with_signal: bool = True,
    annotator: str = "atr",
) -> RecordWindows:
    """Label (and, with `with_signal`, cut) `record` into non-overlapping `window_s` windows at `fs_out`.

    `lead_slots` maps each output lead to the header lead names that may fill it, in order of
    preference; a slot no lead fills stays zero.
    """
    wfdb = _wfdb()
    base = source / record
    header = _read(base.with_suffix(".hea"), "header", lambda: wfdb.rdheader(str(base)))
    fs = float(header.fs)
    window_in = _whole_samples(window_s * fs, base.with_suffix(".hea"), f"window of {window_s} s at {fs} Hz")
    window_out = _whole_samples(window_s * fs_out, base.with_suffix(".hea"), f"window of {window_s} s at {fs_out} Hz")
    n_windows = int(header.sig_len) // window_in

    ann = _read(base.with_suffix(f".{annotator}"), "annotations", lambda: wfdb.rdann(str(base), annotator))
    aux = ann.aux_note if ann.aux_note is not None else [""] * len(ann.symbol)
    y = window_labels(ann.sample, ann.symbol, aux, n_windows, window_in)
    rhythms = sorted({note.rstrip("\x00").strip() for note, s in zip(aux, ann.symbol, strict=True) if s == "+"})

    names = list(header.sig_name)
    lead_names = {slot: next((n for n in wanted if n in names), None) for slot, wanted in lead_slots.items()}
    X = None
    if with_signal:
        X = _signal_windows(base, names, lead_names, fs, fs_out, n_windows, window_out)
    return RecordWindows(record=record, y=y, X=X, lead_names=lead_names, fs=fs, rhythms=rhythms)


def _signal_windows(
    base: Path,
    names: list[str],
    lead_names: Mapping[str, str | None],
    fs: float,
    fs_out: int,
    n_windows: int,
    window_out: int,
) -> np.ndarray:
    from scipy.signal import resample_poly

    wfdb = _wfdb()
    channels = sorted({names.index(name) for name in lead_names.values() if name is not None})
    X = np.zeros((n_windows, len(lead_names), window_out), dtype=np.float32)
    if not channels:
        return X
    dat = base.with_suffix(".dat")
    signal = _read(dat, "signal", lambda: wfdb.rdrecord(str(base), channels=channels, return_res=32).p_signal)
    invalid = int(np.count_nonzero(~np.isfinite(signal)))
    if invalid:
        raise DataError(dat, "signal", f"holds {invalid} invalid samples; expected complete recordings")
    ratio = Fraction(fs_out) / Fraction(fs).limit_denominator(100_000)
    resampled = resample_poly(signal, ratio.numerator, ratio.denominator, axis=0)
    used = n_windows * window_out
    for slot, name in enumerate(lead_names.values()):
        if name is not None:
            column = resampled[:used, channels.index(names.index(name))]
            X[:, slot, :] = column.reshape(n_windows, window_out)
    return X


def _whole_samples(value: float, path: Path, what: str) -> int:
    if value <= 0 or abs(value - round(value)) > 1e-6:
        raise DataError(path, "fs", f"a {what} is {value:g} samples; expected a whole positive number")
    return round(value)


def _read(path: Path, field: str, reader):
    try:
        return reader()
    except FileNotFoundError as error:
        raise DataError(path, field, "file not found; expected the WFDB .hea, .dat and .atr files") from error
    except Exception as error:  # wfdb raises many types for damaged files; all mean "unreadable"
        raise DataError(path, field, f"cannot be read by wfdb ({type(error).__name__}: {error})") from error
