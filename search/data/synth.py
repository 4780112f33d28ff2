"""A synthetic ECG-like dataset, for trying the tool where the real records are not available.

Each split has its own synthetic patients (group ids in `groups_<split>.pt`, distinct across splits).
A patient has its own wave amplitudes per lead, resting heart rate, baseline wander and noise level;
each of its windows varies a little around them, so windows of one patient resemble each other more
than windows of two patients, as in real recordings. Each window is a train of beats built from
Gaussian P, Q, R, S and T waves, with beat-to-beat variation, on a wandering baseline with noise.
Anomalous windows (label 1) hold one to three events of one kind: a premature beat, a wide-QRS
(ventricular-like) beat without P wave, or a dropped beat (P wave not followed by QRS and T).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.data.store import completed_write, write_layout
from search.data.validation import SPLITS
from search.errors import UsageError

ANOMALY_KINDS = ("premature", "wide_qrs", "dropped")
FORMAT_VERSION = 2  # 2: synthetic patients and their group ids

# Wave: (offset from the R peak in s, width in s); amplitudes per lead below (mV).
_WAVES = {"P": (-0.20, 0.025), "Q": (-0.035, 0.010), "R": (0.0, 0.012), "S": (0.035, 0.012), "T": (0.26, 0.045)}
# Lead II-, V1- and V5-like amplitude profiles; further leads mix them.
_LEAD_PROFILES = np.array(
    [
        # P     Q      R     S      T
        [0.15, -0.08, 1.10, -0.25, 0.30],
        [0.08, 0.00, 0.35, -0.90, -0.10],
        [0.10, -0.10, 1.40, -0.20, 0.35],
    ]
)


@dataclass(frozen=True)
class Patient:
    """What stays the same across the windows of one synthetic patient."""

    gains: np.ndarray  # (leads, waves): amplitude of each wave in each lead (mV)
    heart_rate: float  # beats per minute
    wander: float  # baseline wander amplitude (mV)
    noise: float  # noise standard deviation (mV)

    @classmethod
    def draw(cls, rng: np.random.Generator, profiles: np.ndarray) -> Patient:
        return cls(
            gains=profiles * rng.uniform(0.7, 1.3, size=profiles.shape),
            heart_rate=float(rng.uniform(55, 100)),
            wander=float(rng.uniform(0.03, 0.15)),
            noise=float(rng.uniform(0.01, 0.04)),
        )


@dataclass
class _Beat:
    time: float
    has_p: bool = True
    has_qrs: bool = True
    wide: bool = False


def make_synthetic(
    out: str | Path,
    *,
    n_train: int = 240,
    n_val: int = 80,
    n_test: int = 80,
    n_leads: int = 3,
    seq_len: int = 2000,
    fs: int = 200,
    anomaly_fraction: float = 0.35,
    patients_per_split: int = 6,
    seed: int = 0,
    reuse_existing: bool = False,
) -> dict[str, Any]:
    """Write a synthetic dataset (six .pt files, the patient of each window in `groups_*.pt`, and
    meta.json marked synthetic) to `out`; returns the meta. A split of fewer windows than
    `patients_per_split` has one patient per window."""
    started = time.perf_counter()
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 2:
            raise UsageError(f"--n-{split} {n}: expected at least 2 windows (one of each class)")
    if not 0 < anomaly_fraction < 1:
        raise UsageError(f"--anomaly-fraction {anomaly_fraction}: expected a fraction between 0 and 1")
    if patients_per_split < 1:
        raise UsageError(f"patients per split {patients_per_split}: expected at least 1")
    if n_leads < 1:
        raise UsageError(f"--n-leads {n_leads}: expected at least 1")
    if fs < 50:
        raise UsageError(f"--fs {fs}: expected at least 50 Hz to draw a QRS complex")
    if seq_len < 3 * fs:
        raise UsageError(f"--seq-len {seq_len}: expected at least 3 s of signal ({3 * fs} samples at {fs} Hz)")
    settings = {
        "dataset": "synthetic",
        "format_version": FORMAT_VERSION,
        **{f"n_{split}": n for split, n in sizes.items()},
        "n_leads": n_leads,
        "seq_len": seq_len,
        "fs": fs,
        "anomaly_fraction": anomaly_fraction,
        "patients_per_split": patients_per_split,
        "seed": seed,
    }
    out = Path(out)
    if reuse_existing and (meta := completed_write(out, settings)) is not None:
        return {**meta, "out": str(out), "skipped": True}

    rng = np.random.default_rng(seed)
    profiles = _lead_profiles(n_leads, rng)
    tensors: dict[str, torch.Tensor] = {}
    counts: dict[str, dict[str, int]] = {}
    kinds_per_split: dict[str, dict[str, int]] = {}
    patient_ids: dict[str, list[int]] = {}
    first_id = 0
    for split in SPLITS:
        n = sizes[split]
        patients = [Patient.draw(rng, profiles) for _ in range(min(patients_per_split, n))]
        X, labels, owner, kinds_per_split[split] = _split_windows(rng, patients, n, anomaly_fraction, seq_len, fs)
        tensors[f"X_{split}"], tensors[f"y_{split}"] = torch.from_numpy(X), torch.from_numpy(labels)
        tensors[f"groups_{split}"] = torch.from_numpy(owner + first_id)
        counts[split] = {"windows": n, "labelled_1": int(labels.sum())}
        patient_ids[split] = list(range(first_id, first_id + len(patients)))
        first_id += len(patients)
    meta = {
        "dataset": "synthetic ECG-like beats (ecgsearch make_synthetic)",
        "synthetic": True,
        "source": "synthetic",
        "label_rule": "1 if the window holds 1-3 injected events of one kind: premature beat, "
        "wide-QRS beat without P wave, or dropped beat (P wave without QRS/T); else 0",
        "units": "mV (simulated)",
        "fs": fs,
        "window_s": seq_len / fs,
        "window_samples": seq_len,
        "leads": [f"lead{i}" for i in range(n_leads)],
        "counts": counts,
        "anomaly_kinds": kinds_per_split,
        "patients": patient_ids,
        "prepare": settings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_layout(out, tensors, meta)
    return {**meta, "out": str(out), "skipped": False}


def _split_windows(
    rng: np.random.Generator, patients: list[Patient], n: int, anomaly_fraction: float, seq_len: int, fs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """`n` windows shared evenly among `patients`: X, labels, the patient index (int64) of each, and
    how many windows hold each anomaly kind."""
    n_anomalous = min(max(round(n * anomaly_fraction), 1), n - 1)
    labels = rng.permutation(np.arange(n) < n_anomalous).astype(np.float32)
    owner = rng.permutation(np.arange(n, dtype=np.int64) % len(patients))
    X = np.empty((n, len(patients[0].gains), seq_len), dtype=np.float32)
    kinds = dict.fromkeys(ANOMALY_KINDS, 0)
    for i in range(n):
        kind = str(rng.choice(ANOMALY_KINDS)) if labels[i] else None
        X[i] = _window(rng, patients[owner[i]], seq_len, fs, kind)
        if kind:
            kinds[kind] += 1
    return X, labels, owner, kinds


def _lead_profiles(n_leads: int, rng: np.random.Generator) -> np.ndarray:
    if n_leads <= len(_LEAD_PROFILES):
        return _LEAD_PROFILES[:n_leads]
    mixes = rng.dirichlet(np.ones(len(_LEAD_PROFILES)), size=n_leads - len(_LEAD_PROFILES))
    return np.vstack([_LEAD_PROFILES, mixes @ _LEAD_PROFILES])


def _beat_schedule(rng: np.random.Generator, duration: float, heart_rate: float, kind: str | None) -> list[_Beat]:
    rr = 60.0 / heart_rate
    breathing = rng.uniform(0.2, 0.35)
    beats = []
    t = rng.uniform(0.1, rr)
    while t < duration + 0.5:
        beats.append(_Beat(time=t))
        # Respiratory sinus arrhythmia plus small random beat-to-beat variation.
        t += rr * (1 + 0.04 * np.sin(2 * np.pi * breathing * t) + 0.02 * rng.standard_normal())
    if kind is None:
        return beats
    # Events only where the whole beat (P to T) lies inside the window, so every label is visible.
    inside = [i for i, b in enumerate(beats) if 0.35 < b.time < duration - 0.45 and 0 < i < len(beats) - 1]
    inside = inside or [len(beats) // 2]
    chosen = rng.choice(inside, size=min(len(inside), int(rng.integers(1, 4))), replace=False)
    for i in sorted(chosen.tolist()):
        beat = beats[i]
        if kind == "premature":
            beat.time -= rng.uniform(0.28, 0.4) * rr
            beat.has_p = False
        elif kind == "wide_qrs":
            beat.time -= rng.uniform(0.1, 0.25) * rr
            beat.has_p, beat.wide = False, True
        else:
            beat.has_qrs = False
    return beats


def _window(rng: np.random.Generator, patient: Patient, seq_len: int, fs: int, kind: str | None) -> np.ndarray:
    """One window of `patient`: its traits, each varied a little for this window."""
    duration = seq_len / fs
    t = np.arange(seq_len) / fs
    gains = patient.gains * rng.uniform(0.93, 1.07, size=patient.gains.shape)
    heart_rate = patient.heart_rate * rng.uniform(0.95, 1.05)
    n_leads = len(gains)
    signal = np.zeros((n_leads, seq_len))
    half_span = int(0.6 * fs)
    for beat in _beat_schedule(rng, duration, heart_rate, kind):
        centre = round(beat.time * fs)
        lo, hi = max(centre - half_span, 0), min(centre + half_span, seq_len)
        if lo >= hi:
            continue
        local = t[lo:hi]
        for w, (name, (offset, width)) in enumerate(_WAVES.items()):
            if (name == "P" and not beat.has_p) or (name != "P" and not beat.has_qrs):
                continue
            amplitude = gains[:, w]
            if beat.wide and name in ("Q", "R", "S"):
                width, amplitude = width * 3.0, amplitude * 1.4
                offset *= 2.5
            elif beat.wide and name == "T":
                amplitude = -1.5 * amplitude
            shape = np.exp(-0.5 * ((local - beat.time - offset) / width) ** 2)
            signal[:, lo:hi] += amplitude[:, None] * shape[None, :]
    wander_f = rng.uniform(0.1, 0.5, size=(n_leads, 1))
    wander_phase = rng.uniform(0, 2 * np.pi, size=(n_leads, 1))
    signal += patient.wander * rng.uniform(0.8, 1.2) * np.sin(2 * np.pi * wander_f * t + wander_phase)
    signal += patient.noise * rng.uniform(0.8, 1.2) * rng.standard_normal(signal.shape)
    return signal.astype(np.float32)
