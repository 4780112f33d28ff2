"""Beat timing (R-R intervals) of a window, computed in the graph from the signal itself.

Why: on inter-patient MIT-BIH splits the R-R intervals of a crude R-peak detector fed to a logistic
regression beat every searched CNN (ROC-AUC 0.82 against 0.60–0.73); CNNs do not learn beat timing
from a few thousand windows. `RhythmFeatures` hands that timing to a model as ~10 numbers per
window, so the `rhythm` family (features → FC head) and any classifier's `rhythm_branch` (features
beside the pooled representation) can use it.

Design (every step a plain tensor op with shapes fixed at build time, so the whole detector
traces, exports to ONNX opset 17 with a dynamic batch axis and runs identically in onnxruntime):

1. QRS band: a fixed FIR band-pass of about 5–15 Hz (Hamming-windowed sinc, 0.3 s of taps, made
   zero-mean so baseline offsets and wander never leak through), applied per lead, designed with
   numpy from `fs`. Replicate padding: the zero-DC filter sees a constant continuation at the
   window's edges, so no edge step looks like a beat. It runs in polyphase form (`polyphase_taps`):
   a one-channel convolution with ~100 taps is the slowest case of CPU convolution kernels, while
   the same filter over POLYPHASE_PHASES interleaved phases is a small many-channel convolution
   they are built for (measured 4-6x faster on a CPU core, the same numbers to float rounding).
2. Envelope: the band-passed signal squared and summed over leads (a missing, all-zero lead adds
   nothing, a lead that carries the beats carries the detection), smoothed by a 150 ms moving
   average so one QRS complex gives one hump.
3. R peaks: samples equal to the maximum of the envelope within ±250 ms (max_pool1d, stride 1)
   that are above 10 % of the window's largest envelope value (and above a floor of 1e-9 of the
   window's power, so float rounding in a flat window is not taken for beats). The ±250 ms window is the
   refractory period: two peaks are always more than 250 ms apart (at most 240 bpm). Of a plateau
   of equal values only the first sample counts, and the first and last sample of the window never
   do (the envelope only rises towards the edge there: the true peak lies outside the window).
4. Positions: `topk(where(peak, arange, -1), K)` with K the most beats a window can hold
   (seq_len // (refractory + 1) + 1): the detected positions in descending order, then -1s.
   R-R intervals are the differences of neighbours that are both valid.
5. Masked statistics over the valid intervals (median by sort + gather, never a Python branch on
   data). Whatever a window lacks (no beat, one beat, one interval) gets a neutral value, and the
   validity feature says whether the variability features mean anything.

6. Beat shape: around each detected beat (±100 ms, a QRS complex) the share of the signal's energy
   that lies in the QRS band. A narrow supraventricular QRS keeps most of its energy there; a wide
   ventricular beat moves it to lower frequencies. The window's median share, and the lowest and
   highest beat's share over that median (one odd beat among normal ones), are the morphology
   features. Chosen on MIT-BIH DS1 with patient-grouped 5-fold CV (logistic regression on the
   features, 3 fold seeds): timing alone 0.75 ROC-AUC, with the median beat share 0.82 (0.83 with
   the lowest and highest beat); template correlations, QRS widths and peak heights were tried and
   did not help (0.74–0.75).

Features (FEATURE_NAMES, seconds or ratios; log-scaled where they span orders of magnitude):
beats per second; log median RR (s); log RR standard deviation and log RMSSD (s, with a 1 ms floor
below the sample resolution of ECG rates so a perfectly regular train stays finite); shortest and
longest RR over the median; share of premature (RR < 0.85 × median) and late (RR > 1.15 × median)
intervals; validity (1 when the window has at least two intervals, i.e. three beats); log median
beat QRS-band share, lowest and highest beat share over the median. Undefined values: median RR 1 s
(log 0), ratios 1, spreads 0 (log 1 ms), shares 0 (log share 0). Every feature is finite for every
finite input, flat and all-zero windows included.

Record-relative timing (`relative=True`, the flat-config option `rhythm_relative`): the two features
that measure the rate itself, beats per second and log median RR, are taken relative to the patient's
own rhythm instead: beats per record R-R interval (beats per second times the record's RR) and the
log of the window's median RR over the record's. The record's RR is a second model input, one number
per window (seconds): the median, over every window of the same patient in the data at hand, of the
window's median RR (`record_rr`). Why: patients' resting rates differ by a factor of two (0.54-1.15 s
median RR over MIT-BIH DS1), so an absolute rate says more about the patient than about the beat; on
DS1 patient-grouped 5-fold CV, a logistic regression on the features with the two rate features made
record-relative rose from 0.800 / 0.760 / 0.796 to 0.823 / 0.811 / 0.828 ROC-AUC (fold seeds 0, 1, 2).
It needs the patient of each window at prediction time too, so it is offered only for data with
patient ids.

Models compute the features from their input after input conditioning (ecgmodels/conditioning.py):
baseline removal leaves the QRS band as it is, and z-scoring gives every lead the same weight in
the energy sum, which the search may choose or not.

The features are piecewise constant in the input (peak positions are discrete), so no gradient
flows through them: the input is detached, and they are computed in float32 even under autocast
(half precision cannot hold sample positions beyond 2048 exactly).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

QRS_BAND_HZ = (5.0, 15.0)
QRS_FILTER_SECONDS = 0.3  # 0.2 s passed enough T wave to shift a premature R peak by 2 samples
ENVELOPE_SECONDS = 0.15
REFRACTORY_SECONDS = 0.25
PEAK_THRESHOLD = 0.1  # of the window's largest envelope value
# Of the window's mean power (leads summed): float32 rounding leaves ~1e-13 of it in the envelope of
# a flat window, which a threshold relative to the envelope alone would take for beats.
NOISE_FLOOR = 1e-9
PREMATURE_RATIO = 0.85
LATE_RATIO = 1.15
SPREAD_FLOOR_SECONDS = 1e-3
MIN_INTERVALS_FOR_VALIDITY = 2
BEAT_HALF_WIDTH_SECONDS = 0.1  # a QRS complex lasts 60-120 ms; wide ventricular ones up to ~200 ms
ENERGY_FLOOR = 1e-12  # keeps the band share of a flat beat finite (0/0)
POLYPHASE_PHASES = 16  # the band-pass runs over this many interleaved phases of the signal

FEATURE_NAMES: tuple[str, ...] = (
    "beats_per_second",
    "log_median_rr",
    "log_rr_std",
    "log_rmssd",
    "min_rr_ratio",
    "max_rr_ratio",
    "premature_share",
    "late_share",
    "rhythm_valid",
    "log_beat_qrs_share",
    "min_beat_qrs_share_ratio",
    "max_beat_qrs_share_ratio",
)
N_FEATURES = len(FEATURE_NAMES)
# With record-relative timing the two rate features are taken relative to the record's median RR.
RELATIVE_FEATURE_NAMES: tuple[str, ...] = ("beats_per_record_rr", "log_median_rr_over_record", *FEATURE_NAMES[2:])
NEUTRAL_RR_SECONDS = 1.0  # the median RR of a window (or record) without intervals (log 0)


def _odd(samples: float) -> int:
    """The nearest odd whole number of samples, at least 1 (odd so filters stay centred)."""
    return max(1, 2 * math.floor(samples / 2) + 1)


def refractory_samples(fs: float) -> int:
    return max(1, round(REFRACTORY_SECONDS * fs))


def min_rhythm_seq_len(fs: float) -> int:
    """The shortest window rhythm features accept: long enough to hold two refractory periods."""
    return 2 * (refractory_samples(fs) + 1)


def rhythm_possible(fs: float | None, seq_len: int) -> bool:
    """Whether rhythm features can be built for this data: fs known and windows long enough."""
    return fs is not None and fs > 0 and seq_len >= min_rhythm_seq_len(fs)


def max_beats(fs: float, seq_len: int) -> int:
    """The most R peaks one window can hold (peaks are more than the refractory period apart)."""
    return min(seq_len, seq_len // (refractory_samples(fs) + 1) + 1)


def qrs_bandpass_taps(fs: float) -> np.ndarray:
    """Zero-mean Hamming-windowed sinc band-pass over QRS_BAND_HZ, unit gain at the band's centre."""
    n_taps = _odd(QRS_FILTER_SECONDS * fs)
    t = np.arange(n_taps) - (n_taps - 1) / 2

    def low_pass(cutoff_hz: float) -> np.ndarray:
        return 2 * cutoff_hz / fs * np.sinc(2 * cutoff_hz / fs * t)

    low, high = QRS_BAND_HZ
    high = min(high, 0.45 * fs)  # a low sampling rate caps the band below its Nyquist frequency
    taps = (low_pass(high) - low_pass(min(low, high / 2))) * np.hamming(n_taps)
    taps -= taps.mean()  # exactly zero gain at DC: offsets and slow wander never reach the envelope
    centre = math.sqrt(low * high)
    gain = abs(np.sum(taps * np.exp(-2j * np.pi * centre / fs * np.arange(n_taps))))
    return taps / gain if gain > 0 else taps


def polyphase_taps(taps: np.ndarray, phases: int) -> np.ndarray:
    """(phases, phases, Q) conv1d weights equal to cross-correlating with `taps`, phase by phase.

    With y[n] = sum_j taps[j] x[n + j] and n = phases * m + p, x[n + j] lies in phase r of x at offset
    m + q where p + j = phases * q + r, so output phase p is a conv1d over the input phases with weight
    [p, r, q] = taps[phases * q + r - p] (zero where that index is outside the taps).
    """
    n_taps = len(taps)
    reach = (n_taps - 1 + phases - 1) // phases + 1
    weights = np.zeros((phases, phases, reach), dtype=np.float64)
    for p in range(phases):
        for r in range(phases):
            for q in range(reach):
                j = phases * q + r - p
                if 0 <= j < n_taps:
                    weights[p, r, q] = taps[j]
    return weights


def masked_median(values: torch.Tensor, valid: torch.Tensor, *, neutral: float) -> torch.Tensor:
    """Median over the last axis of the `valid` entries (mean of the middle two); `neutral` where none is."""
    count = valid.sum(dim=-1)
    ascending = torch.sort(torch.where(valid, values, torch.full_like(values, math.inf)), dim=-1).values
    lower = ((count - 1).clamp(min=0) // 2).unsqueeze(-1)
    upper = (count // 2).clamp(max=values.shape[-1] - 1).unsqueeze(-1)
    median = 0.5 * (ascending.gather(-1, lower) + ascending.gather(-1, upper)).squeeze(-1)
    return torch.where(count > 0, median, torch.full_like(median, neutral))


class RhythmFeatures(nn.Module):
    """(batch, leads, samples) → (batch, N_FEATURES) beat-timing features; no parameters."""

    bandpass: torch.Tensor

    def __init__(self, *, fs: float, seq_len: int) -> None:
        super().__init__()
        self.fs, self.seq_len = float(fs), seq_len
        taps = qrs_bandpass_taps(self.fs)
        self.n_taps, self.phases = len(taps), POLYPHASE_PHASES
        weights = torch.tensor(polyphase_taps(taps, self.phases), dtype=torch.float32)
        # Not persistent (like the positional code): functions of fs and seq_len, not learned state.
        self.register_buffer("bandpass", weights, persistent=False)
        self.band_steps = math.ceil(seq_len / self.phases)  # output samples per phase
        self.envelope_width = _odd(ENVELOPE_SECONDS * self.fs)
        self.refractory = refractory_samples(self.fs)
        self.max_beats = max_beats(self.fs, seq_len)

    def band(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, leads, samples): every lead through the same QRS band-pass."""
        half = self.n_taps // 2
        padded = functional.pad(x.reshape(-1, 1, x.shape[-1]), (half, half), mode="replicate")
        # Zeros up to whole phases: the weights that would reach them are zero for every kept output.
        reach = self.bandpass.shape[-1]
        length = self.phases * (self.band_steps + reach - 1)
        padded = functional.pad(padded, (0, length - padded.shape[-1]))
        phases = padded.reshape(-1, self.band_steps + reach - 1, self.phases).transpose(1, 2)
        band = functional.conv1d(phases, self.bandpass.float())  # (batch * leads, phases, band_steps)
        band = band.transpose(1, 2).reshape(-1, self.phases * self.band_steps)[:, : self.seq_len]
        return band.reshape(x.shape)

    def envelope(self, x: torch.Tensor, band: torch.Tensor | None = None) -> torch.Tensor:
        """QRS energy (batch, samples): band-passed, squared, summed over leads, smoothed."""
        band = self.band(x) if band is None else band
        energy = band.pow(2).sum(dim=1, keepdim=True)
        smoothed = functional.avg_pool1d(
            energy,
            self.envelope_width,
            stride=1,
            padding=self.envelope_width // 2,
            count_include_pad=False,
        )
        return smoothed.squeeze(1)

    def peaks(self, envelope: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Boolean (batch, samples): the R peaks detected in `envelope`, the envelope of window `x`."""
        reach = self.refractory
        local_max = functional.max_pool1d(envelope.unsqueeze(1), 2 * reach + 1, stride=1, padding=reach).squeeze(1)
        noise_floor = NOISE_FLOOR * x.pow(2).mean(dim=-1).sum(dim=-1, keepdim=True)
        threshold = torch.maximum(PEAK_THRESHOLD * envelope.amax(dim=-1, keepdim=True), noise_floor)
        peak = (envelope == local_max) & (envelope > threshold)
        # Only the first sample of a plateau, never the window's first or last sample.
        edge = torch.zeros_like(peak[:, :1])
        previous = torch.cat((~edge, peak[:, :-1]), dim=-1)
        return torch.cat(((peak & ~previous)[:, :-1], edge), dim=-1)

    def peak_positions(self, peak: torch.Tensor) -> torch.Tensor:
        """(batch, max_beats) float positions in samples, descending, -1 where there is no beat."""
        # Made here in float32, not kept as a buffer: model.half() would round positions above 2048.
        positions = torch.arange(self.seq_len, dtype=torch.float32, device=peak.device)
        marked = torch.where(peak, positions, torch.full_like(positions, -1.0))
        return torch.topk(marked, self.max_beats, dim=-1).values

    def forward(self, x: torch.Tensor, record_rr: torch.Tensor | None = None) -> torch.Tensor:
        """The features of windows `x`; with `record_rr` ((batch,) seconds, the record's median RR of each
        window) the two rate features are record-relative (RELATIVE_FEATURE_NAMES)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            features = self._features(x.detach().float())
            if record_rr is None:
                return features
            return relative_to_record(features, record_rr.detach().float().reshape(-1))

    def beats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, band) of windows `x` (float32): the descending R-peak positions (`peak_positions`)
        and the band-passed leads they were found in."""
        band = self.band(x)
        return self.peak_positions(self.peaks(self.envelope(x, band), x)), band

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        positions, band = self.beats(x)
        return torch.cat((self._timing(positions, x), self._beat_shape(positions, band, x)), dim=-1)

    def _beat_shape(self, positions: torch.Tensor, band: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3): log median beat QRS-band energy share, lowest and highest beat's over the median."""
        beat = positions >= 0
        share = self.beat_shares(positions, band, x)
        has_beat = beat.any(dim=-1)
        median = masked_median(share, beat, neutral=1.0).clamp(min=ENERGY_FLOOR)
        lowest = torch.where(beat, share, torch.full_like(share, float("inf"))).amin(dim=-1)
        highest = torch.where(beat, share, torch.zeros_like(share)).amax(dim=-1)
        ones = torch.ones_like(median)
        return torch.stack(
            (
                median.log(),
                torch.where(has_beat, lowest / median, ones),
                torch.where(has_beat, highest / median, ones),
            ),
            dim=-1,
        )

    def beat_shares(self, positions: torch.Tensor, band: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(batch, max_beats): each detected beat's share of its signal energy (±100 ms) in the QRS band;
        entries where `positions` holds no beat (-1) are meaningless."""
        half_width = max(1, round(BEAT_HALF_WIDTH_SECONDS * self.fs))
        offsets = torch.arange(-half_width, half_width + 1, device=x.device)
        around = (positions.clamp(min=0).long().unsqueeze(-1) + offsets).clamp(0, self.seq_len - 1)
        around = around.flatten(1)  # (batch, max_beats * beat samples)

        def segments(signal: torch.Tensor) -> torch.Tensor:
            """(batch, leads, max_beats, beat samples): `signal` around each beat."""
            index = around.unsqueeze(1).expand(-1, signal.shape[1], -1)
            return signal.gather(-1, index).view(*signal.shape[:2], *positions.shape[1:], -1)

        # Each beat's own mean removed, so baseline wander and offsets do not count as beat energy.
        raw = segments(x)
        total = (raw - raw.mean(dim=-1, keepdim=True)).pow(2).sum(dim=(1, -1))
        return segments(band).pow(2).sum(dim=(1, -1)) / (total + ENERGY_FLOOR)

    def intervals(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rr, valid), each (batch, max_beats - 1), from the descending `positions`: rr[:, j] is the R-R
        interval in seconds that ends at beat j (the interval before it), valid where both ends are beats."""
        # Positions descend, so a valid later neighbour means both ends of the interval are beats.
        return (positions[:, :-1] - positions[:, 1:]) / self.fs, positions[:, 1:] >= 0

    def _timing(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(batch, 9): the beat-timing features, from the descending peak positions."""
        beat = positions >= 0
        n_beats = beat.sum(dim=-1).to(x.dtype)
        beats_per_second = n_beats * (self.fs / self.seq_len)

        rr, valid = self.intervals(positions)
        count = valid.sum(dim=-1)
        n = count.to(x.dtype)
        has_rr = count > 0
        denominator = n.clamp(min=1.0)
        zeros = torch.zeros_like(rr)

        median = masked_median(rr, valid, neutral=NEUTRAL_RR_SECONDS)

        mean = torch.where(valid, rr, zeros).sum(dim=-1) / denominator
        variance = torch.where(valid, (rr - mean.unsqueeze(-1)).pow(2), zeros).sum(dim=-1) / denominator
        rr_std = variance.clamp(min=0.0).sqrt()

        successive = rr[:, :-1] - rr[:, 1:]
        successive_valid = valid[:, 1:]
        n_successive = successive_valid.sum(dim=-1).to(x.dtype).clamp(min=1.0)
        rmssd = (torch.where(successive_valid, successive.pow(2), zeros[:, 1:]).sum(dim=-1) / n_successive).sqrt()

        shortest = torch.where(has_rr, torch.where(valid, rr, zeros + math.inf).amin(dim=-1), median)
        longest = torch.where(valid, rr, zeros).amax(dim=-1)
        longest = torch.where(has_rr, longest, median)
        reference = median.unsqueeze(-1)
        premature = (valid & (rr < PREMATURE_RATIO * reference)).sum(dim=-1).to(x.dtype) / denominator
        late = (valid & (rr > LATE_RATIO * reference)).sum(dim=-1).to(x.dtype) / denominator

        features = [
            beats_per_second,
            median.log(),
            (rr_std + SPREAD_FLOOR_SECONDS).log(),
            (rmssd + SPREAD_FLOOR_SECONDS).log(),
            shortest / median,
            longest / median,
            premature,
            late,
            (count >= MIN_INTERVALS_FOR_VALIDITY).to(x.dtype),
        ]
        return torch.stack(features, dim=-1)


def relative_to_record(features: torch.Tensor, record_rr: torch.Tensor) -> torch.Tensor:
    """FEATURE_NAMES → RELATIVE_FEATURE_NAMES: the rate features over the record's median RR (seconds)."""
    reference = record_rr.clamp(min=SPREAD_FLOOR_SECONDS).unsqueeze(-1)
    rate = features[:, :1] * reference  # beats per second × seconds per record beat
    log_median = features[:, 1:2] - reference.log()
    return torch.cat((rate, log_median, features[:, 2:]), dim=-1)


def record_rr(X: torch.Tensor, groups: torch.Tensor, *, fs: float, chunk: int = 512) -> torch.Tensor:
    """(N,) float32 seconds: for each window of `X` (N, leads, samples), the median over the windows of
    its patient (`groups`, (N,) ids) of the windows' median RR, on X's device.

    The windows with a valid rhythm (three beats or more) count; a patient without one gets the median
    over all its windows (NEUTRAL_RR_SECONDS for those without an interval). Computed from the windows as
    given, without a model's conditioning, so training and `predict` compute it the same way from the
    same normalised windows; the patient's own windows are unlabelled data, so this reads no label.
    """
    if groups.shape != (X.shape[0],):
        raise ValueError(
            f"record_rr needs one patient id per window: {X.shape[0]} windows, groups {tuple(groups.shape)}"
        )
    extractor = RhythmFeatures(fs=fs, seq_len=X.shape[-1]).to(X.device).eval()
    with torch.no_grad():
        features = torch.cat([extractor(part) for part in X.split(chunk)]) if len(X) else X.new_zeros((0, N_FEATURES))
    median_rr = features[:, FEATURE_NAMES.index("log_median_rr")].exp()
    valid = features[:, FEATURE_NAMES.index("rhythm_valid")] > 0
    groups = groups.to(X.device)
    reference = torch.full_like(median_rr, NEUTRAL_RR_SECONDS)
    for patient in torch.unique(groups):
        mine = groups == patient
        counted = mine & valid if bool((mine & valid).any()) else mine
        reference[mine] = median_rr[counted].median()
    return reference


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm1d over per-window features that also takes a training batch of one.

    The trainer's last batch can hold a single window, which BatchNorm refuses in training mode
    (one value per feature has no variance): such a batch is normalised with the running
    statistics and leaves them unchanged. Evaluation and export are plain BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


RHYTHM_FUSIONS = ("concat", "average")


class RhythmBranch(nn.Module):
    """Rhythm features beside a classifier's own representation, joined one of two ways, or nothing.

    - `concat`: the standardised features (learned scale and shift) are appended to the pooled
      representation, and the classifier's FC head sees both.
    - `average`: the features feed a logistic regression of their own (standardisation + one linear
      unit), and the window's probability is the mean of the network's and that regression's
      probabilities (returned as its logit). Why: on patient-grouped CV of MIT-BIH DS1 the network
      and the timing regression erred on different patients, and the mean of two independently
      supervised probabilities generalised better there than one head over both: the network can
      no longer drown out the few timing features. It is a choice for the search, not a default. In
      training mode the two logits come back side by side, (batch, 2), so the trainer supervises each
      part alone (search/training/loop.py); evaluation, scoring and ONNX see the one fused logit.

    With `relative`, the rate features are record-relative (`RhythmFeatures.forward`): the model then
    takes each window's record RR as a second input, `model(x, record_rr)`.

    Disabled, it has no parameters, so the state_dict is the one from before the branch existed.
    """

    def __init__(
        self, *, fs: float | None, seq_len: int, enabled: bool = True, fusion: str = "concat", relative: bool = False
    ) -> None:
        super().__init__()
        if fusion not in RHYTHM_FUSIONS:
            raise ValueError(f"rhythm fusion must be one of {', '.join(RHYTHM_FUSIONS)}, got {fusion!r}")
        self.enabled, self.fusion, self.relative = enabled, fusion, enabled and relative
        self.out_features = N_FEATURES if enabled and fusion == "concat" else 0
        if enabled:
            if fs is None:
                raise ValueError("rhythm features need the sampling rate fs")
            self.features = RhythmFeatures(fs=fs, seq_len=seq_len)
            self.norm = FeatureNorm(N_FEATURES)
            if fusion == "average":
                self.regression = nn.Linear(N_FEATURES, 1)

    @classmethod
    def from_config(cls, config: Any, *, fs: float | None, seq_len: int) -> RhythmBranch:
        """The branch a classifier's `rhythm_branch` and `rhythm_fusion` ask for."""
        return cls(
            fs=fs,
            seq_len=seq_len,
            enabled=config.rhythm_branch,
            fusion=config.rhythm_fusion,
            relative=config.rhythm_relative,
        )

    def forward(self, x: torch.Tensor, record_rr: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(self.raw_features(x, record_rr))

    def raw_features(self, x: torch.Tensor, record_rr: torch.Tensor | None) -> torch.Tensor:
        """The features before standardisation: record-relative when the branch is (then `record_rr` is required)."""
        if not self.relative:
            return self.features(x)
        if record_rr is None:
            raise ValueError(
                "this model uses record-relative timing (rhythm_relative): call it as model(x, record_rr), "
                "with each window's record RR from ecgmodels.record_rr(windows, patient_ids, fs=...)"
            )
        return self.features(x, record_rr)

    @torch.enable_grad()
    def adapt(self, features: torch.Tensor, y: torch.Tensor) -> None:
        """Start from the training windows' features (`features`: (windows, N_FEATURES), labels `y`).

        The standardisation's running statistics become the features' own, so the first evaluation does
        not standardise with BatchNorm's initial 0 and 1. An `average` branch's regression starts as the
        logistic regression fitted to the standardised features (L-BFGS, ridge ADAPT_RIDGE), then trains
        on with the network. Why: from a random start it learns at the network's learning rate, and on a
        small dataset a few dozen optimiser steps leave it near random; averaged with the network, a
        random regression drags the ranking down (bench/RESULTS.md, section 9: 0.54 CV on the synthetic
        set, whose features alone reach 0.995).
        """
        mean, var = features.mean(dim=0), features.var(dim=0, unbiased=False)
        with torch.no_grad():
            self.norm.running_mean.copy_(mean)
            self.norm.running_var.copy_(var)
        if self.fusion != "average" or y.min() == y.max():
            return
        standardised = ((features - mean) / torch.sqrt(var + self.norm.eps)).detach()
        weight = torch.zeros(N_FEATURES, device=features.device, requires_grad=True)
        bias = torch.zeros((), device=features.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=ADAPT_MAX_ITER, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logits = standardised @ weight + bias
            loss = functional.binary_cross_entropy_with_logits(logits, y) + ADAPT_RIDGE * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            # The branch's FeatureNorm has its own learned scale and shift (1 and 0 at the start), so the
            # regression on its output is the regression on the standardised features.
            self.regression.weight.copy_(weight.detach().view(1, -1))
            self.regression.bias.copy_(bias.detach().view(1))

    def head_logits(
        self, head: nn.Module, pooled: torch.Tensor, x: torch.Tensor, record_rr: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The classifier's logits: `head` over `pooled` (batch, features), joined with window `x`'s rhythm
        (record-relative with `record_rr` when the branch is)."""
        if not self.enabled:
            return head(pooled).squeeze(-1)
        if self.fusion == "concat":
            return head(torch.cat((pooled, self(x, record_rr).to(pooled.dtype)), dim=-1)).squeeze(-1)
        network = head(pooled).squeeze(-1).float()
        rhythm = self.regression(self(x, record_rr)).squeeze(-1)
        if self.training:
            return torch.stack((network, rhythm), dim=-1)
        return mean_probability_logit(network, rhythm)


# The data-dependent start of `RhythmBranch.adapt`: a light ridge keeps separable features' weights
# finite, and L-BFGS converges on 12 weights in well under its iteration cap.
ADAPT_RIDGE = 1e-3
ADAPT_MAX_ITER = 100
ADAPT_CHUNK = 512  # windows per no-grad forward pass while collecting the features


@torch.no_grad()
def adapt_to_data(model: nn.Module, X: torch.Tensor, y: torch.Tensor, record_rr: torch.Tensor | None = None) -> None:
    """Start every enabled rhythm branch of `model` from the training windows `X` (labels `y`; `record_rr`
    for a model with record-relative timing), as Keras' `Normalization.adapt` starts a layer from its
    data: see `RhythmBranch.adapt`.

    The branch sees the model's own conditioned input, so the features are collected by running the
    model itself in evaluation mode (a hook on each branch's feature extractor) rather than by
    re-deriving each family's path to it. The model's mode is restored afterwards.
    """
    branches = [module for module in model.modules() if isinstance(module, RhythmBranch) and module.enabled]
    if not branches:
        return
    collected: dict[RhythmBranch, list[torch.Tensor]] = {branch: [] for branch in branches}
    hooks = [
        branch.features.register_forward_hook(lambda _m, _i, out, branch=branch: collected[branch].append(out))
        for branch in branches
    ]
    was_training = model.training
    model.eval()
    try:
        if record_rr is None:
            for chunk in X.split(ADAPT_CHUNK):
                model(chunk)
        else:
            for chunk, chunk_rr in zip(X.split(ADAPT_CHUNK), record_rr.split(ADAPT_CHUNK), strict=True):
                model(chunk, chunk_rr)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for branch in branches:
        branch.adapt(torch.cat(collected[branch]).float(), y.float())


def uses_record_rr(model: nn.Module) -> bool:
    """Whether `model` takes each window's record RR as a second input (record-relative timing)."""
    return _relative_branch(model) is not None


def record_rr_for(model: nn.Module, X: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor | None:
    """The second input `model` takes for windows `X` of patients `groups`: their record RR (`record_rr`,
    at the rate the model was built for), or None for a model without record-relative timing.
    Raises ValueError when the model needs it and `groups` is None."""
    branch = _relative_branch(model)
    if branch is None:
        return None
    if groups is None:
        raise ValueError(
            "the model uses record-relative timing (rhythm_relative), which needs the patient of every window "
            "(patient ids, e.g. groups_*.pt), and none were given"
        )
    return record_rr(X, groups, fs=branch.features.fs)


def _relative_branch(model: nn.Module) -> RhythmBranch | None:
    return next((m for m in model.modules() if isinstance(m, RhythmBranch) and m.relative), None)


def mean_probability_logit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """logit((sigmoid(a) + sigmoid(b)) / 2), computed in log space so large logits stay finite."""
    positive = torch.stack((functional.logsigmoid(a), functional.logsigmoid(b)), dim=-1)
    negative = torch.stack((functional.logsigmoid(-a), functional.logsigmoid(-b)), dim=-1)
    return torch.logsumexp(positive, dim=-1) - torch.logsumexp(negative, dim=-1)
