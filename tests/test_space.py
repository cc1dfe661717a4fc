"""Search space, architectures and block strings (issue 2)."""

import json
import random
import subprocess
import sys

import pytest

from mnas.space import (
    REFERENCE_BLOCKS,
    Architecture,
    BlockSpec,
    MnasSpace,
    parse_block,
    reference,
    resolve_arch,
    round_filters,
)


def test_space_has_six_decisions_per_block_and_paper_size():
    space = MnasSpace()
    assert len(space.decisions) == 42
    per_block = [len(d.choices) for d in space.decisions[:6]]
    assert per_block == [4, 2, 2, 3, 3, 3]  # 432 choices per block (paper section 4.1)
    assert space.size() == 432**7 == 2_807_929_681_968_365_568


def test_filter_choices_are_distinct_multiples_of_eight():
    for base in (16, 24, 32, 64, 96, 160, 320):
        widths = [round_filters(base, m) for m in (0.75, 1.0, 1.25)]
        assert all(w % 8 == 0 for w in widths)
        assert len(set(widths)) == 3, (base, widths)
    assert [round_filters(16, m) for m in (0.75, 1.0, 1.25)] == [8, 16, 24]
    assert [round_filters(24, m) for m in (0.75, 1.0, 1.25)] == [16, 24, 32]


def test_decode_first_block_of_known_tokens():
    space = MnasSpace()
    # block 1: mbconv3, k5, se .25, pool skip, x1.25 filters, +1 layer
    tokens = [2, 1, 1, 2, 2, 2] + [0] * 36
    spec = space.decode(tokens)[0]
    assert spec == BlockSpec(
        "ir", repeats=2, kernel=5, stride=1, out_chs=24, exp_ratio=3, se_ratio=0.25, skip="pool"
    )
    assert spec.to_string() == "ir_r2_k5_s1_e3_c24_se0.25_pool"
    # layers never drop below one
    assert space.decode([0] * 42)[0].repeats == 1


def test_mobilenetv2_is_an_architecture_of_the_space():
    space = MnasSpace()
    tokens = space.baseline_tokens()
    arch = space.architecture(tokens)
    assert arch.key == reference("mobilenetv2").key
    assert arch.hash == reference("mobilenetv2").hash
    assert tokens[:6] == (1, 0, 0, 1, 1, 1)  # dconv, k3, no SE, identity, x1.0, +0


@pytest.mark.parametrize("name", sorted(REFERENCE_BLOCKS))
def test_reference_block_strings_round_trip(name):
    for text in REFERENCE_BLOCKS[name]:
        assert parse_block(text).to_string() == text


def test_sampled_block_strings_round_trip_and_json():
    space = MnasSpace()
    rng = random.Random(0)
    for _ in range(200):
        arch = space.sample(rng)
        specs = space.decode(arch.tokens)
        assert tuple(parse_block(s) for s in arch.blocks) == specs
        # Tokens may differ where two choices give one network (repeats clamp at 1), so
        # encoding must give tokens that decode to the same blocks.
        assert space.decode(space.encode(specs)) == specs
        assert space.architecture(space.encode(specs)).hash == arch.hash
        again = Architecture.from_json(arch.to_json())
        assert again == arch and again.hash == arch.hash


def test_hash_is_stable_across_processes():
    arch = MnasSpace().sample(random.Random(3))
    code = (
        "import json,sys; from mnas.space import Architecture; "
        "print(Architecture.from_dict(json.loads(sys.argv[1])).hash)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arch.to_dict())],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert out.stdout.strip() == arch.hash
    assert len(arch.hash) == 16


def test_wrong_token_count_names_expected_count():
    with pytest.raises(ValueError, match="needs 42 tokens, got 41"):
        MnasSpace().decode([0] * 41)


def test_token_out_of_range_names_position_and_range():
    tokens = [0] * 42
    tokens[7] = 2  # kernel of block 1 has two choices
    with pytest.raises(ValueError, match=r"token 7 \(kernel of block 1\) is 2; allowed 0\.\.1"):
        MnasSpace().decode(tokens)


def test_unknown_reference_lists_known_names():
    with pytest.raises(ValueError, match="unknown reference architecture 'mnasnet_z9'.*mnasnet_a1"):
        reference("mnasnet_z9")
    with pytest.raises(ValueError, match="neither a reference name"):
        resolve_arch("resnet50")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("xx_r1_k3_s1_c16", "type 'xx'"),
        ("ir_r1_k3_s1_c16", "needs an expansion"),
        ("ir_r1_k3_s1_e6", r"missing field\(s\) \['c'\]"),
        ("ds_r1_k3_s1_c16_zz", "cannot parse 'zz'"),
        ("ds_r1_k4_s1_c16", "kernel=4 must be odd"),
        ("ds_r1_k3_s1_e6_c16", "only allowed on ir"),
    ],
)
def test_unparseable_block_strings(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_block(text)


def test_encode_rejects_blocks_outside_the_space():
    a1 = [parse_block(s) for s in REFERENCE_BLOCKS["mnasnet_a1"]]
    with pytest.raises(ValueError, match=r"block 4 \(ir_r2_k3_s1_e6_c112_se0.25\) is not in space"):
        MnasSpace().encode(a1)
