"""search.training.augment: each augmentation on its own, the composition, and reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from search.training.augment import (
    WANDER_MAX_HZ,
    Augmentation,
    add_baseline_wander,
    add_noise,
    drop_lead,
    scale_amplitude,
    shift_time,
)
from search.training.config import TrainConfig

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALL_ON = Augmentation(amplitude=0.2, shift=0.1, noise=0.05, wander=0.3, lead_dropout=0.5, fs=360.0)


def batch(n: int = 64, leads: int = 3, length: int = 200, *, dtype=torch.float32, device="cpu", seed=0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, leads, length, generator=g, dtype=dtype).to(device)


def gen(seed: int = 1, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


EACH = {
    "amplitude": lambda x, g: scale_amplitude(x, 0.2, g),
    "shift": lambda x, g: shift_time(x, 0.1, g),
    "noise": lambda x, g: add_noise(x, 0.1, g),
    "wander": lambda x, g: add_baseline_wander(x, 0.5, g, fs=360.0),
    "wander_without_fs": lambda x, g: add_baseline_wander(x, 0.5, g),
    "lead_dropout": lambda x, g: drop_lead(x, 0.5, g),
    "all": ALL_ON,
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(EACH))
def test_each_changes_the_batch_but_not_its_shape_dtype_or_device(name, dtype, device) -> None:
    x = batch(dtype=dtype, device=device)
    before = x.clone()
    out = EACH[name](x, gen(device=device))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert not torch.equal(out, x)
    assert torch.equal(x, before)  # the input batch (a view of the training data) is never written


def test_all_off_is_the_identity_and_draws_nothing() -> None:
    x, g = batch(), gen()
    state = g.get_state()
    off = Augmentation.from_config(TrainConfig(), fs=360.0)
    assert not off.active and off(x, g) is x
    assert torch.equal(g.get_state(), state)  # so a run without augmentation shuffles as before
    assert ALL_ON.active


@pytest.mark.parametrize("name", sorted(EACH))
def test_same_seed_same_result_other_seed_other_result(name) -> None:
    x = batch()
    a, b, c = EACH[name](x, gen(5)), EACH[name](x, gen(5)), EACH[name](x, gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_lead_dropout_zeroes_exactly_one_lead_of_the_chosen_windows() -> None:
    x = batch(n=400) + 10.0  # no sample is zero before
    out = drop_lead(x, 0.5, gen())
    zero_leads = (out == 0).all(dim=-1)  # (window, lead)
    changed = (out != x).any(dim=-1)
    assert torch.equal(zero_leads, changed)  # the only change is whole leads set to zero
    per_window = zero_leads.sum(dim=1)
    assert set(per_window.tolist()) == {0, 1}
    assert 150 < int(per_window.sum()) < 250  # about half of 400 windows
    assert set(zero_leads.nonzero()[:, 1].tolist()) == {0, 1, 2}  # any lead can go
    assert torch.equal(drop_lead(x, 1.0, gen()).eq(0).all(dim=-1).sum(dim=1), torch.ones(400, dtype=torch.long))


def test_amplitude_scales_each_window_and_lead_within_bounds() -> None:
    x = batch() + 5.0
    ratio = scale_amplitude(x, 0.2, gen()) / x
    per_lead = ratio[..., :1]
    assert torch.allclose(ratio, per_lead.expand_as(ratio))  # one factor per window and lead
    assert per_lead.min() >= 0.8 and per_lead.max() <= 1.2
    assert per_lead.std() > 0.05


def test_shift_moves_every_lead_of_a_window_together_and_pads_with_the_edge() -> None:
    length = 200
    ramp = torch.arange(length, dtype=torch.float32).expand(64, 3, length).clone()
    out = shift_time(ramp, 0.1, gen())
    shift = out[:, 0, length // 2] - ramp[:, 0, length // 2]  # source index - target index
    assert shift.abs().max() <= round(0.1 * length) and (shift != 0).any()
    expected = (torch.arange(length) + shift[:, None]).clamp(0, length - 1)
    assert torch.equal(out, expected[:, None, :].expand_as(out))


def test_noise_has_the_requested_std() -> None:
    x = batch(n=256, length=500)
    assert (add_noise(x, 0.1, gen()) - x).std().item() == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("fs", [360.0, None])
def test_wander_is_slow_and_bounded(fs) -> None:
    x, length, amplitude = batch(n=256, length=720), 720, 0.5
    wander = add_baseline_wander(x, amplitude, gen(), fs=fs) - x
    max_hz_per_sample = WANDER_MAX_HZ / fs if fs else 2.0 / length
    assert wander.abs().max() <= amplitude + 1e-5
    # a sinusoid of amplitude A and frequency f changes by at most 2*pi*f*A per sample
    assert wander.diff(dim=-1).abs().max() <= 2 * math.pi * max_hz_per_sample * amplitude + 1e-5
    assert wander.abs().max() > 0.8 * amplitude
    # one source per window, weighted per lead: the leads' wanders are multiples of one curve
    singular = torch.linalg.svdvals(wander.double())
    assert (singular[:, 1] <= 1e-5 * singular[:, 0]).all()
    weights = wander.abs().amax(dim=-1)
    assert (weights[:, 0] - weights[:, 1]).abs().max() > 0.1  # but not with one weight


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_cuda_never_syncs_with_the_host() -> None:
    x, g = batch(device="cuda"), gen(device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = ALL_ON(x, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.is_cuda
