"""A synthetic ECG-like dataset, for trying the tool where the real records are not available.

Each window is a train of beats built from Gaussian P, Q, R, S and T waves (per-lead amplitudes),
at a heart rate drawn per window with beat-to-beat variation, on a wandering baseline with noise.
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
FORMAT_VERSION = 1

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
    seed: int = 0,
    reuse_existing: bool = False,
) -> dict[str, Any]:
    """Write a synthetic dataset (six .pt files + meta.json marked synthetic) to `out`; returns the meta."""
    started = time.perf_counter()
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 2:
            raise UsageError(f"--n-{split} {n}: expected at least 2 windows (one of each class)")
    if not 0 < anomaly_fraction < 1:
        raise UsageError(f"--anomaly-fraction {anomaly_fraction}: expected a fraction between 0 and 1")
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
    for split in SPLITS:
        n = sizes[split]
        n_anomalous = min(max(round(n * anomaly_fraction), 1), n - 1)
        labels = rng.permutation(np.arange(n) < n_anomalous).astype(np.float32)
        X = np.empty((n, n_leads, seq_len), dtype=np.float32)
        kinds = dict.fromkeys(ANOMALY_KINDS, 0)
        for i in range(n):
            kind = str(rng.choice(ANOMALY_KINDS)) if labels[i] else None
            X[i] = _window(rng, profiles, seq_len, fs, kind)
            if kind:
                kinds[kind] += 1
        tensors[f"X_{split}"], tensors[f"y_{split}"] = torch.from_numpy(X), torch.from_numpy(labels)
        counts[split] = {"windows": n, "labelled_1": int(labels.sum())}
        kinds_per_split[split] = kinds
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
        "prepare": settings,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_layout(out, tensors, meta)
    return {**meta, "out": str(out), "skipped": False}


def _lead_profiles(n_leads: int, rng: np.random.Generator) -> np.ndarray:
    if n_leads <= len(_LEAD_PROFILES):
        return _LEAD_PROFILES[:n_leads]
    mixes = rng.dirichlet(np.ones(len(_LEAD_PROFILES)), size=n_leads - len(_LEAD_PROFILES))
    return np.vstack([_LEAD_PROFILES, mixes @ _LEAD_PROFILES])


def _beat_schedule(rng: np.random.Generator, duration: float, kind: str | None) -> list[_Beat]:
    rr = 60.0 / rng.uniform(55, 100)
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


def _window(rng: np.random.Generator, profiles: np.ndarray, seq_len: int, fs: int, kind: str | None) -> np.ndarray:
    duration = seq_len / fs
    t = np.arange(seq_len) / fs
    gains = profiles * rng.uniform(0.85, 1.15, size=profiles.shape)
    signal = np.zeros((len(profiles), seq_len))
    half_span = int(0.6 * fs)
    for beat in _beat_schedule(rng, duration, kind):
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
    wander_f = rng.uniform(0.1, 0.5, size=(len(profiles), 1))
    wander_phase = rng.uniform(0, 2 * np.pi, size=(len(profiles), 1))
    signal += rng.uniform(0.03, 0.15) * np.sin(2 * np.pi * wander_f * t + wander_phase)
    signal += rng.uniform(0.01, 0.04) * rng.standard_normal(signal.shape)
    return signal.astype(np.float32)
