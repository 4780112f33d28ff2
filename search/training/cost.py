"""What a model costs to run: parameters (exact), FLOPs of one window, latency of one window on the CPU.

These are the cost objectives and constraints of a multi-objective study. All three are measured before a
trial trains, from the freshly built model, so a constraint can stop an infeasible architecture before any
training is spent on it.

- `params`: trainable parameters, counted exactly (`ecgmodels.count_params`).
- `flops`: floating-point operations of one forward pass of the scoring model (model plus score head) on
  one window, counted by `torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2 FLOPs; it counts
  matrix products and convolutions, which dominate every family here, LSTMs included).
- `latency_ms`: the scoring model exported to ONNX and run by onnxruntime on the CPU with one thread,
  batch 1: the median of `LATENCY_REPEATS` timed runs after `LATENCY_WARMUP` untimed ones. It is a
  fixed reference, not the latency of a bedside device, and it is noisy on a busy machine (other workers
  share the cores): compare trials of one study, measured on one machine, and leave margin in a limit.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ecgmodels
from search.training.scoring import ScoringModel
from studies import COST_OBJECTIVES

# Cost objectives and constraints; every one is minimised (named once, where the study definition lives).
COSTS = COST_OBJECTIVES
LATENCY_WARMUP = 5
LATENCY_REPEATS = 30
_ONNX_OPSET = 17


class CostUnmeasurable(RuntimeError):
    """A cost could not be measured for this model (e.g. its graph does not export to ONNX)."""


@dataclass(frozen=True)
class ModelCost:
    """The costs measured for one model; None where a cost was not asked for (it takes time to measure)."""

    params: int
    flops: int | None = None
    latency_ms: float | None = None

    def get(self, name: str) -> float:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"cost {name!r} was not measured for this model")
        return float(value)

    def to_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in COSTS if getattr(self, name) is not None}


def measure_cost(model: nn.Module, *, family: str, n_channels: int, seq_len: int, wanted: set[str]) -> ModelCost:
    """The costs in `wanted` (a subset of COSTS; params always) of `model`, measured on the CPU.

    The model is put back on its device and in its training mode afterwards; its weights are untouched.
    """
    unknown = set(wanted) - set(COSTS)
    if unknown:
        raise ValueError(f"unknown cost(s) {sorted(unknown)}; expected some of {', '.join(COSTS)}")
    scorer = ScoringModel(model, ecgmodels.is_autoencoder(family))
    # A model without parameters (the storage bench's stand-in) lives on the CPU.
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    scorer.cpu().eval()
    # A model with record-relative timing takes each window's record RR too, one number per window; the
    # per-patient step that computes it before scoring is not part of the graph's cost.
    inputs = (torch.zeros(1, n_channels, seq_len),)
    if ecgmodels.uses_record_rr(model):
        inputs = (*inputs, torch.ones(1))
    try:
        flops = count_flops(scorer, *inputs) if "flops" in wanted else None
        latency = onnx_latency_ms(scorer, *inputs) if "latency_ms" in wanted else None
    except Exception as error:  # one architecture's problem: the trial fails with the reason, not the worker
        raise CostUnmeasurable(f"{family}: {type(error).__name__}: {error}") from error
    finally:
        model.to(device).train(was_training)
    return ModelCost(params=ecgmodels.count_params(model), flops=flops, latency_ms=latency)


# Modules whose eval-mode forward is one fused kernel the flop counter does not see into: counted in their
# training-mode path (the same matrix products; dropout changes values, not FLOPs, and they hold no buffers).
_FUSED_IN_EVAL = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.MultiheadAttention)
# Gates per recurrent cell: each is a matrix product over the input and one over the hidden state.
_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def count_flops(scorer: nn.Module, window: torch.Tensor, *more_inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass of `scorer` on `window` (batch 1; `more_inputs`: a second input, if any).

    torch's flop counter counts matrix products and convolutions as the dispatcher sees them; the CPU's
    recurrent kernels are opaque to it, so a recurrent layer it saw no FLOPs in is counted from its shape.
    """
    from torch.utils.flop_counter import FlopCounterMode

    fused = [module for module in scorer.modules() if isinstance(module, _FUSED_IN_EVAL)]
    steps: dict[str, int] = {}
    hooks = [
        module.register_forward_hook(_record_steps(steps, f"{type(scorer).__name__}.{name}"))
        for name, module in scorer.named_modules()
        if type(module) in _GATES
    ]
    counter = FlopCounterMode(display=False)
    try:
        for module in fused:
            module.train()
        with torch.no_grad(), counter:
            scorer(window, *more_inputs)
    finally:
        for module in fused:
            module.eval()
        for hook in hooks:
            hook.remove()
    counted = counter.get_flop_counts()
    recurrent = sum(
        _recurrent_flops(module, steps[f"{type(scorer).__name__}.{name}"])
        for name, module in scorer.named_modules()
        if type(module) in _GATES and not sum(counted.get(f"{type(scorer).__name__}.{name}", {}).values())
    )
    return int(counter.get_total_flops()) + recurrent


def _record_steps(steps: dict[str, int], name: str):
    def hook(module: nn.Module, inputs: tuple, _output: object) -> None:
        sequence = inputs[0]
        steps[name] = int(sequence.shape[1] if getattr(module, "batch_first", False) else sequence.shape[0])

    return hook


def _recurrent_flops(module: nn.Module, steps: int) -> int:
    """Multiply-adds (2 FLOPs each) of every gate's two matrix products, per step, layer and direction."""
    gates, hidden = _GATES[type(module)], module.hidden_size
    directions = 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        inputs = module.input_size if layer == 0 else hidden * directions
        total += 2 * gates * hidden * (inputs + hidden) * steps * directions
    return total


def onnx_latency_ms(scorer: nn.Module, window: torch.Tensor, *more_inputs: torch.Tensor) -> float:
    """Median milliseconds of one batch-1 forward pass through onnxruntime on one CPU thread."""
    import onnxruntime

    inputs = (window, *more_inputs)
    names = [f"input_{index}" for index in range(len(inputs))]
    with tempfile.TemporaryDirectory(prefix="ecgsearch-latency-") as folder:
        path = Path(folder) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, as in search.ship.onnx
            torch.onnx.export(scorer, inputs, str(path), dynamo=False, opset_version=_ONNX_OPSET, input_names=names)
        options = onnxruntime.SessionOptions()
        # One thread: the reference does not depend on how many cores this machine has free.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {
        name: np.ascontiguousarray(value.numpy(), dtype=np.float32) for name, value in zip(names, inputs, strict=True)
    }
    for _ in range(LATENCY_WARMUP):
        session.run(None, feed)
    timings = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        session.run(None, feed)
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(statistics.median(timings))
