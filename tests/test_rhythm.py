"""ecgmodels.rhythm: the in-graph R-peak detector and its R-R features on beat trains of known timing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import ecgmodels
from ecgmodels.rhythm import FEATURE_NAMES, FeatureNorm, RhythmFeatures, qrs_bandpass_taps

SECONDS = 5.5
# 72 bpm (0.8333 s) with one premature beat (0.5 s after its predecessor) and its compensatory pause.
BEAT_TIMES = (0.25, 1.0833, 1.9167, 2.4167, 3.5833, 4.4167, 5.25)


def beat_train(fs: float, beat_times=BEAT_TIMES, *, seconds: float = SECONDS, noise: float = 0.0) -> torch.Tensor:
    """(1, 3, samples) ECG-like leads: narrow QRS spikes, wide T waves, offsets, wander, a missing lead."""
    seq_len = round(seconds * fs)
    t = torch.arange(seq_len, dtype=torch.float64) / fs
    qrs = torch.zeros(seq_len, dtype=torch.float64)
    t_waves = torch.zeros(seq_len, dtype=torch.float64)
    for beat in beat_times:
        centre = round(beat * fs) / fs  # beats on sample positions, so the expected RRs are exact
        qrs += torch.exp(-0.5 * ((t - centre) / 0.01) ** 2)
        t_waves += 0.3 * torch.exp(-0.5 * ((t - centre - 0.3) / 0.05) ** 2)
    wander = 0.8 * torch.sin(2 * torch.pi * 0.2 * t + 1.0)
    leads = torch.stack([qrs + t_waves + wander + 2.0, -0.4 * (qrs + t_waves) + 0.5 * wander, torch.zeros(seq_len)])
    if noise:
        leads[:2] += noise * torch.randn(2, seq_len, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return leads.float().unsqueeze(0)


def expected_rr(fs: float, beat_times=BEAT_TIMES) -> np.ndarray:
    positions = np.array([round(beat * fs) for beat in beat_times])
    return np.diff(positions) / fs


def feature(features: torch.Tensor, name: str) -> torch.Tensor:
    return features[..., FEATURE_NAMES.index(name)]


@pytest.mark.parametrize("fs", [128.0, 250.0, 360.0, 500.0])
def test_detector_finds_every_beat_and_no_t_wave(fs: float) -> None:
    x = beat_train(fs, noise=0.02)
    detector = RhythmFeatures(fs=fs, seq_len=x.shape[-1])
    found = detector.peaks(detector.envelope(x), x).nonzero()[:, 1].numpy()
    truth = np.array([round(beat * fs) for beat in BEAT_TIMES])
    assert len(found) == len(truth)
    # The envelope is symmetric around a symmetric QRS: peaks land on it to within a sample.
    assert np.abs(found - truth).max() <= 1


@pytest.mark.parametrize("fs", [250.0, 360.0])
def test_features_match_the_known_rr_intervals(fs: float) -> None:
    x = beat_train(fs)
    detector = RhythmFeatures(fs=fs, seq_len=x.shape[-1])
    features = detector(x)[0]
    positions = detector.peak_positions(detector.peaks(detector.envelope(x), x))[0]
    found = np.sort(positions[positions >= 0].numpy()).astype(np.float64)
    rr, truth = np.diff(found) / fs, expected_rr(fs)
    one_sample = 1.0 / fs
    # Every interval within a sample of the truth (the T wave before the premature beat may shift
    # its envelope peak by one)...
    assert np.abs(np.diff(found) - truth * fs).max() <= 1.0 + 1e-6
    median = np.median(truth)
    assert np.exp(feature(features, "log_median_rr").item()) == pytest.approx(median, abs=one_sample)
    assert feature(features, "min_rr_ratio").item() == pytest.approx(truth.min() / median, abs=2 * one_sample / median)
    assert feature(features, "max_rr_ratio").item() == pytest.approx(truth.max() / median, abs=2 * one_sample / median)
    assert feature(features, "premature_share").item() == pytest.approx(1 / 6)  # the premature beat
    assert feature(features, "late_share").item() == pytest.approx(1 / 6)  # its compensatory pause
    # ...and the masked in-graph statistics are exactly numpy's on the detected intervals.
    assert feature(features, "beats_per_second").item() == pytest.approx(len(BEAT_TIMES) / SECONDS, rel=1e-3)
    expected = {
        "log_median_rr": np.log(np.median(rr)),
        "log_rr_std": np.log(rr.std() + 1e-3),
        "log_rmssd": np.log(np.sqrt(np.mean(np.diff(rr) ** 2)) + 1e-3),
        "min_rr_ratio": rr.min() / np.median(rr),
        "max_rr_ratio": rr.max() / np.median(rr),
        "rhythm_valid": 1.0,
    }
    for name, value in expected.items():
        assert feature(features, name).item() == pytest.approx(value, abs=1e-5), name


def test_a_regular_rhythm_has_no_premature_or_late_beats() -> None:
    fs = 360.0
    times = tuple(0.3 + 0.75 * index for index in range(7))  # 80 bpm
    features = RhythmFeatures(fs=fs, seq_len=round(SECONDS * fs))(beat_train(fs, times))[0]
    assert np.exp(feature(features, "log_median_rr").item()) == pytest.approx(0.75, abs=1 / fs)
    assert feature(features, "min_rr_ratio").item() == pytest.approx(1.0, abs=0.01)
    assert feature(features, "max_rr_ratio").item() == pytest.approx(1.0, abs=0.01)
    assert feature(features, "premature_share").item() == feature(features, "late_share").item() == 0.0
    assert feature(features, "log_rr_std").item() < np.log(2 / fs)  # below the sample resolution


def test_features_do_not_depend_on_amplitude_offset_or_lead_order() -> None:
    fs = 360.0
    x = beat_train(fs)
    detector = RhythmFeatures(fs=fs, seq_len=x.shape[-1])
    reference = detector(x)
    torch.testing.assert_close(detector(1000.0 * x - 50.0), reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(detector(1e-3 * x), reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(detector(x.flip(1)), reference)


@pytest.mark.parametrize(
    ("case", "beats"),
    [("zeros", 0), ("constant", 0), ("one beat", 1), ("two beats", 2), ("noise", None), ("huge", None)],
)
def test_degenerate_windows_give_finite_neutral_features(case: str, beats: int | None) -> None:
    fs = 360.0
    seq_len = round(SECONDS * fs)
    x = {
        "zeros": torch.zeros(1, 3, seq_len),
        "constant": torch.full((1, 3, seq_len), -3.7),
        "one beat": beat_train(fs, (2.0,)),
        "two beats": beat_train(fs, (2.0, 2.8)),
        "noise": torch.randn(1, 3, seq_len, generator=torch.Generator().manual_seed(1)),
        "huge": 1e15 * torch.randn(1, 3, seq_len, generator=torch.Generator().manual_seed(2)),
    }[case]
    features = RhythmFeatures(fs=fs, seq_len=seq_len)(x)[0]
    assert features.shape == (len(FEATURE_NAMES),)
    assert torch.isfinite(features).all(), dict(zip(FEATURE_NAMES, features.tolist(), strict=True))
    if beats is None:
        return
    assert feature(features, "beats_per_second").item() == pytest.approx(beats / SECONDS, abs=1e-3)
    assert feature(features, "rhythm_valid").item() == 0.0  # fewer than two intervals
    if beats < 2:
        assert feature(features, "log_median_rr").item() == 0.0  # 1 s: neutral
        assert feature(features, "min_rr_ratio").item() == feature(features, "max_rr_ratio").item() == 1.0
    else:
        assert np.exp(feature(features, "log_median_rr").item()) == pytest.approx(0.8, abs=1 / fs)


def test_band_pass_rejects_dc_and_passes_the_qrs_band() -> None:
    fs = 360.0
    taps = qrs_bandpass_taps(fs)
    assert len(taps) % 2 == 1 and abs(taps.sum()) < 1e-12

    def gain(hz: float) -> float:
        return abs(np.sum(taps * np.exp(-2j * np.pi * hz / fs * np.arange(len(taps)))))

    assert gain(10.0) == pytest.approx(1.0, abs=0.05)
    assert gain(0.5) < 0.05 and gain(40.0) < 0.01 and gain(60.0) < 0.01  # wander, muscle, mains


@pytest.mark.parametrize(("fs", "seq_len"), [(360.0, 2000), (250.0, 1001), (128.0, 333), (500.0, 2500), (50.0, 61)])
def test_polyphase_band_pass_equals_the_filter_applied_directly(fs: float, seq_len: int) -> None:
    """The band-pass runs in polyphase form for speed; it must be the same filter, edges included."""
    features = RhythmFeatures(fs=fs, seq_len=seq_len)
    x = torch.randn(4, 3, seq_len, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    taps = qrs_bandpass_taps(fs)
    half = len(taps) // 2
    padded = np.concatenate(
        [np.repeat(x[..., :1].numpy(), half, -1), x.numpy(), np.repeat(x[..., -1:].numpy(), half, -1)], -1
    )
    expected = np.stack(
        [[np.correlate(lead, taps, mode="valid") for lead in window] for window in padded.astype(np.float64)]
    )
    band = features.band(x)
    assert band.shape == x.shape and band.dtype == torch.float32
    np.testing.assert_allclose(band.numpy(), expected, atol=2e-5 * np.abs(expected).max())


def test_features_stay_in_float32_under_autocast() -> None:
    fs = 250.0
    x = beat_train(fs)
    detector = RhythmFeatures(fs=fs, seq_len=x.shape[-1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = detector(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, detector(x))


def test_no_gradient_flows_into_the_features() -> None:
    x = beat_train(250.0).requires_grad_(True)
    features = RhythmFeatures(fs=250.0, seq_len=x.shape[-1])(x)
    assert not features.requires_grad


def test_feature_norm_takes_a_training_batch_of_one_without_moving_its_statistics() -> None:
    norm = FeatureNorm(len(FEATURE_NAMES)).train()
    norm(torch.randn(8, len(FEATURE_NAMES)))
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    single = torch.randn(1, len(FEATURE_NAMES))
    out = norm(single)
    assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
    torch.testing.assert_close(out, norm.eval()(single))


# The legacy exporter's deprecation notice and tracer notes about shapes fixed at build time.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_rhythm_features_export_to_onnx_and_trace_with_a_dynamic_batch() -> None:
    ort = pytest.importorskip("onnxruntime")
    fs = 250.0
    seq_len = round(SECONDS * fs)
    detector = RhythmFeatures(fs=fs, seq_len=seq_len).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        detector,
        (torch.randn(2, 3, seq_len),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["ecg"],
        output_names=["features"],
        dynamic_axes={"ecg": {0: "batch"}, "features": {0: "batch"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    traced = torch.jit.trace(detector, torch.randn(2, 3, seq_len))
    generator = torch.Generator().manual_seed(3)
    synthetic = torch.cat(
        [
            beat_train(fs, noise=0.05),
            beat_train(fs, (0.5, 1.2, 2.5, 3.0, 3.6, 4.9)),
            beat_train(fs, (2.0,)),
            torch.zeros(1, 3, seq_len),
        ]
    )
    for x in (
        torch.randn(1, 3, seq_len, generator=generator),
        torch.randn(5, 3, seq_len, generator=generator),
        synthetic,
    ):
        with torch.no_grad():
            expected = detector(x)
        (got,) = session.run(None, {"ecg": x.numpy()})
        assert got.shape == (x.shape[0], len(FEATURE_NAMES))
        assert np.abs(got - expected.numpy()).max() < 1e-4
        torch.testing.assert_close(traced(x), expected)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_a_classifier_with_a_rhythm_branch_traces_with_a_dynamic_batch() -> None:
    fs = 250.0
    seq_len = round(SECONDS * fs)
    model = ecgmodels.build(
        "cnn",
        n_channels=3,
        seq_len=seq_len,
        fs=fs,
        out_channels=[4, 4],
        kernel_sizes=[5, 3],
        pool_sizes=[4, 4],
        fc_units=[],
        rhythm_branch=True,
        standardise_windows=True,
        remove_baseline=True,
    ).eval()
    traced = torch.jit.trace(model, torch.randn(2, 3, seq_len))
    x = torch.cat([beat_train(fs), torch.randn(3, 3, seq_len)])
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_a_wide_beat_among_narrow_ones_lowers_the_lowest_beat_share() -> None:
    """A ventricular-like beat (wide QRS) keeps less of its energy in the QRS band than narrow ones."""
    fs = 360.0
    narrow = beat_train(fs)
    seq_len = narrow.shape[-1]
    t = torch.arange(seq_len, dtype=torch.float32) / fs
    widened = narrow.clone()
    centre = round(BEAT_TIMES[3] * fs) / fs
    bump = torch.exp(-0.5 * ((t - centre) / 0.01) ** 2)
    wide = 1.5 * torch.exp(-0.5 * ((t - centre) / 0.04) ** 2)
    widened[0, 0] += wide - bump
    widened[0, 1] += -0.4 * (wide - bump)
    features = RhythmFeatures(fs=fs, seq_len=seq_len)(torch.cat([narrow, widened]))
    lowest = feature(features, "min_beat_qrs_share_ratio")
    highest = feature(features, "max_beat_qrs_share_ratio")
    assert lowest[0] > 0.9 and highest[0] < 1.1  # alike beats: every share near the median
    assert lowest[1] < 0.6 * lowest[0]
    assert feature(features, "log_beat_qrs_share")[0] < 0  # a share, so at most 1 (log ≤ 0)


def test_per_beat_positions_and_shares_are_the_ones_the_window_features_summarise() -> None:
    """`beats` and `beat_shares` (what a per-beat analysis reads) agree with the window's features: the
    same beats, in descending order, and the wide beat is the one with the lowest share."""
    fs = 360.0
    x = beat_train(fs)
    seq_len = x.shape[-1]
    t = torch.arange(seq_len, dtype=torch.float32) / fs
    centre = round(BEAT_TIMES[3] * fs) / fs
    change = 1.5 * torch.exp(-0.5 * ((t - centre) / 0.04) ** 2) - torch.exp(-0.5 * ((t - centre) / 0.01) ** 2)
    x[0, 0] += change
    x[0, 1] += -0.4 * change
    detector = RhythmFeatures(fs=fs, seq_len=seq_len)
    positions, band = detector.beats(x)
    found = positions[0][positions[0] >= 0].numpy()
    expected = np.array(sorted((round(b * fs) for b in BEAT_TIMES), reverse=True))
    np.testing.assert_allclose(found, expected, atol=0.05 * fs)  # a wide QRS peaks in the band off its centre
    torch.testing.assert_close(band, detector.band(x))
    shares = detector.beat_shares(positions, band, x)[0][positions[0] >= 0]
    assert int(shares.argmin()) == len(BEAT_TIMES) - 1 - 3  # descending order: the fourth beat counted from the end
    features = detector(x)
    median = float(feature(features, "log_beat_qrs_share")[0].exp())
    assert float(shares.min()) / median == pytest.approx(float(feature(features, "min_beat_qrs_share_ratio")[0]))
    assert float(shares.max()) / median == pytest.approx(float(feature(features, "max_beat_qrs_share_ratio")[0]))


def _fusion_cnn(fusion: str, fs: float, seq_len: int) -> torch.nn.Module:
    return ecgmodels.build(
        "cnn",
        n_channels=3,
        seq_len=seq_len,
        fs=fs,
        out_channels=[4],
        kernel_sizes=[5],
        pool_sizes=[4],
        fc_units=[],
        rhythm_branch=True,
        rhythm_fusion=fusion,
    )


def test_average_fusion_returns_both_parts_in_training_and_their_mean_probability_in_eval() -> None:
    fs = 250.0
    seq_len = round(SECONDS * fs)
    model = _fusion_cnn("average", fs, seq_len)
    x = torch.cat([beat_train(fs), torch.randn(3, 3, seq_len)])
    parts = model.train()(x)
    assert parts.shape == (4, 2)
    model.eval()
    with torch.no_grad():
        network = model.head(model.features(x).mean(dim=-1)).squeeze(-1)
        rhythm = model.rhythm.regression(model.rhythm(x)).squeeze(-1)
        fused = model(x)
    assert fused.shape == (4,)
    expected = (torch.sigmoid(network) + torch.sigmoid(rhythm)) / 2
    torch.testing.assert_close(torch.sigmoid(fused), expected)
    # The network's head sees only its own pooled features; concat widens it by the rhythm features instead.
    concat = _fusion_cnn("concat", fs, seq_len)
    assert concat.head[0].in_features == model.head[0].in_features + len(FEATURE_NAMES)


def test_mean_probability_logit_stays_finite_for_large_logits() -> None:
    from ecgmodels.rhythm import mean_probability_logit

    a = torch.tensor([60.0, -60.0, 60.0, 2.0])
    b = torch.tensor([60.0, -60.0, -60.0, -1.0])
    fused = mean_probability_logit(a, b)
    assert torch.isfinite(fused).all()
    assert fused[0] > 50 and fused[1] < -50 and abs(float(fused[2])) < 1e-5
    p = (torch.sigmoid(a[3]) + torch.sigmoid(b[3])) / 2
    torch.testing.assert_close(fused[3], torch.log(p / (1 - p)))


def test_an_unknown_rhythm_fusion_is_refused_by_the_config() -> None:
    with pytest.raises(ecgmodels.InvalidArchitecture, match="rhythm_fusion must be one of concat, average"):
        _fusion_cnn("sum", 250.0, 1000)


def _rhythm_windows(fs: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` windows, half with a regular rhythm (label 0), half with one premature beat (label 1), at
    heart rates of 60–86 bpm."""
    rng = np.random.default_rng(0)
    windows, labels = [], []
    for index in range(n):
        rr = rng.uniform(0.7, 1.0)
        times = list(np.arange(rng.uniform(0.1, 0.4), SECONDS - 0.1, rr))
        premature = index % 2
        if premature:
            times[3] = times[2] + 0.55 * rr  # early, with the pause after it
        windows.append(beat_train(fs, tuple(times), noise=0.02))
        labels.append(float(premature))
    return torch.cat(windows), torch.tensor(labels)


def test_adapt_starts_the_average_regression_as_the_logistic_regression_of_the_training_features() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from ecgmodels.rhythm import ADAPT_RIDGE

    fs = 250.0
    x, y = _rhythm_windows(fs, 40)
    model = _fusion_cnn("average", fs, x.shape[-1]).train()
    ecgmodels.adapt_to_data(model, x, y)
    assert model.training  # its mode is restored
    with torch.no_grad():
        features = model.rhythm.features(x)
    branch = model.rhythm
    torch.testing.assert_close(branch.norm.running_mean, features.mean(dim=0))
    torch.testing.assert_close(branch.norm.running_var, features.var(dim=0, unbiased=False))
    # The same objective as scikit-learn's: mean BCE + ridge·|w|²  ⇔  C = 1 / (2 · ridge · n).
    standardised = ((features - features.mean(dim=0)) / torch.sqrt(features.var(dim=0, unbiased=False) + 1e-5)).numpy()
    reference = LogisticRegression(C=1 / (2 * ADAPT_RIDGE * len(y)), tol=1e-10, max_iter=10_000).fit(standardised, y)
    np.testing.assert_allclose(branch.regression.weight.detach().numpy()[0], reference.coef_[0], atol=2e-3, rtol=2e-3)
    model.eval()
    with torch.no_grad():
        regression = branch.regression(branch(x)).squeeze(-1)
    assert roc_auc_score(y.numpy(), regression.numpy()) > 0.95


def test_adapt_leaves_a_concat_branch_s_weights_and_a_model_without_a_branch_alone() -> None:
    fs = 250.0
    x, y = _rhythm_windows(fs, 12)
    concat = _fusion_cnn("concat", fs, x.shape[-1])
    before = {name: value.clone() for name, value in concat.state_dict().items() if "running" not in name}
    ecgmodels.adapt_to_data(concat, x, y)
    after = concat.state_dict()
    assert all(torch.equal(value, after[name]) for name, value in before.items())
    assert not torch.equal(concat.rhythm.norm.running_var, torch.ones(len(FEATURE_NAMES)))
    plain = ecgmodels.build("cnn", n_channels=3, seq_len=x.shape[-1], fs=fs, out_channels=[4], kernel_sizes=[5],
                            pool_sizes=[4], fc_units=[])  # fmt: skip
    state = {name: value.clone() for name, value in plain.state_dict().items()}
    ecgmodels.adapt_to_data(plain, x, y)
    assert all(torch.equal(value, plain.state_dict()[name]) for name, value in state.items())


def test_the_trainer_adapts_a_rhythm_branch_before_its_first_epoch() -> None:
    from types import SimpleNamespace

    from search.training.config import TrainConfig
    from search.training.loop import TrainingRun

    fs = 250.0
    x, y = _rhythm_windows(fs, 16)
    model = _fusion_cnn("average", fs, x.shape[-1])
    reference = _fusion_cnn("average", fs, x.shape[-1])
    reference.load_state_dict(model.state_dict())
    split = SimpleNamespace(X_train=x, y_train=y.long(), X_val=x[:4], y_val=y[:4].long())
    TrainingRun(model, split, TrainConfig(epochs=1), autoencoder=False, fs=fs)
    ecgmodels.adapt_to_data(reference, x, y)
    torch.testing.assert_close(model.rhythm.regression.weight, reference.rhythm.regression.weight)
    assert model.rhythm.regression.weight.abs().sum() > 0
