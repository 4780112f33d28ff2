"""ecgmodels: registry, config validation, shapes, gradients, JSON round trips, conditioning and ONNX export."""

from __future__ import annotations

import hashlib
import io
import json
import math

import pytest
import torch

import ecgmodels
from ecgmodels import (
    AUTOENCODERS,
    CLASSIFIERS,
    FAMILIES,
    MIN_REDUCED_LEN,
    InvalidArchitecture,
    build,
    count_params,
    default_params,
    is_autoencoder,
    list_models,
    model_param_names,
    reduced_length,
)
from ecgmodels.blocks import ACTIVATION_NAMES, ConvStack, SinusoidalPositionalEncoding, make_activation

N_CHANNELS = 3
# The sampling rate the family tests build with: low, so the rhythm detector's filters stay short.
FS = 100.0
_CONV = {"out_channels": [4, 8], "kernel_sizes": [5, 3], "pool_sizes": [4, 2], "conv_dropout": 0.1}

# Small enough that every test below runs in milliseconds on a shared 2-core CPU.
TINY: dict[str, dict] = {
    "cnn": {**_CONV, "fc_units": [8], "head": "avg"},
    "cnn_lstm": {**_CONV, "lstm_hidden": 8, "fc_units": [8]},
    "cnn_transformer": {**_CONV, "d_model": 8, "nhead": 2, "tf_layers": 1, "dim_feedforward": 16, "fc_units": []},
    "lstm": {"downsample": 10, "lstm_hidden": 8, "lstm_layers": 2, "lstm_dropout": 0.1, "fc_units": [8]},
    "cnn_ae": {**_CONV, "latent_channels": 4},
    "cnn_lstm_ae": {**_CONV, "lstm_hidden": 8, "latent_dim": 4},
    "lstm_ae": {"downsample": 10, "lstm_hidden": 8, "lstm_layers": 2, "latent_dim": 4, "bidirectional": True},
    "rhythm": {"fc_units": [8]},
}


def _expected_shape(family: str, batch: int, seq_len: int) -> tuple[int, ...]:
    return (batch, N_CHANNELS, seq_len) if is_autoencoder(family) else (batch,)


def test_family_lists_are_consistent() -> None:
    assert set(TINY) == set(FAMILIES)
    assert FAMILIES == CLASSIFIERS + AUTOENCODERS
    assert list_models() == list(FAMILIES)
    assert CLASSIFIERS == ("cnn", "cnn_lstm", "cnn_transformer", "lstm", "rhythm")
    assert all(is_autoencoder(name) for name in AUTOENCODERS)
    assert not any(is_autoencoder(name) for name in CLASSIFIERS)


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_build_small_models_that_run(family: str) -> None:
    model = build(family, n_channels=N_CHANNELS, fs=FS, seq_len=2000)
    # The rhythm family reads 9 features: its default head is small by nature.
    assert (500 if family == "rhythm" else 5_000) <= count_params(model) <= 150_000
    with torch.no_grad():
        out = model.eval()(torch.randn(2, N_CHANNELS, 2000))
    assert out.shape == _expected_shape(family, 2, 2000)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_params_are_json_ready_and_complete(family: str) -> None:
    params = default_params(family)
    assert set(params) == model_param_names(family)
    assert json.loads(json.dumps(params)) == params  # no tuples, nothing JSON cannot hold
    assert build(family, n_channels=N_CHANNELS, fs=FS, seq_len=2000, **params) is not None


@pytest.mark.parametrize("seq_len", [2000, 1250])
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_forward_backward_shapes(family: str, seq_len: int) -> None:
    torch.manual_seed(0)
    model = build(family, n_channels=N_CHANNELS, fs=FS, seq_len=seq_len, **TINY[family])
    x = torch.randn(2, N_CHANNELS, seq_len)
    out = model(x)
    assert out.shape == _expected_shape(family, 2, seq_len)
    loss = (out - x).pow(2).mean() if is_autoencoder(family) else out.sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_of_one_keeps_the_batch_axis(family: str) -> None:
    model = build(family, n_channels=N_CHANNELS, fs=FS, seq_len=500, **TINY[family]).eval()
    with torch.no_grad():
        out = model(torch.randn(1, N_CHANNELS, 500))
    assert out.shape == _expected_shape(family, 1, 500)


@pytest.mark.parametrize("seq_len", [997, 1001, 360])
@pytest.mark.parametrize("family", AUTOENCODERS)
def test_autoencoders_reproduce_any_input_length(family: str, seq_len: int) -> None:
    params = {**TINY[family], "pool_sizes": [3, 2]} if "pool_sizes" in TINY[family] else TINY[family]
    model = build(family, n_channels=2, seq_len=seq_len, **params).eval()
    x = torch.randn(2, 2, seq_len)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_classifiers_return_raw_logits(family: str) -> None:
    model = build(family, n_channels=N_CHANNELS, fs=FS, seq_len=500, **TINY[family]).eval()
    final = model.head[-1]
    with torch.no_grad():
        final.bias.fill_(5.0)
        final.weight.zero_()
        out = model(torch.randn(2, N_CHANNELS, 500))
    # A sigmoid inside the model would squash this to ≈0.993.
    torch.testing.assert_close(out, torch.full((2,), 5.0))


@pytest.mark.parametrize("head", ["flatten", "avg", "max"])
def test_cnn_heads(head: str) -> None:
    seq_len = 1000
    model = build("cnn", n_channels=N_CHANNELS, seq_len=seq_len, **{**TINY["cnn"], "head": head})
    first_fc = model.head[0]
    steps = reduced_length(seq_len, _CONV["pool_sizes"])
    assert first_fc.in_features == (8 * steps if head == "flatten" else 8)
    assert model(torch.randn(2, N_CHANNELS, seq_len)).shape == (2,)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lstm_head_reads_the_final_hidden_state_of_both_directions(bidirectional: bool) -> None:
    params = {**TINY["lstm"], "bidirectional": bidirectional, "lstm_layers": 1}
    model = build("lstm", n_channels=N_CHANNELS, seq_len=500, **params).eval()
    x = torch.randn(2, N_CHANNELS, 500)
    with torch.no_grad():
        output, _ = model.lstm(model.downsample(x).transpose(1, 2))
        hidden = model.config.lstm_hidden
        # The backward direction has read the whole sequence at step 0, not at step -1.
        both = torch.cat((output[:, -1, :hidden], output[:, 0, hidden:]), dim=-1)
        summary = both if bidirectional else output[:, -1]
        torch.testing.assert_close(model(x), model.head(summary).squeeze(-1))


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_every_activation_builds(activation: str) -> None:
    assert type(make_activation(activation)).__name__.lower().replace("_", "") == activation.replace("_", "")
    model = build("cnn", n_channels=N_CHANNELS, seq_len=500, **TINY["cnn"], activation=activation)
    assert model(torch.randn(2, N_CHANNELS, 500)).shape == (2,)


def test_batch_norm_switch() -> None:
    with_bn = build("cnn", n_channels=N_CHANNELS, seq_len=500, **TINY["cnn"])
    without_bn = build("cnn", n_channels=N_CHANNELS, seq_len=500, **TINY["cnn"], batch_norm=False)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in without_bn.modules())
    # Without BatchNorm the convolutions need their own bias.
    assert all(m.bias is not None for m in without_bn.modules() if isinstance(m, torch.nn.Conv1d))


def test_unknown_family_lists_the_valid_ones() -> None:
    for call in (
        lambda: build("resnet", n_channels=3, seq_len=2000),
        lambda: model_param_names("resnet"),
        lambda: default_params("resnet"),
        lambda: is_autoencoder("resnet"),
    ):
        with pytest.raises(ValueError, match="resnet") as info:
            call()
        assert all(name in str(info.value) for name in FAMILIES)


def test_unknown_parameter_is_named_with_the_family_parameters() -> None:
    with pytest.raises(ValueError, match="'lstm_hiden'") as info:
        build("cnn_lstm", n_channels=3, seq_len=2000, lstm_hiden=32)
    assert not isinstance(info.value, InvalidArchitecture)
    assert all(name in str(info.value) for name in model_param_names("cnn_lstm"))
    # A parameter of another family is just as unknown here.
    with pytest.raises(ValueError, match="'d_model'"):
        build("cnn", n_channels=3, seq_len=2000, d_model=64)


@pytest.mark.parametrize(
    ("family", "params", "seq_len", "reason"),
    [
        ("cnn", {"kernel_sizes": [7, 5]}, 2000, "one entry per conv layer"),
        ("cnn", {"pool_sizes": [2, 2, 2, 2]}, 2000, "one entry per conv layer"),
        ("cnn_ae", {"kernel_sizes": [7, 4, 3]}, 2000, "must be odd"),
        ("cnn_lstm", {"pool_sizes": [8, 8, 8]}, 2000, "shrink seq_len 2000 to 3 steps"),
        ("cnn", {}, 63, "shrink seq_len 63 to 3 steps"),
        ("lstm", {"downsample": 600}, 2000, "shrinks seq_len 2000 to 3 steps"),
        ("lstm_ae", {"downsample": 0}, 2000, "downsample must be >= 1"),
        ("cnn_transformer", {"d_model": 30, "nhead": 4}, 2000, "nhead 4 must divide d_model 30"),
        ("cnn_transformer", {"tf_layers": 0}, 2000, "tf_layers must be >= 1"),
        ("cnn_lstm", {"lstm_hidden": 0}, 2000, "lstm_hidden must be >= 1"),
        ("cnn", {"out_channels": [16, 0, 64]}, 2000, "out_channels entries must be >= 1"),
        ("cnn", {"out_channels": [], "kernel_sizes": [], "pool_sizes": []}, 2000, "must not be empty"),
        ("cnn", {"pool_sizes": [4, 0, 2]}, 2000, "pool_sizes entries must be >= 1"),
        ("cnn", {"fc_units": [64, 0]}, 2000, "fc_units entries must be >= 1"),
        ("cnn_ae", {"latent_channels": -1}, 2000, "latent_channels must be >= 1"),
        ("cnn_lstm_ae", {"latent_dim": 0}, 2000, "latent_dim must be >= 1"),
        ("cnn", {"conv_dropout": 1.0}, 2000, r"conv_dropout must be in \[0, 1\)"),
        ("cnn", {"fc_dropout": -0.1}, 2000, r"fc_dropout must be in \[0, 1\)"),
        ("lstm", {"lstm_dropout": 1.5}, 2000, r"lstm_dropout must be in \[0, 1\)"),
        ("cnn_transformer", {"tf_dropout": float("nan")}, 2000, r"tf_dropout must be in \[0, 1\)"),
        ("cnn", {"activation": "swish"}, 2000, "activation must be one of relu, gelu, elu, leaky_relu"),
        ("cnn", {"head": "attention"}, 2000, "head must be one of flatten, avg, max"),
        ("cnn", {"kernel_sizes": "753"}, 2000, "kernel_sizes must be a list of integers"),
        ("cnn", {"out_channels": [16.0, 32, 64]}, 2000, "out_channels must be a list of integers"),
        ("cnn_lstm", {"lstm_hidden": 64.0}, 2000, "lstm_hidden must be an integer"),
        ("cnn_lstm", {"bidirectional": 1}, 2000, "bidirectional must be true or false"),
        ("cnn", {"activation": None}, 2000, "activation must be a string"),
        ("cnn", {"fc_dropout": "0.3"}, 2000, "fc_dropout must be a number"),
        ("cnn", {}, 0, "seq_len must be an integer >= 1"),
    ],
)
def test_invalid_architectures_say_why(family: str, params: dict, seq_len: int, reason: str) -> None:
    with pytest.raises(InvalidArchitecture, match=reason):
        build(family, n_channels=N_CHANNELS, fs=FS, seq_len=seq_len, **params)


def test_zero_leads_is_refused() -> None:
    with pytest.raises(InvalidArchitecture, match="n_channels must be an integer >= 1"):
        build("lstm", n_channels=0, seq_len=2000)


def test_conv_stack_layer_order() -> None:
    stack = ConvStack(3, [4, 8], [3, 5], [2, 1], batch_norm=True, activation="gelu", dropout=0.1)
    kinds = [type(layer) for layer in stack]
    nn = torch.nn
    assert kinds[:5] == [nn.Conv1d, nn.BatchNorm1d, nn.GELU, nn.Dropout, nn.MaxPool1d]  # pool 2
    assert kinds[5:] == [nn.Conv1d, nn.BatchNorm1d, nn.GELU, nn.Dropout]  # pool 1: no pooling layer
    assert stack.out_features == 8
    assert stack(torch.randn(2, 3, 100)).shape == (2, 8, 50)  # 'same' padding keeps length until pooled


def test_reduced_length_boundary() -> None:
    pools = [4, 2, 2]
    assert reduced_length(2000, pools) == 125
    assert reduced_length(1250, pools) == 78  # floor at every layer, as MaxPool1d does
    shortest = MIN_REDUCED_LEN * math.prod(pools)
    assert reduced_length(shortest, pools) == MIN_REDUCED_LEN
    build("cnn", n_channels=1, seq_len=shortest, pool_sizes=pools)
    with pytest.raises(InvalidArchitecture):
        build("cnn", n_channels=1, seq_len=shortest - 1, pool_sizes=pools)


def test_lists_may_arrive_as_tuples() -> None:
    as_tuples = {key: tuple(value) if isinstance(value, list) else value for key, value in TINY["cnn"].items()}
    torch.manual_seed(0)
    from_tuples = build("cnn", n_channels=N_CHANNELS, seq_len=500, **as_tuples)
    torch.manual_seed(0)
    from_lists = build("cnn", n_channels=N_CHANNELS, seq_len=500, **TINY["cnn"])
    assert from_tuples.config == from_lists.config
    assert from_tuples.config.to_dict() == TINY["cnn"] | {
        k: v for k, v in default_params("cnn").items() if k not in TINY["cnn"]
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_config_round_trips_through_json(family: str) -> None:
    torch.manual_seed(0)
    original = build(family, n_channels=N_CHANNELS, fs=FS, seq_len=1250, **TINY[family]).eval()
    flat = {"family": family, **original.config.to_dict(), "lr": 1e-3}
    loaded = json.loads(json.dumps(flat))
    params = {key: value for key, value in loaded.items() if key in model_param_names(family)}
    rebuilt = build(loaded["family"], n_channels=N_CHANNELS, fs=FS, seq_len=1250, **params).eval()
    assert rebuilt.config == original.config
    assert list(rebuilt.state_dict()) == list(original.state_dict())
    assert count_params(rebuilt) == count_params(original)
    rebuilt.load_state_dict(original.state_dict())
    x = torch.randn(2, N_CHANNELS, 1250)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x))


def test_count_params_counts_trainable_only() -> None:
    model = build("cnn", n_channels=N_CHANNELS, seq_len=500, **TINY["cnn"])
    total = count_params(model)
    assert total == sum(p.numel() for p in model.parameters())
    model.features.requires_grad_(False)
    assert count_params(model) == total - sum(p.numel() for p in model.features.parameters())


def test_registering_a_taken_name_is_refused() -> None:
    from ecgmodels.cnn import CNNConfig

    with pytest.raises(ValueError, match="already registered"):
        ecgmodels.register("cnn", CNNConfig, autoencoder=False)(torch.nn.Identity)


def test_make_config_validates_without_building() -> None:
    config = ecgmodels.make_config("cnn_transformer", n_channels=3, seq_len=2000, d_model=32, nhead=8)
    assert (config.d_model, config.nhead) == (32, 8)
    with pytest.raises(InvalidArchitecture, match="nhead 8 must divide d_model 36"):
        ecgmodels.make_config("cnn_transformer", n_channels=3, seq_len=2000, d_model=36, nhead=8)


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_positional_encoding(d_model: int) -> None:
    encoding = SinusoidalPositionalEncoding(d_model, max_len=50)
    assert "pe" not in encoding.state_dict()
    code = encoding(torch.zeros(2, 10, d_model))
    assert code.shape == (2, 10, d_model)
    torch.testing.assert_close(code[0, 0, 0::2], torch.zeros(math.ceil(d_model / 2)))  # sin(0)
    torch.testing.assert_close(code[0, 0, 1::2], torch.ones(d_model // 2))  # cos(0)
    torch.testing.assert_close(code[0, 3, 0], torch.tensor(math.sin(3.0)))  # lowest frequency: 1 rad/step


# The legacy exporter's deprecation notice and torch-internal tracer notes (shape checks in nn.LSTM
# and multi-head attention that hold for every batch size).
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("options", ["off", "all"])
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_matches_torch_with_a_dynamic_batch(family: str, options: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    seq_len = 500
    params = {**TINY[family], **_options(family, **OPTION_SETS[options])}
    model = build(family, n_channels=N_CHANNELS, fs=FS, seq_len=seq_len, **params).eval()
    buffer = io.BytesIO()
    # The TorchScript exporter: the dynamo one needs onnxscript, which is not a dependency.
    torch.onnx.export(
        model,
        (torch.randn(2, N_CHANNELS, seq_len),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["ecg"],
        output_names=["output"],
        dynamic_axes={"ecg": {0: "batch"}, "output": {0: "batch"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for x in (torch.randn(1, N_CHANNELS, seq_len), _beating_windows(3, seq_len)):
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"ecg": x.numpy()})
        assert got.shape == expected.shape == _expected_shape(family, x.shape[0], seq_len)
        assert abs(got - expected).max() < 1e-4


def _beating_windows(batch: int, seq_len: int, fs: float = FS) -> torch.Tensor:
    """ECG-like windows: spikes at 50–150 bpm, an offset, slow wander, noise, one missing lead."""
    generator = torch.Generator().manual_seed(batch)
    t = torch.arange(seq_len, dtype=torch.float32)
    windows = []
    for _ in range(batch):
        period = fs * 60.0 / float(torch.empty(1).uniform_(50.0, 150.0, generator=generator))
        phase = float(torch.rand(1, generator=generator)) * period
        spikes = sum(
            torch.exp(-0.5 * ((t - centre) / (0.012 * fs)) ** 2) for centre in torch.arange(phase, seq_len, period)
        )
        wander = 0.5 * torch.sin(2 * math.pi * 0.2 * t / fs + float(torch.rand(1, generator=generator)) * 6.0)
        leads = [spikes * gain + wander + offset for gain, offset in ((1.0, 0.3), (0.4, -1.0), (-0.7, 0.0))]
        windows.append(torch.stack(leads[:N_CHANNELS]))
    x = torch.stack(windows) + 0.05 * torch.randn(batch, N_CHANNELS, seq_len, generator=generator)
    x[-1, -1] = 0.0
    return x


# ---- sampling rate, input conditioning, rhythm branch ------------------------------------------

# sha256 (first 16 hex digits) of [(state_dict key, shape), ...] of each family built from its
# defaults before conditioning, the rhythm branch and fs existed: a config without the new keys
# must keep building exactly these models (saved bundles and trials reload into them).
STATE_DICT_FINGERPRINTS = {
    "cnn": "78d809259c2c471e",
    "cnn_lstm": "0653b7fe811dc418",
    "cnn_transformer": "df5f5b9b7f66f1b9",
    "lstm": "c167e90d502f32ad",
    "cnn_ae": "cf4c2b6d04a6838f",
    "cnn_lstm_ae": "197a55fa3e41086b",
    "lstm_ae": "fe8247fac193edeb",
}
NEW_OPTIONS = ("standardise_windows", "remove_baseline", "rhythm_branch")


def _state_fingerprint(model: torch.nn.Module) -> str:
    layout = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]


def _options(family: str, *, conditioning: bool, rhythm: bool) -> dict:
    """The new options a family has, switched on as asked."""
    names = model_param_names(family)
    options = {"standardise_windows": conditioning, "remove_baseline": conditioning, "rhythm_branch": rhythm}
    return {name: value for name, value in options.items() if name in names}


OPTION_SETS = {
    "off": {"conditioning": False, "rhythm": False},
    "conditioned": {"conditioning": True, "rhythm": False},
    "rhythm": {"conditioning": False, "rhythm": True},
    "all": {"conditioning": True, "rhythm": True},
}


@pytest.mark.parametrize("family", sorted(STATE_DICT_FINGERPRINTS))
def test_configs_without_the_new_keys_build_the_models_they_built_before(family: str) -> None:
    assert set(STATE_DICT_FINGERPRINTS) == set(FAMILIES) - {"rhythm"}
    old_style = build(family, n_channels=N_CHANNELS, seq_len=2000)
    assert old_style.fs is None
    assert _state_fingerprint(old_style) == STATE_DICT_FINGERPRINTS[family]
    # fs alone, or the new options spelled out as off, change nothing either: same layout, same weights.
    torch.manual_seed(0)
    reference = build(family, n_channels=N_CHANNELS, seq_len=500, **TINY[family]).eval()
    torch.manual_seed(0)
    explicit = build(
        family,
        n_channels=N_CHANNELS,
        seq_len=500,
        fs=FS,
        **TINY[family],
        **_options(family, conditioning=False, rhythm=False),
    ).eval()
    assert explicit.fs == FS and _state_fingerprint(explicit) == _state_fingerprint(reference)
    x = torch.randn(2, N_CHANNELS, 500)
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), reference(x), rtol=0, atol=0)


def test_every_family_has_the_conditioning_options_and_every_classifier_the_rhythm_branch() -> None:
    for family in FAMILIES:
        params = default_params(family)
        assert params["standardise_windows"] is False and params["remove_baseline"] is False
        has_branch = family in CLASSIFIERS and family != "rhythm"
        assert ("rhythm_branch" in params) is has_branch
        if has_branch:
            assert params["rhythm_branch"] is False


@pytest.mark.parametrize("option", ["remove_baseline", "rhythm_branch"])
@pytest.mark.parametrize("family", CLASSIFIERS[:4])
def test_options_that_need_fs_refuse_without_it(family: str, option: str) -> None:
    with pytest.raises(InvalidArchitecture, match=f"{option} needs the sampling rate"):
        build(family, n_channels=N_CHANNELS, seq_len=500, **TINY[family], **{option: True})
    with pytest.raises(InvalidArchitecture, match=f"{option} needs the sampling rate"):
        ecgmodels.make_config(family, n_channels=N_CHANNELS, seq_len=500, **{option: True})
    # Standardising needs no sampling rate.
    build(family, n_channels=N_CHANNELS, seq_len=500, **TINY[family], standardise_windows=True)


@pytest.mark.parametrize(
    ("family", "params", "seq_len", "fs", "reason"),
    [
        ("rhythm", {}, 500, None, "the rhythm family needs the sampling rate"),
        ("rhythm", {}, 40, 100.0, "at least 52 samples"),
        ("cnn", {"rhythm_branch": True}, 100, 360.0, "at least 182 samples"),
        ("cnn_ae", {"remove_baseline": True}, 500, None, "remove_baseline needs the sampling rate"),
        ("lstm_ae", {"remove_baseline": True}, 500, None, "remove_baseline needs the sampling rate"),
        ("cnn", {}, 500, 0, "fs must be a sampling rate"),
        ("cnn", {}, 500, "360", "fs must be a sampling rate"),
        ("cnn", {}, 500, True, "fs must be a sampling rate"),
        ("cnn", {}, 500, math.nan, "fs must be a sampling rate"),
        ("rhythm", {"activation": "swish"}, 500, 100.0, "activation must be one of"),
        ("cnn", {"standardise_windows": 1}, 500, None, "standardise_windows must be true or false"),
    ],
)
def test_invalid_sampling_rates_and_rhythm_inputs_say_why(
    family: str, params: dict, seq_len: int, fs: object, reason: str
) -> None:
    with pytest.raises(InvalidArchitecture, match=reason):
        build(family, n_channels=N_CHANNELS, seq_len=seq_len, fs=fs, **{**TINY[family], **params})


def test_fs_is_kept_as_a_float() -> None:
    model = build("rhythm", n_channels=1, seq_len=500, fs=250)
    assert model.fs == 250.0 and isinstance(model.fs, float)
    assert "fs" not in model.config.to_dict()  # a property of the data, like seq_len


@pytest.mark.parametrize("options", sorted(OPTION_SETS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_builds_and_trains_a_step_with_the_options(family: str, options: str) -> None:
    torch.manual_seed(0)
    params = {**TINY[family], **_options(family, **OPTION_SETS[options])}
    model = build(family, n_channels=N_CHANNELS, seq_len=500, fs=FS, **params)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(3, N_CHANNELS, 500) * 2 + 1
    x[0, 1] = 0.0  # a missing lead
    out = model(x)
    assert out.shape == _expected_shape(family, 3, 500)
    loss = (out - x).pow(2).mean() if is_autoencoder(family) else out.sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    optimiser.step()
    assert torch.isfinite(model(x)).all()
    # A training batch of one (the last batch of an epoch can be) works, with or without a rhythm branch.
    assert model(x[:1]).shape == _expected_shape(family, 1, 500)


@pytest.mark.parametrize("family", CLASSIFIERS[:4])
def test_the_rhythm_branch_widens_the_head_input_by_the_rhythm_features(family: str) -> None:
    off = build(family, n_channels=N_CHANNELS, seq_len=500, fs=FS, **TINY[family])
    on = build(family, n_channels=N_CHANNELS, seq_len=500, fs=FS, **TINY[family], rhythm_branch=True)
    assert on.head[0].in_features == off.head[0].in_features + len(ecgmodels.RHYTHM_FEATURE_NAMES)
    added = set(on.state_dict()) - set(off.state_dict())
    assert added and all(key.startswith("rhythm.norm.") for key in added)  # the filter is not state


@pytest.mark.parametrize("family", AUTOENCODERS)
def test_conditioned_autoencoders_answer_in_the_input_space(family: str) -> None:
    seq_len = 997  # not a multiple of any pool, nor of the baseline filter
    model = build(
        family, n_channels=2, seq_len=seq_len, fs=FS, **TINY[family], standardise_windows=True, remove_baseline=True
    ).eval()
    t = torch.arange(seq_len) / FS
    x = 3.0 + 2.0 * torch.sin(2 * math.pi * 0.3 * t) + 0.5 * torch.randn(2, 2, seq_len)  # offset, wander, signal
    x[1, 0] = 0.0
    with torch.no_grad():
        assert model(x).shape == x.shape
        # A perfect inner network gives back exactly the raw input: the score keeps its meaning.
        model.reconstruct = lambda conditioned: conditioned
        torch.testing.assert_close(model(x), x, atol=1e-4, rtol=0)


def test_standardising_zero_scores_each_lead_and_keeps_a_missing_lead_at_zero() -> None:
    conditioning = ecgmodels.InputConditioning(standardise_windows=True, remove_baseline=False, fs=None, seq_len=400)
    x = torch.randn(4, 3, 400) * torch.tensor([0.1, 5.0, 1.0]).view(1, 3, 1) + 7.0
    x[:, 2] = 0.0
    x[0, 1] = -2.5  # a constant lead
    z = conditioning(x)
    torch.testing.assert_close(z[:, :2].mean(dim=-1)[1:], torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[1:, :2].std(dim=-1, correction=0), torch.ones(3, 2), atol=1e-3, rtol=0)
    assert torch.equal(z[:, 2], torch.zeros(4, 400)) and torch.equal(z[0, 1], torch.zeros(400))


def test_baseline_removal_takes_out_wander_and_offsets_but_keeps_the_beats() -> None:
    fs, seq_len = 360.0, 2000
    conditioning = ecgmodels.InputConditioning(standardise_windows=False, remove_baseline=True, fs=fs, seq_len=seq_len)
    assert conditioning.baseline is not None and conditioning.baseline.half_width == 180  # one second in all
    t = torch.arange(seq_len) / fs
    wander = 4.0 + 1.5 * torch.sin(2 * math.pi * 0.15 * t + 0.4)  # up to 1.4 units/s at the edges
    # A beat 50 samples before the end: it must not tilt the trend line that continues the edge.
    beats = sum(torch.exp(-0.5 * ((torch.arange(seq_len) - centre) / 4.0) ** 2) for centre in range(150, 2000, 300))

    def condition(x: torch.Tensor) -> torch.Tensor:
        return conditioning(x.view(1, 1, -1))[0, 0]

    # What may remain: a 1 s average passes 4 % of a 0.15 Hz sine (0.055 here) and the beats'
    # own average (0.03–0.06); the edges do no worse than the middle (reflect padding: 0.30).
    assert (condition(wander)).abs().max() < 0.06
    assert (condition(beats) - beats).abs().max() < 0.06
    cleaned = condition(wander + beats)
    residual = (cleaned - beats).abs()
    assert residual.max() < 0.11
    assert torch.cat((residual[:20], residual[-20:])).max() <= residual[200:-200].max()
    assert cleaned[150] > 0.9 and cleaned[1950] > 0.9  # beats keep their height, at the edge too
    ramp = condition(torch.arange(seq_len) * 0.01 - 3.0)
    assert ramp.abs().max() < 1e-3  # a linear baseline goes entirely, at the edges too


def test_baseline_removal_works_on_windows_shorter_than_its_filter() -> None:
    conditioning = ecgmodels.InputConditioning(standardise_windows=False, remove_baseline=True, fs=360.0, seq_len=50)
    ramp = torch.linspace(-1.0, 2.0, 50).view(1, 1, 50)
    assert conditioning(ramp).abs().max() < 1e-4  # the trend continues past both edges
    assert conditioning(torch.randn(2, 1, 50)).shape == (2, 1, 50)
    with pytest.raises(InvalidArchitecture, match="at least 2 samples"):
        ecgmodels.ConditioningParams(remove_baseline=True).check_input(n_channels=1, seq_len=1, fs=360.0)
    with pytest.raises(InvalidArchitecture, match="fs >= 3 Hz"):
        ecgmodels.ConditioningParams(remove_baseline=True).check_input(n_channels=1, seq_len=100, fs=1.0)
