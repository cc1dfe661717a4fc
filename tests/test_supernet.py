"""The weight-sharing supernet on tiny sizes: slicing, sub-network = stand-alone network,
training determinism, scoring, the evaluator, checkpoint reuse, the search's end check."""

import dataclasses
import json
import logging
import math
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from mnas.conf import register_configs
from mnas.conf.runner import build_search, load_resume_config
from mnas.data import DataSpec, get_dataset
from mnas.evaluate import OK
from mnas.evaluate.supernet import (
    SUPERNET_CHECKPOINT,
    SupernetEvaluator,
    SupernetSettings,
    load_or_train,
)
from mnas.evaluate.trained import ModelSpec
from mnas.latency import LatencySettings, make_latency_evaluator
from mnas.nn.builder import build_model
from mnas.nn.fuse import fold_batchnorm
from mnas.nn.stats import model_stats
from mnas.nn.supernet import Supernet, largest_specs, smallest_specs
from mnas.nn.zero_cost import naswot, synflow
from mnas.space import MnasSpace, make_space, parse_blocks
from mnas.training.bn import recalibrate_bn
from mnas.training.supernet import (
    PathSampler,
    PathTrainer,
    ScoreConfig,
    SupernetTrainConfig,
    probe_subnets,
    score_subnet,
    stage_plan,
    train_supernet,
)
from mnas.training.trainer import evaluate

ROOT = Path(__file__).resolve().parents[1]
SPACE = MnasSpace()
DIGITS = DataSpec("digits", image_size=8, test_size=0)
MODEL = ModelSpec(num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1, dropout=0.0)
QUICK = SupernetTrainConfig(
    epochs=0.1, batch_size=32, subnets_per_step=2, sandwich=False, distill=False
)
SCORE = ScoreConfig(bn_batches=1, bn_batch_size=32, val_images=64, eval_batch_size=64)


def macs_latency():
    """The latency of the tests' set-up (8 px, width 0.25) as MACs: no timing."""
    return make_latency_evaluator(
        LatencySettings(kind="macs", cache=None),
        input_size=8,
        in_channels=1,
        num_classes=10,
        width_mult=0.25,
        stem_stride=1,
    )


def supernet(**kwargs) -> Supernet:
    torch.manual_seed(0)
    args = dict(num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1, dropout=0.0)
    return Supernet(SPACE, **{**args, **kwargs})


def random_specs(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [SPACE.decode(SPACE.sample(rng).tokens) for _ in range(n)]


@pytest.mark.parametrize("sharing", ["crop", "separate"])
def test_subnetwork_is_the_standalone_network_with_sliced_weights(sharing):
    net = supernet(kernel_sharing=sharing)
    x = torch.randn(4, 1, 8, 8)
    for specs in [largest_specs(SPACE), smallest_specs(SPACE), *random_specs(6)]:
        sub = net.extract(specs)
        ref = build_model(specs, 10, 1, 0.25, 1, dropout=0.0)
        got = {k: v.shape for k, v in sub.state_dict().items()}
        assert got == {k: v.shape for k, v in ref.state_dict().items()}
        sub.train()  # batch statistics, as the supernet always normalises
        torch.testing.assert_close(net(x, specs), sub(x), rtol=1e-5, atol=1e-5)


def test_slices_share_leading_channels_and_kernel_centres():
    net = supernet()
    ir6 = parse_blocks(
        "ds_r1_k3_s1_c16,ir_r2_k5_s2_e6_c24,"
        + ",".join(
            [
                "ds_r3_k3_s2_c40",
                "ds_r4_k3_s2_c64",
                "ds_r3_k3_s1_c96",
                "ds_r3_k3_s2_c160",
                "ds_r1_k3_s1_c320",
            ]
        )
    )
    ir3 = parse_blocks(
        ",".join(s.to_string().replace("_e6", "_e3").replace("_k5", "_k3") for s in ir6)
    )
    w6 = net.extract(ir6).features[2].body[0][0].weight  # block 2's expand 1x1
    w3 = net.extract(ir3).features[2].body[0][0].weight
    assert w3.shape[0] * 2 == w6.shape[0]
    torch.testing.assert_close(w3, w6[: w3.shape[0]])  # mbconv3 = first half of mbconv6
    dw6 = net.extract(ir6).features[2].body[1][0].weight  # 5x5 depthwise
    dw3 = net.extract(ir3).features[2].body[1][0].weight  # 3x3 depthwise
    torch.testing.assert_close(dw3, dw6[: dw3.shape[0], :, 1:4, 1:4])
    sep = supernet(kernel_sharing="separate")
    keys = [k for k in sep.state_dict() if k.startswith("blocks.1.0.mbconv.dw.weight")]
    assert sorted(keys) == ["blocks.1.0.mbconv.dw.weight.w.k3", "blocks.1.0.mbconv.dw.weight.w.k5"]


def test_skip_is_parameter_free_and_pool_projection_is_shared():
    net = supernet()
    base = (
        "ir_r1_k3_s1_e6_c16,ir_r2_k3_s2_e6_c24,ir_r3_k3_s2_e6_c32,ir_r4_k3_s2_e6_c64,"
        "ir_r3_k3_s1_e6_c96,ir_r3_k3_s2_e6_c160,ir_r1_k3_s1_e6_c320"
    )
    plain_net = net.extract(parse_blocks(base.replace(",", "_noskip,") + "_noskip"))
    ident = net.extract(parse_blocks(base))
    pool = net.extract(parse_blocks(base.replace(",", "_pool,") + "_pool"))
    n_plain = sum(p.numel() for p in plain_net.parameters())
    assert sum(p.numel() for p in ident.parameters()) == n_plain
    assert sum(p.numel() for p in pool.parameters()) > n_plain
    proj = pool.features[7].shortcut.proj[0].weight  # block 4's first layer: 8 -> 16 channels
    assert tuple(proj.shape[:2]) == (16, 8)
    torch.testing.assert_close(proj, net.blocks[3][0].proj.weight.get(16, 8, 1))


def test_supernet_rejects_what_it_cannot_express():
    with pytest.raises(ValueError, match="kernel_sharing"):
        supernet(kernel_sharing="mean")
    with pytest.raises(ValueError, match="width_mult"):
        supernet(width_mult=0)
    wide = [*largest_specs(SPACE)]
    wide[0] = parse_blocks("ir_r1_k3_s1_e6_c64")[0]
    with pytest.raises(ValueError, match="block 0"):
        supernet().extract(wide)
    with pytest.raises(ValueError, match="sampling"):
        SupernetTrainConfig(sampling="greedy")
    with pytest.raises(ValueError, match="distill"):
        SupernetTrainConfig(sandwich=False, distill=True)
    with pytest.raises(ValueError, match="bn="):
        ScoreConfig(bn="running")


def test_fair_sampling_trains_every_choice_equally_and_warmup_widens():
    sampler = PathSampler(SPACE, "fair", seed=3)
    paths = sampler.sample(12)
    for j, d in enumerate(SPACE.decisions):
        counts = [sum(p[j] == c for p in paths) for c in range(len(d.choices))]
        assert len(set(counts)) == 1, (d, counts)
    widest = PathSampler(SPACE, "uniform", seed=3).sample(5, warm=1.0)
    for tokens in widest:
        specs = SPACE.decode(tokens)
        assert [s.out_chs for s in specs] == [s.out_chs for s in largest_specs(SPACE)]
        assert [s.repeats for s in specs] == [s.repeats for s in largest_specs(SPACE)]


def test_training_and_scoring_are_deterministic():
    data = get_dataset(DIGITS)
    states, scores = [], []
    for _ in range(2):
        net = supernet()
        result = train_supernet(net, data, QUICK)
        assert result.steps == math.ceil(0.1 * len(data.train_y) / 32) and not result.diverged
        states.append(net.state_dict())
        scores.append([score_subnet(net, s, data, SCORE) for s in random_specs(3)])
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k])
    assert scores[0] == scores[1]
    assert all(0 <= acc <= 1 for acc, _ in scores[0])
    batch_mode = score_subnet(net, random_specs(1)[0], data, ScoreConfig(bn="batch"))
    assert 0 <= batch_mode[0] <= 1


def test_folded_scoring_matches_the_plain_recipe_and_leaves_the_supernet_alone():
    """score_subnet's CPU shortcuts (channels-last, BN folded after re-estimation, chunks of
    CPU_CHUNK) give the score of the plain recipe: extract, re-estimate BN, evaluate."""
    data = get_dataset(DIGITS)
    net = supernet()
    train_supernet(net, data, QUICK)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    config = ScoreConfig(bn_batches=2, bn_batch_size=32, val_images=120, eval_batch_size=120)
    for specs in random_specs(4, seed=3):
        got = score_subnet(net, specs, data, config)
        sub = net.extract(specs)
        recalibrate_bn(
            sub,
            data.train_x,
            data.mean,
            data.std,
            batch_size=32,
            num_batches=2,
            generator=torch.Generator().manual_seed(0),
        )
        want = evaluate(sub, data.val_x[:120], data.val_y[:120], data.mean, data.std, 120)
        assert got[0] == want[0]
        assert got[1] == pytest.approx(want[1], rel=1e-4)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fold_batchnorm_computes_the_eval_network():
    torch.manual_seed(1)
    for specs in [largest_specs(SPACE), *random_specs(3, seed=5)]:
        model = build_model(specs, 10, 1, 0.25, 1, dropout=0.0)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in bns:  # statistics and affine terms far from the identity
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
        model.eval()
        x = torch.randn(5, 1, 8, 8)
        want = model(x)
        shared = {id(p) for p in model.parameters()}
        assert fold_batchnorm(model) == len(bns)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-5)
        assert fold_batchnorm(model) == 0
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert sum(id(c.weight) not in shared for c in convs) == len(bns)  # new tensors
    bn_only = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="conv has 3 outputs, BatchNorm 4"):
        fold_batchnorm(bn_only)


def test_sandwich_with_distillation_trains():
    net = supernet()
    cfg = SupernetTrainConfig(epochs=0.05, batch_size=32, subnets_per_step=3)
    data = get_dataset(DIGITS)
    result = train_supernet(net, data, cfg)
    assert (
        result.steps == math.ceil(0.05 * len(data.train_y) / 32)
        and result.loss > 0
        and not result.diverged
    )


def test_checkpoint_is_reused_and_must_match(tmp_path, monkeypatch):
    settings = SupernetSettings(train=QUICK, score=SCORE)
    path = tmp_path / SUPERNET_CHECKPOINT
    net, record = load_or_train(path, SPACE, MODEL, DIGITS, settings)
    assert path.exists() and record["steps"] == math.ceil(
        0.1 * len(get_dataset(DIGITS).train_y) / 32
    )

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("mnas.evaluate.supernet.train_supernet", no_training)
    again, record2 = load_or_train(path, SPACE, MODEL, DIGITS, settings)
    assert record2 == record
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    other = SupernetSettings(train=SupernetTrainConfig(epochs=0.2, sandwich=False, distill=False))
    with pytest.raises(ValueError, match="train"):
        load_or_train(path, SPACE, MODEL, DIGITS, other)
    # where the data lies is not what it is: the same data under another root is reused
    # (a supernet trained on a GPU machine), other data is refused
    moved = dataclasses.replace(DIGITS, root=str(tmp_path / "elsewhere"), download=True)
    assert load_or_train(path, SPACE, MODEL, moved, settings)[1] == record
    with pytest.raises(ValueError, match="data"):
        load_or_train(path, SPACE, MODEL, dataclasses.replace(DIGITS, seed=1), settings)
    # a checkpoint written when the identity still held the root loads too
    saved = torch.load(path, weights_only=False)
    saved["identity"]["data"]["root"] = "/somewhere/else"
    torch.save(saved, path)
    assert load_or_train(path, SPACE, MODEL, DIGITS, settings)[1] == record


def test_evaluator_scores_times_and_caches(tmp_path, monkeypatch):
    latency = macs_latency()
    ev = SupernetEvaluator(
        latency, SPACE, MODEL, DIGITS, SupernetSettings(QUICK, SCORE), tmp_path, input_size=8
    )
    archs = [SPACE.sample(random.Random(i)) for i in range(3)]
    extracted = []
    real_extract = Supernet.extract

    def counted(self, specs):
        extracted.append(specs)
        return real_extract(self, specs)

    monkeypatch.setattr(Supernet, "extract", counted)
    assert ev.net is not None  # trained and probed first
    extracted.clear()
    seen = []
    results = ev.evaluate(archs, seen.append)
    assert [r.arch for r in results] == archs and seen == results
    # one extraction per child gives both its size and its score
    assert extracted == [SPACE.decode(a.tokens) for a in archs]
    for r in results:
        assert r.status == OK and 0 <= r.accuracy <= 1 and r.latency_ms > 0
        assert r.params > 0 and r.macs > 0 and r.extra == {"accuracy_source": "supernet"}
        specs = SPACE.decode(r.arch.tokens)
        assert r.accuracy == score_subnet(ev.net, specs, get_dataset(DIGITS), SCORE)[0]
        size = model_stats(build_model(specs, 10, 1, 0.25, 1, dropout=0.0), 8, 1)
        assert (r.params, r.macs) == (size.params, size.macs)
    calls = []
    monkeypatch.setattr(
        "mnas.evaluate.supernet.score_network", lambda *a: calls.append(a) or (0.5, 1.0)
    )
    again = ev.evaluate(archs[:1], lambda r: None)
    assert calls == [] and again[0].accuracy == results[0].accuracy
    assert ev.standalone(archs, lambda r: None) == [] and ev.standalone_top_k == 0


def test_zero_cost_proxies_leave_the_network_alone():
    net = build_model(random_specs(1)[0], 10, 1, 0.25, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = synflow(net, (1, 8, 8))
    w = naswot(net, torch.randn(16, 1, 8, 8))
    assert s > 0 and w > -float("inf")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    bigger = build_model(largest_specs(SPACE), 10, 1, 0.25, 1)
    assert synflow(bigger, (1, 8, 8)) > synflow(
        build_model(smallest_specs(SPACE), 10, 1, 0.25, 1), (1, 8, 8)
    )


SEARCH = [
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.1",
    "trainer.batch_size=32",
    "trainer.bn_recalibrate_batches=1",
    "latency=macs",
    "latency.cache=null",
    "latency.warmup=1",
    "latency.min_runs=5",
    "latency.max_runs=20",
    "latency.time_cap_s=0.05",
    "evaluator=supernet",
    "evaluator.supernet.epochs=0.1",
    "evaluator.supernet.batch_size=32",
    "evaluator.supernet.bn_batch_size=32",
    "evaluator.supernet.bn_batches=1",
    "evaluator.supernet.val_images=64",
    "evaluator.supernet.standalone_top_k=1",
    "reward.target_ms=5",
]


def make_cfg(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="search", overrides=[*SEARCH, *overrides])


def test_supernet_search_reports_both_scores_and_resumes(tmp_path, monkeypatch):
    cfg = make_cfg("steps=1", "batch_size=3", "tensorboard=false")
    search = build_search(cfg, tmp_path)
    summary = search.run()
    search.evaluator.close()
    assert summary.evaluated == 3
    assert (tmp_path / SUPERNET_CHECKPOINT).exists()
    doc = json.loads((tmp_path / "pareto.json").read_text())
    assert "standalone_accuracy" in doc["labels"]
    checked = [p for p in doc["points"] if "standalone_accuracy" in p]
    assert len(checked) == 1
    assert 0 <= checked[0]["standalone_accuracy"] <= 1
    assert checked[0]["standalone_latency_ms"] > 0  # timed on ONNX Runtime, in ms
    assert checked[0]["accuracy_source"] == "supernet"
    mtime = (tmp_path / SUPERNET_CHECKPOINT).stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("supernet trained again on resume")

    monkeypatch.setattr("mnas.evaluate.supernet.train_supernet", no_training)
    resumed = build_search(load_resume_config(tmp_path, ["steps=2"]), tmp_path)
    summary = resumed.run()
    resumed.evaluator.close()
    assert summary.steps == 2
    assert (tmp_path / SUPERNET_CHECKPOINT).stat().st_mtime_ns == mtime
    lines = (tmp_path / "standalone.jsonl").read_text().splitlines()
    assert len({json.loads(x)["hash"] for x in lines}) == len(lines)


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluator.supernet.subnets_per_step=0", "subnets_per_step"),
        ("evaluator.supernet.sandwich=false", "distill"),
        ("evaluator.supernet.val_images=-1", "val_images"),
        ("evaluator.supernet.standalone_top_k=-2", "standalone_top_k"),
        ("evaluator.supernet.epochs=0", "epochs"),
        ("evaluator.supernet.joint_steps=-1", "joint_steps=-1"),
        ("evaluator.supernet.joint_lr=0", "joint_lr=0"),
    ],
)
def test_bad_supernet_config_fails_before_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        build_search(make_cfg(override), tmp_path)
    assert not (tmp_path / SUPERNET_CHECKPOINT).exists()


def test_unknown_supernet_choice_fails_at_compose():
    with pytest.raises(ConfigCompositionException):
        make_cfg("evaluator.supernet.sampling=greedy")


def test_probe_scores_the_same_random_subnetworks_of_any_supernet():
    data = get_dataset(DIGITS)
    net = supernet()
    accs = probe_subnets(net, data, SCORE, n=3)
    assert len(accs) == 3 and all(0 <= a <= 1 for a in accs)
    assert probe_subnets(net, data, SCORE, n=3) == accs  # a fixed draw
    # the probe scores exactly what score_subnet gives those architectures
    rng = random.Random(0)
    first = SPACE.decode(SPACE.sample(rng).tokens)
    assert accs[0] == score_subnet(net, first, data, SCORE)[0]
    with pytest.raises(ValueError, match="n=0"):
        probe_subnets(net, data, SCORE, n=0)


@pytest.mark.parametrize("probe, warned", [([0.1, 0.12, 0.09, 0.11], True), ([0.6, 0.7], False)])
def test_supernet_whose_subnetworks_are_at_chance_is_reported(
    tmp_path, monkeypatch, caplog, probe, warned
):
    latency = make_latency_evaluator(LatencySettings(kind="macs", cache=None), input_size=8)
    ev = SupernetEvaluator(
        latency, SPACE, MODEL, DIGITS, SupernetSettings(QUICK, SCORE), tmp_path, input_size=8
    )
    monkeypatch.setattr("mnas.evaluate.supernet.probe_subnets", lambda *a, **k: list(probe))
    with caplog.at_level(logging.INFO, logger="mnas.evaluate.supernet"):
        assert ev.net is ev.net  # trained (and probed) once
    assert ev.record["probe_accuracy"] == probe and ev.record["chance_accuracy"] == 0.1
    text = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned:
        assert len(text) == 1 and "will not rank architectures" in text[0]
        assert "10.5%" in text[0] and "chance 10.0%" in text[0]
    else:
        assert text == [] and "65.0%" in caplog.text


MBCONV = make_space("mnas_mbconv")


def test_mbconv_subspace_holds_only_what_a_supernet_can_share():
    rng = random.Random(0)
    for _ in range(20):
        for s in MBCONV.decode(MBCONV.sample(rng).tokens):
            assert s.block_type == "ir" and s.exp_ratio in (3, 6) and s.skip == "identity"
    assert MBCONV.size() == 72**7
    base = MBCONV.decode(MBCONV.baseline_tokens())
    full = SPACE.decode(SPACE.baseline_tokens())
    # MobileNetV2 but for its expansion-1 first block, which becomes the smallest mbconv
    assert base[0].block_type == "ir" and base[0].exp_ratio == 3
    assert base[1:] == full[1:]
    with pytest.raises(ValueError, match="not in space 'mnas_mbconv'"):
        MBCONV.encode(full)
    net = Supernet(MBCONV, 10, 1, width_mult=0.25, dropout=0.0)
    slot = net.blocks[0][0]
    assert slot.conv is None and slot.dconv is None and slot.mbconv is not None
    size = sum(p.numel() for p in net.parameters())
    assert size < sum(p.numel() for p in supernet().parameters())
    x = torch.randn(4, 1, 8, 8)
    for specs in [largest_specs(MBCONV), smallest_specs(MBCONV), base]:
        sub = net.extract(specs)
        sub.train()
        torch.testing.assert_close(net(x, specs), sub(x), rtol=1e-5, atol=1e-5)


def test_progressive_shrinking_opens_decisions_stage_by_stage():
    plan = stage_plan(MBCONV, 100)
    assert [first for first, _ in plan] == [0, 15, 30, 60]
    largest = MBCONV.encode(largest_specs(MBCONV))
    names = MBCONV.DECISION_NAMES
    first_closed, last_closed = plan[0][1], plan[-1][1]
    assert list(first_closed) == list(largest)  # stage 0: the largest network only
    assert all(t is None for t in last_closed)  # last stage: the whole space
    stage1 = plan[1][1]
    for j, t in enumerate(stage1):
        assert (t is None) == (names[j % len(names)] in ("kernel", "se_ratio"))
    paths = PathSampler(MBCONV, "fair", seed=1).sample(6, closed=stage1)
    for p in paths:
        for j, t in enumerate(stage1):
            if t is not None:
                assert p[j] == t
    assert len({p for p in paths}) > 1  # the open decisions still vary
    data = get_dataset(DIGITS)
    net = Supernet(MBCONV, 10, 1, width_mult=0.25, dropout=0.0)
    cfg = SupernetTrainConfig(epochs=0.1, batch_size=32, schedule="progressive")
    result = train_supernet(net, data, cfg)
    assert result.steps == math.ceil(0.1 * len(data.train_y) / 32) and not result.diverged
    with pytest.raises(ValueError, match="schedule='greedy'"):
        SupernetTrainConfig(schedule="greedy")


def test_a_supernet_of_another_space_is_not_reused(tmp_path):
    settings = SupernetSettings(train=QUICK, score=SCORE)
    path = tmp_path / SUPERNET_CHECKPOINT
    load_or_train(path, MBCONV, MODEL, DIGITS, settings)
    with pytest.raises(ValueError, match="space"):
        load_or_train(path, SPACE, MODEL, DIGITS, settings)


def test_search_over_the_mbconv_subspace_with_progressive_shrinking(tmp_path):
    cfg = make_cfg(
        "space=mnas_mbconv",
        "evaluator.supernet.schedule=progressive",
        "evaluator.supernet.standalone_top_k=0",
        "steps=1",
        "batch_size=3",
        "tensorboard=false",
    )
    search = build_search(cfg, tmp_path)
    summary = search.run()
    search.evaluator.close()
    assert summary.evaluated == 3
    records = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert r["status"] == OK and r["space"] == "mnas_mbconv"
        assert all(b.startswith("ir_") and not b.endswith(("skip", "pool")) for b in r["blocks"])
    with pytest.raises(ConfigCompositionException):
        make_cfg("evaluator.supernet.schedule=sometimes")


def test_fashion_mnist_supernet_experiment_is_the_measured_recipe():
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=["experiment=fashion_mnist_supernet"])
    sn = cfg.evaluator.supernet
    assert cfg.space.name == "mnas_mbconv" and cfg.evaluator.name == "supernet"
    assert (sn.epochs, sn.lr, sn.subnets_per_step, sn.sandwich, sn.distill) == (
        4,
        0.02,
        1,
        False,
        False,
    )
    assert cfg.data.name == "fashion_mnist" and cfg.data.train_size == 10000


def test_joint_steps_train_the_given_path_and_resume_exactly():
    data = get_dataset(DIGITS)
    cfg = dataclasses.replace(QUICK, batch_size=32)
    path = SPACE.decode(SPACE.sample(random.Random(3)).tokens)
    net = supernet()
    # lr 0.01: at 0.05 this path's loss rose on an AVX-512 CPU (3.8 -> 4.6 over 40 steps)
    trainer = PathTrainer(net, data, cfg, lr=0.01)
    losses = [trainer.train([path], 20) for _ in range(4)]
    assert losses[-1] < 0.8 * losses[0]  # the path learns (2.30 -> 1.34 there)
    assert trainer.steps == 80 and not net.training
    assert not any(p.requires_grad for p in net.parameters())  # frozen again for scoring
    # 3 + 3 steps in one trainer = 3 steps, a checkpoint, a new trainer, 3 steps
    a, b = supernet(), supernet()
    ta = PathTrainer(a, data, cfg, lr=0.05)
    ta.train([path], 3)
    state = ta.state_dict()
    ta.train([path], 3)
    PathTrainer(b, data, cfg, lr=0.05).train([path], 3)
    tb = PathTrainer(b, data, cfg, lr=0.05)
    tb.load_state_dict(state)
    tb.train([path], 3)
    assert tb.steps == ta.steps == 6
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="joint_lr=0"):
        PathTrainer(net, data, cfg, lr=0)


def test_joint_search_trains_between_batches_and_resumes(tmp_path, monkeypatch):
    cfg = make_cfg(
        "steps=1",
        "batch_size=3",
        "tensorboard=false",
        "evaluator.supernet.joint_steps=2",
        "evaluator.supernet.standalone_top_k=0",
    )
    search = build_search(cfg, tmp_path)
    assert search.run().evaluated == 3
    search.evaluator.close()
    saved = torch.load(tmp_path / SUPERNET_CHECKPOINT, weights_only=False)
    assert saved["joint"]["cpu_seconds"] > 0  # its cost, for the bench's throughput
    assert saved["record"]["joint_cpu_seconds"] == saved["joint"]["cpu_seconds"]
    assert saved["joint"]["steps"] == 6 and saved["identity"]["joint"] == {"steps": 2, "lr": 0.005}
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["supernet_joint_steps"] for r in rows] == [6, 6, 6]

    def no_training(*args, **kwargs):
        raise AssertionError("supernet trained again on resume")

    monkeypatch.setattr("mnas.evaluate.supernet.train_supernet", no_training)
    resumed = build_search(load_resume_config(tmp_path, ["steps=2"]), tmp_path)
    resumed.run()
    resumed.evaluator.close()
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    new = len(rows) - 3
    assert new >= 1 and rows[-1]["supernet_joint_steps"] == 6 + 2 * new  # went on from 6
    # a frozen search, or one with other joint settings, refuses the jointly trained supernet
    for other in (0, 3):
        elsewhere = tmp_path / f"other{other}"
        elsewhere.mkdir()
        (elsewhere / SUPERNET_CHECKPOINT).write_bytes((tmp_path / SUPERNET_CHECKPOINT).read_bytes())
        cfg = make_cfg(
            "evaluator.supernet.standalone_top_k=0", f"evaluator.supernet.joint_steps={other}"
        )
        with pytest.raises(ValueError, match="other joint settings"):
            _ = build_search(cfg, elsewhere).evaluator.net


def test_a_frozen_supernet_starts_a_joint_search(tmp_path, monkeypatch):
    frozen = SupernetSettings(QUICK, SCORE)
    net, record = load_or_train(tmp_path / SUPERNET_CHECKPOINT, SPACE, MODEL, DIGITS, frozen)
    monkeypatch.setattr(
        "mnas.evaluate.supernet.train_supernet", lambda *a, **k: pytest.fail("trained again")
    )
    joint = dataclasses.replace(frozen, joint_steps=1)
    again, record2 = load_or_train(tmp_path / SUPERNET_CHECKPOINT, SPACE, MODEL, DIGITS, joint)
    assert record2 == record
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_joint_training_that_diverges_fails_the_batch_not_the_search(tmp_path, monkeypatch):
    latency = macs_latency()
    settings = SupernetSettings(QUICK, SCORE, joint_steps=1)
    ev = SupernetEvaluator(latency, SPACE, MODEL, DIGITS, settings, tmp_path, input_size=8)

    def diverge(self, paths, steps):
        raise ValueError("joint supernet training diverged at step 0 (loss nan)")

    monkeypatch.setattr(PathTrainer, "train", diverge)
    archs = [SPACE.sample(random.Random(i)) for i in range(2)]
    results = ev.evaluate(archs, lambda r: None)
    assert [r.status for r in results] == ["failed", "failed"]
    assert all("supernet: joint supernet training diverged" in r.reason for r in results)


def test_fp16_joint_steps_keep_their_loss_scaler():
    data = get_dataset(DIGITS)
    cfg = dataclasses.replace(QUICK, amp="fp16")  # what "auto" picks on a GPU without bf16
    path = SPACE.decode(SPACE.sample(random.Random(3)).tokens)
    trainer = PathTrainer(supernet(), data, cfg, lr=0.01)
    assert trainer.scaler.is_enabled()
    assert math.isfinite(trainer.train([path], 2))
    state = trainer.state_dict()
    assert state["scaler"]["scale"] > 0
    again = PathTrainer(supernet(), data, cfg, lr=0.01)
    again.load_state_dict(state)
    assert again.scaler.get_scale() == trainer.scaler.get_scale() and again.steps == 2
    assert not PathTrainer(supernet(), data, QUICK, lr=0.01).scaler.is_enabled()  # fp32 on CPU
