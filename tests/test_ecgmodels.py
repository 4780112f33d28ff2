"""ecgmodels: registry, config validation, shapes, gradients, JSON round trips and ONNX export."""

from __future__ import annotations

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
}


def _expected_shape(family: str, batch: int, seq_len: int) -> tuple[int, ...]:
    return (batch, N_CHANNELS, seq_len) if is_autoencoder(family) else (batch,)


def test_family_lists_are_consistent() -> None:
    assert set(TINY) == set(FAMILIES)
    assert FAMILIES == CLASSIFIERS + AUTOENCODERS
    assert list_models() == list(FAMILIES)
    assert CLASSIFIERS == ("cnn", "cnn_lstm", "cnn_transformer", "lstm")
    assert all(is_autoencoder(name) for name in AUTOENCODERS)
    assert not any(is_autoencoder(name) for name in CLASSIFIERS)


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_build_small_models_that_run(family: str) -> None:
    model = build(family, n_channels=N_CHANNELS, seq_len=2000)
    assert 5_000 <= count_params(model) <= 150_000
    with torch.no_grad():
        out = model.eval()(torch.randn(2, N_CHANNELS, 2000))
    assert out.shape == _expected_shape(family, 2, 2000)


@pytest.mark.parametrize("family", FAMILIES)
def test_default_params_are_json_ready_and_complete(family: str) -> None:
    params = default_params(family)
    assert set(params) == model_param_names(family)
    assert json.loads(json.dumps(params)) == params  # no tuples, nothing JSON cannot hold
    assert build(family, n_channels=N_CHANNELS, seq_len=2000, **params) is not None


@pytest.mark.parametrize("seq_len", [2000, 1250])
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_forward_backward_shapes(family: str, seq_len: int) -> None:
    torch.manual_seed(0)
    model = build(family, n_channels=N_CHANNELS, seq_len=seq_len, **TINY[family])
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
    model = build(family, n_channels=N_CHANNELS, seq_len=500, **TINY[family]).eval()
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
    model = build(family, n_channels=N_CHANNELS, seq_len=500, **TINY[family]).eval()
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
        build(family, n_channels=N_CHANNELS, seq_len=seq_len, **params)


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
    original = build(family, n_channels=N_CHANNELS, seq_len=1250, **TINY[family]).eval()
    flat = {"family": family, **original.config.to_dict(), "lr": 1e-3}
    loaded = json.loads(json.dumps(flat))
    params = {key: value for key, value in loaded.items() if key in model_param_names(family)}
    rebuilt = build(loaded["family"], n_channels=N_CHANNELS, seq_len=1250, **params).eval()
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
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_matches_torch_with_a_dynamic_batch(family: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    seq_len = 500
    model = build(family, n_channels=N_CHANNELS, seq_len=seq_len, **TINY[family]).eval()
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
    for batch in (1, 3):
        x = torch.randn(batch, N_CHANNELS, seq_len)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"ecg": x.numpy()})
        assert got.shape == expected.shape == _expected_shape(family, batch, seq_len)
        assert abs(got - expected).max() < 1e-4
