"""Model builder: published sizes, sampled architectures, bad input (issue 2)."""

import random

import pytest
import torch
import torchvision

from mnas.nn import build_model, count_macs, count_params, model_stats
from mnas.space import MnasSpace, reference


def test_mnasnet_b1_matches_torchvision_mnasnet1_0_exactly():
    ours = count_params(build_model(reference("mnasnet_b1")))
    theirs = count_params(torchvision.models.mnasnet1_0())
    assert ours == theirs == 4_383_312


def test_mobilenetv2_matches_torchvision_exactly():
    ours = count_params(build_model(reference("mobilenetv2")))
    theirs = count_params(torchvision.models.mobilenet_v2())
    assert ours == theirs == 3_504_872


def test_mnasnet_a1_within_one_percent_of_paper():
    stats = model_stats(build_model(reference("mnasnet_a1")), 224)
    # Paper Table 1: 3.9M parameters, 312M multiply-adds.
    assert abs(stats.params - 3.9e6) / 3.9e6 < 0.01
    assert abs(stats.macs - 312e6) / 312e6 < 0.01


def test_mobilenetv2_macs_within_three_percent_of_300m():
    macs = count_macs(build_model(reference("mobilenetv2")), 224)
    assert abs(macs - 300e6) / 300e6 < 0.03


def test_macs_scale_with_resolution():
    model = build_model(reference("mobilenetv2"), num_classes=10)
    # Convolutions scale with pixels; only the classifier (12,800 MACs) does not.
    assert count_macs(model, 64) - 12_800 == pytest.approx(4 * (count_macs(model, 32) - 12_800))


def test_five_hundred_sampled_architectures_build_and_run_at_32px():
    # Every combination of in_channels (1, 3) and width (0.25, 0.35) gets 125 architectures.
    space = MnasSpace()
    rng = random.Random(2024)
    archs = [space.sample(rng) for _ in range(500)]
    assert len({a.hash for a in archs}) == 500
    inputs = {c: torch.randn(2, c, 32, 32) for c in (1, 3)}
    for i, arch in enumerate(archs):
        in_channels = 1 if i % 4 < 2 else 3
        model = build_model(
            arch,
            num_classes=10,
            in_channels=in_channels,
            stem_stride=1,
            width_mult=0.25 if i % 2 else 0.35,
        )
        model.eval()
        with torch.no_grad():
            out = model(inputs[in_channels])
        assert out.shape == (2, 10), arch.key


@pytest.mark.parametrize("seed", range(6))
def test_sampled_architecture_trains_a_gradient_into_every_parameter(seed):
    torch.manual_seed(seed)
    arch = MnasSpace().sample(random.Random(seed))
    model = build_model(arch, num_classes=10, in_channels=1, stem_stride=1, width_mult=0.5)
    out = model(torch.randn(8, 1, 28, 28))
    out.logsumexp(1).sum().backward()
    assert torch.isfinite(out).all()
    zero = []
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if p.grad.abs().sum() == 0:
            zero.append(name)
    # Every parameter is wired into the loss (grad is not None). A gradient can still be
    # exactly zero at initialisation in one place: a narrow SE squeeze (width 2 here) whose
    # ReLUs are all off for the batch, which zeroes both of that SE's convolutions.
    assert all(".fc1." in n or ".fc2." in n for n in zero), zero


def test_skip_ops_change_the_network():
    base = "ir_r2_k3_s2_e6_c24"
    identity = build_model([base], num_classes=10)
    pool = build_model([base + "_pool"], num_classes=10)
    noskip = build_model([base + "_noskip"], num_classes=10)
    first, second = identity.features[1], identity.features[2]
    assert not first.has_skip and second.has_skip  # shapes differ, then match
    assert pool.features[1].has_skip and pool.features[2].has_skip
    assert not noskip.features[1].has_skip and not noskip.features[2].has_skip
    # the pool shortcut projects 32 -> 24 channels with a 1x1 conv + BN
    assert count_params(pool) - count_params(identity) == 32 * 24 + 2 * 24


def test_se_squeeze_width_comes_from_input_channels():
    model = build_model(["ir_r1_k3_s1_e6_c24_se0.25"], num_classes=10)
    se = model.features[1].body[2]
    assert se.fc1.in_channels == 32 * 6 and se.fc1.out_channels == 8  # int(32 * 0.25)


def test_stem_stride_one_and_width_mult():
    model = build_model(reference("mobilenetv2"), num_classes=10, stem_stride=1, width_mult=0.5)
    assert model.features[0][0].stride == (1, 1)
    assert model.features[0][0].out_channels == 16
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"width_mult": 0}, "width_mult=0 must be > 0"),
        ({"width_mult": -1.0}, "width_mult=-1.0 must be > 0"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"in_channels": 2.5}, "in_channels=2.5"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_bad_builder_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_model(reference("mobilenetv2"), **kwargs)
