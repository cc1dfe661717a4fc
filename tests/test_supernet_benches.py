"""The issue-13 benches' pure functions: which front points bench/supernet_e2e.py re-trains
and its hypervolume, how bench/supernet_recipes.py ranks recipes on a tuning truth, how
bench/supernet.py reads a truth of several seeds, and bench/standalone_truth.py's job order."""

from __future__ import annotations

import json
import math
import random

import pytest
from bench_modules import load_bench


def _row(h, acc, ms, reward, status="ok"):
    return {"hash": h, "accuracy": acc, "latency_ms": ms, "reward": reward, "status": status}


def test_picks_are_front_points_by_reward():
    e2e = load_bench("supernet_e2e")
    rows = [
        _row("a", 0.80, 1.0, 0.80),
        _row("b", 0.85, 2.0, 0.84),
        _row("c", 0.84, 2.5, 0.90),  # dominated by b: never picked, whatever its reward
        _row("d", 0.90, 3.0, 0.83),
        _row("e", None, 0.5, 0.0, status="failed"),
    ]
    assert [r["hash"] for r in e2e.picks(rows, 2)] == ["b", "d"]
    assert [r["hash"] for r in e2e.picks(rows, 5)] == ["b", "d", "a"]
    assert e2e.picks([], 3) == []


def test_report_hypervolume_against_one_corner(tmp_path, capsys):
    e2e = load_bench("supernet_e2e")
    base = {"blocks": [], "search_accuracy": 0.8, "lut_latency_ms": 1.0, "reward": 0.8}
    rows = [
        {**base, "arm": "supernet", "hash": "s1", "measured_latency_ms": 1.0,
         "test_accuracy": 0.80, "diverged": False},
        {**base, "arm": "supernet", "hash": "s2", "measured_latency_ms": 2.0,
         "test_accuracy": 0.85, "diverged": False},
        {**base, "arm": "standalone", "hash": "t1", "measured_latency_ms": 1.5,
         "test_accuracy": 0.82, "diverged": False},
        {**base, "arm": "standalone", "hash": "t2", "measured_latency_ms": 9.0,
         "test_accuracy": 0.10, "diverged": True},  # left out of the front and the corner
    ]  # fmt: skip
    (tmp_path / "retrained_supernet.json").write_text(json.dumps({"rows": rows[:2]}))
    (tmp_path / "retrained_standalone.json").write_text(json.dumps({"rows": rows[2:]}))
    (tmp_path / "search_supernet.json").write_text(json.dumps({"children": 70}))
    e2e.report(type("A", (), {"out": tmp_path})())
    out = json.loads((tmp_path / "e2e.json").read_text())
    ref = out["reference"]
    assert ref["latency_ms"] == pytest.approx(2.2) and ref["accuracy"] == pytest.approx(0.79)
    # supernet: (2.0-1.0)*(0.80-0.79) + (2.2-2.0)*(0.85-0.79); standalone: (2.2-1.5)*0.03
    assert out["arms"]["supernet"]["hypervolume"] == pytest.approx(0.01 + 0.2 * 0.06)
    assert out["arms"]["standalone"]["hypervolume"] == pytest.approx(0.7 * 0.03)
    assert out["arms"]["supernet"]["children"] == 70
    assert "| supernet | 70 | 0 |" in (tmp_path / "e2e.md").read_text()
    assert "t2" in capsys.readouterr().out  # every row is in the table, diverged or not


def test_recipes_ranked_on_the_tuning_truth(tmp_path):
    recipes = load_bench("supernet_recipes")
    truth = [{"hash": f"h{i}", "seed": 0, "val_accuracy": 0.7 + i / 100} for i in range(12)]
    truth.append({"hash": "h0", "seed": 1, "val_accuracy": 0.99})  # second seeds are ignored
    (tmp_path / "truth.json").write_text(json.dumps({"rows": truth}))
    # accuracy in the truth's order, loss in the reverse of it: tau +1 both ways round
    good = {f"h{i}": [i / 10, 5 - i / 10, 0.5] for i in range(12)}
    bad = {f"h{i}": [-i / 10, 0.0, 0.1] for i in range(12)}
    few = {"h1": [0.1, 1.0, 0.1]}  # under 10 architectures of the truth: not ranked
    for name, scores in (("a", good), ("b", bad)):
        (tmp_path / f"{name}.scores.json").write_text(
            json.dumps(
                {
                    "recipe": name,
                    "record": {"seconds": 3.0},
                    "scores": {"default": scores, "cheap": few},
                }
            )
        )
    table = recipes.rank(tmp_path, tmp_path / "truth.json")
    assert set(table) == {"a/default/acc", "a/default/loss", "b/default/acc", "b/default/loss"}
    assert table["a/default/acc"]["tau"] == pytest.approx(1.0)
    assert table["a/default/loss"]["tau"] == pytest.approx(1.0)
    assert table["b/default/acc"]["tau"] == pytest.approx(-1.0)
    assert table["a/default/acc"]["n"] == 12
    # the pick comes first: tau +1 twice, the tie broken by the cheaper scoring (equal here),
    # then the shorter training (equal): insertion order of acc before loss
    assert list(table)[:2] == ["a/default/acc", "a/default/loss"]
    assert list(table)[-1] == "b/default/loss"  # constant scores: no tau, ranked last
    assert table["b/default/acc"]["score_seconds"] == pytest.approx(0.1)


def test_scores_ranked_against_another_truth(tmp_path):
    bench = load_bench("supernet")
    rows = [
        {"hash": "a", "seed": 0, "val_accuracy": 0.80},
        {"hash": "b", "seed": 0, "val_accuracy": 0.82},
        {"hash": "c", "seed": 0, "val_accuracy": 0.84},
        {"hash": "d", "seed": 0, "val_accuracy": 0.86, "status": "failed"},
        {"hash": "a", "seed": 1, "val_accuracy": 0.83},
        {"hash": "b", "seed": 1, "val_accuracy": 0.81},
        {"hash": "c", "seed": 1, "val_accuracy": 0.85},
    ]
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"meta": {}, "rows": rows}))
    columns = {
        "same": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0},
        "reversed": {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0, "e": 9.0},
    }
    got = bench.other_truth(path, columns)
    assert got["n_archs"] == 3  # d failed; e is not in the truth
    assert got["same"] == pytest.approx(1.0) and got["reversed"] == pytest.approx(-1.0)
    assert got["noise_ceiling_n"] == 3
    assert got["noise_ceiling_tau"] == pytest.approx(1 / 3)  # (a, b) swap between seeds


def test_truth_is_the_mean_of_complete_seeds_with_its_noise():
    bench = load_bench("supernet")
    acc = {  # seed -> accuracies of a..e; seed 2 misses e, seed 3 has only a..c
        0: [0.80, 0.81, 0.82, 0.83, 0.84],
        1: [0.81, 0.80, 0.83, 0.82, 0.85],
        2: [0.80, 0.82, 0.81, 0.84, None],
        3: [0.70, 0.72, 0.74, None, None],
    }
    rows = [
        {"hash": h, "seed": s, "val_accuracy": a}
        for s, accs in acc.items()
        for h, a in zip("abcde", accs, strict=True)
        if a is not None
    ]
    rows.append({"hash": "a", "seed": 1, "val_accuracy": 0.99, "status": "failed"})  # dropped
    by_seed = bench.rows_by_seed(rows)
    got = bench.seed_noise(by_seed)
    assert got["truth_seeds"] == [0, 1]  # the seeds every architecture of seed 0 has
    assert got["mean"]["a"] == pytest.approx(0.805) and got["mean"]["e"] == pytest.approx(0.845)
    pairs = {tuple(p["seeds"]): p for p in got["pairs"]}
    assert pairs[(0, 1)]["n"] == 5 and pairs[(0, 3)]["n"] == 3 and pairs[(2, 3)]["n"] == 3
    assert pairs[(0, 1)]["tau"] == pytest.approx(0.6)  # two of ten pairs swapped
    assert pairs[(0, 3)]["tau"] == pytest.approx(1.0)
    assert got["noise_ceiling_tau"] == pytest.approx(sum(p["tau"] for p in got["pairs"]) / 6)
    # a, b, c have all four seeds: the mean of seeds 0-1 against the mean of seeds 2-3
    split = got["split_half_tau"]
    assert split["seeds"] == [[0, 1], [2, 3]] and split["n"] == 3
    # means (.805, .805, .825) against (.75, .77, .775): a tie, two concordant pairs (tau-b)
    assert split["tau"] == pytest.approx(2 / math.sqrt(6))
    columns = {"mine": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}}
    against = bench.against_seeds(by_seed, columns, min_n=3)
    assert against["seed 0"] == {"n": 5, "mine": pytest.approx(1.0)}
    # means of four seeds: a .7775, b .7875, c .80
    assert against["mean of seeds 0-3"] == {"n": 3, "mine": pytest.approx(1.0)}
    assert "mean of seeds 0-3" not in bench.against_seeds(by_seed, columns)  # under 10 rows


def test_ceiling_estimate_follows_the_gaussian_model():
    bench = load_bench("supernet")
    assert bench.ceiling_estimate(0.0, 3) is None and bench.ceiling_estimate(-0.1, 3) is None
    assert bench.ceiling_estimate(1.0, 1) == pytest.approx(1.0)
    # one seed against a noise-free score: r = sqrt(r between two seeds)
    r = math.sin(math.pi * 0.24 / 2)
    assert bench.ceiling_estimate(0.24, 1) == pytest.approx(2 / math.pi * math.asin(math.sqrt(r)))
    # more seeds, a higher ceiling, always below 1
    est = [bench.ceiling_estimate(0.24, k) for k in (1, 2, 3, 4, 100)]
    assert est == sorted(est) and est[-1] < 1
    assert est[2] == pytest.approx(0.588, abs=0.001)  # the reported truth's 3 seeds


def test_truth_jobs_keep_whole_rounds_of_seeds():
    truth = load_bench("standalone_truth")
    archs = [type("A", (), {"hash": h})() for h in "abcd"]
    jobs = [(a.hash, s) for a, s in truth.job_order(archs, {"b"}, 0, 3, 7)]
    first = [j for j in jobs if j[1] == 0]
    assert len(jobs) == 12 and len(set(jobs)) == 12  # every architecture, seeds 0-2, once
    assert jobs.index(("b", 1)) == jobs.index(("b", 0)) + 1  # the repeat right after
    assert all(s == 0 or (h, s) == ("b", 1) for h, s in jobs[:5])  # first round, then the rest
    order = [h for h, _ in first]
    assert [h for h, s in jobs if s == 2] == order  # every round in the same shuffled order
    # b's seed 1 stays in the first round; the others' seed 1 follow it in the same order
    assert [h for h, s in jobs[5:] if s == 1] == [h for h in order if h != "b"]
    shuffled = list(archs)
    random.Random(7).shuffle(shuffled)
    assert truth.job_order(archs, set(), 0, 1, 7) == [(a, 0) for a in shuffled]


def test_truth_structure_finds_the_decision_the_truth_rewards():
    ts = load_bench("truth_structure")
    from mnas.space import make_space

    space = make_space("mnas_mbconv")
    rng = random.Random(0)
    layers = [j for j, d in enumerate(space.decisions) if d.name == "layers"]
    rows, scores = [], {}
    for i in range(100):
        tokens = [rng.randrange(len(d.choices)) for d in space.decisions]
        depth = sum(tokens[j] for j in layers)  # the truth: fewer layers, better
        h = f"a{i}"
        for seed in (0, 1):
            noise = rng.gauss(0, 0.002)
            rows.append(
                {
                    "hash": h,
                    "seed": seed,
                    "tokens": tokens,
                    "val_accuracy": 0.9 - 0.01 * depth + noise,
                    "macs": 100 + depth,
                    "params": 5,
                }
            )
        scores[h] = {"supernet": float(tokens[0]), "standalone": 0.5, "label": "x"}
    got = ts.analyse(rows, space, scores, sizes=[70], repeats=10)
    assert got["n_archs"] == 100 and got["truth_seeds"] == [0, 1]
    # the trained rows' sizes, then the numeric score columns but the stand-alone ones
    assert got["score_columns"] == ["macs", "params", "supernet"]
    summed = got["decisions"]["summed_over_blocks"]
    assert "skip" not in summed  # one choice only
    assert summed["layers"]["truth"] < -0.8 and summed["layers"]["macs"] > 0.8
    assert summed["layers"]["params"] == 0.0  # a constant ranks nothing
    assert abs(summed["kernel"]["truth"]) < 0.3
    first = got["decisions"]["per_block"][0]
    assert first["block"] == 0 and first["decision"] == "conv_op"
    assert first["supernet"] == pytest.approx(1.0)
    sur = got["token_surrogate"]["by_training_size"]["70"]
    # a perfect score (the depth) reaches about 0.8 against this noise
    assert sur["mean of seeds [0, 1]"]["tau"] > 0.55 and sur["seed 0"]["tau"] > 0.55
    noise = [{**r, "val_accuracy": rng.random()} for r in rows]  # a truth without structure
    sur = ts.analyse(noise, space, None, sizes=[70], repeats=10)["token_surrogate"]
    assert abs(sur["by_training_size"]["70"]["seed 0"]["tau"]) < 0.15
    with pytest.raises(ValueError, match="surrogate size 99"):
        ts.analyse(rows, space, None, sizes=[99], repeats=1)


def _per_image(correct) -> dict:
    import numpy as np

    c = np.asarray(correct, dtype=bool)
    return {
        "correct": np.packbits(c).tobytes().hex(),
        "n": int(c.size),
        "loss": [0.1 if v else 2.0 for v in c],
        "cpu_seconds": 1.0,
    }


def test_noise_bench_ranks_a_setting_against_the_other_half(tmp_path):
    """Six architectures differ only on 50 images of each half that the probes dispute:
    scored on those (informative) images of the first half they rank exactly as on the
    second half; on the first 125 images, which every network gets right, not at all."""
    noise = load_bench("supernet_noise")
    n = 400
    rows = {}
    for j in range(6):
        c = [True] * n
        for start in (150, 350):  # arch j misses the first 10 j disputed images of a half
            for i in range(start, start + 10 * j):
                c[i] = False
        rows[f"a{j}"] = _per_image(c)
    for k in range(4):  # probes: half of them right on the disputed images
        rows[f"probe_{k}"] = _per_image([k % 2 == 0 or not (150 <= i < 200) for i in range(n)])
    (tmp_path / "perimage_8x1.json").write_text(json.dumps(rows))
    args = type("A", (), {"out": tmp_path, "bn": [(8, 1)]})()
    keys = [f"a{j}" for j in range(6)]
    out = noise.report(args, keys, [0.1 * j for j in range(6)], [f"probe_{k}" for k in range(4)])
    by = {(r["images"], r["n"], r["score"]): r for r in out["rows"]}
    assert {k[1] for k in by} == {125, 200}  # sizes below the half, and the whole half
    assert by[("informative", 125, "acc")]["tau_vs_reference_acc"] == 1.0
    assert by[("informative", 125, "-loss")]["tau_vs_reference_loss"] == 1.0
    assert by[("first", 200, "acc")]["tau_vs_reference_acc"] == 1.0
    assert math.isnan(by[("first", 125, "acc")]["tau_vs_reference_acc"])  # all tied
    # the truth here prefers the architectures the supernet scores lowest
    assert by[("informative", 125, "acc")]["tau_vs_truth"] == -1.0
    assert out["reference_vs_truth"]["accuracy"] == -1.0
    (tmp_path / "perimage_8x1.json").write_text(json.dumps({"a0": rows["a0"]}))
    with pytest.raises(SystemExit, match="not scored yet"):
        noise.report(args, keys, [0.0] * 6, ["probe_0"])


def test_ensemble_estimates_what_the_shared_part_of_supernets_ranks(tmp_path, capsys):
    import numpy as np
    from scipy.stats import kendalltau

    ens = load_bench("supernet_ensemble")
    rng = np.random.default_rng(0)
    n = 3000
    truth = rng.standard_normal(n)
    shared = 0.6 * truth + 0.8 * rng.standard_normal(n)  # correlates with the truth at 0.6
    scores = [shared + 1.5 * rng.standard_normal(n) for _ in range(4)]  # each its own draw
    row = ens.ensemble_row(scores, truth)
    assert row["supernets"] == 4 and len(row["tau_between_supernets"]) == 6
    # one supernet ranks the truth far below what their shared part does, and the estimate
    # for infinitely many finds the shared part's tau
    limit = kendalltau(shared, truth).statistic
    assert max(row["tau_vs_truth"]) < limit - 0.15
    assert row["tau_of_infinitely_many_estimate"] == pytest.approx(limit, abs=0.03)
    assert row["tau_vs_truth"][0] < row["tau_of_mean_score"] < limit
    # supernets that share nothing: nothing to average towards
    noise = [rng.standard_normal(n) for _ in range(3)]
    assert abs(ens.ensemble_row(noise, truth)["tau_of_mean_score"]) < 0.05
    with pytest.raises(ValueError, match="at least 2 supernets; got 1"):
        ens.ensemble_row(scores[:1], truth)

    # the command: two result files of bench/supernet.py's shape, the common architectures
    files = []
    for j, s in enumerate(scores[:2]):
        rows = {
            f"a{i}": {"supernet_recalibrate": float(s[i]), "standalone": float(truth[i])}
            for i in range(200 + j)  # the second file has one more architecture
        }
        files.append(tmp_path / f"r{j}.json")
        files[-1].write_text(json.dumps({"scores": rows}))
    out = tmp_path / "ens.json"
    assert ens.main(["--group", "two", *map(str, files), "--out", str(out)]) == 0
    got = json.loads(out.read_text())["two"]
    assert got["accuracy"]["n_archs"] == 200 and "-loss" not in got
    assert "two" in capsys.readouterr().out


def _truth_rows(hashes, seeds=3, spread=0.01):
    """Truth rows whose mean over seeds rises with the hash's position."""
    rng = random.Random(0)
    return [
        {"hash": h, "seed": s, "val_accuracy": 0.7 + 0.01 * i + spread * rng.random()}
        for i, h in enumerate(hashes)
        for s in range(seeds)
    ]


def test_finetune_report_ranks_each_configuration_against_the_truth():
    bench = load_bench("supernet")
    ft = load_bench("supernet_finetune")
    hashes = [f"h{i:02d}" for i in range(12)]
    by_seed = bench.rows_by_seed(_truth_rows(hashes, spread=0.0))

    def row(h, config, arm, steps, acc, diverged=False):
        return {
            "hash": h,
            "config": config,
            "arm": arm,
            "steps": steps,
            "lr": 0.05,
            "val_accuracy": acc,
            "val_loss": 1 - acc,
            "diverged": diverged,
            "seconds": 2.0,
            "device": "cpu",
        }

    rows = [row(h, "scratch K=30", "scratch", 30, 0.5 + 0.01 * i) for i, h in enumerate(hashes)]
    rows += [row(h, "finetune K=30", "finetune", 30, 0.9 - 0.01 * i) for i, h in enumerate(hashes)]
    rows[0]["diverged"] = True  # left out of its configuration's ranking, counted
    got = ft.report(rows, by_seed, hashes)
    scratch, finetune = got["configs"]["scratch K=30"], got["configs"]["finetune K=30"]
    assert scratch["n"] == 11 and scratch["diverged"] == 1
    assert scratch["kendall_tau"] == pytest.approx(1.0)
    assert scratch["kendall_tau_neg_loss"] == pytest.approx(1.0)
    assert finetune["n"] == 12 and finetune["kendall_tau"] == pytest.approx(-1.0)
    assert finetune["mean_accuracy"] == pytest.approx(0.845)
    assert got["truth_seeds"] == [0, 1, 2]
    # the two arms at the same K, on the 11 both scored
    assert got["tau_between"] == {"finetune K=30 | scratch K=30": pytest.approx(-1.0)}
    assert got["against"]["seed 0"]["scratch K=30"] == pytest.approx(1.0)


def test_finetune_job_trains_its_steps_from_the_supernet_or_its_own_weights(tmp_path):
    from mnas.evaluate.supernet import load_or_train
    from mnas.space import make_space

    ft = load_bench("supernet_finetune")
    args = ft.parse_args(
        ["--dataset", "digits", "--out", str(tmp_path), "--epochs", "0.1", "--subnets", "1"]
        + ["--no-sandwich", "space=mnas_mbconv"]
    )
    cfg, data, splits, model = ft.setup(args)
    space = make_space("mnas_mbconv")
    ckpt = tmp_path / "supernet.pt"
    settings = ft.settings_from(args)
    load_or_train(ckpt, space, model, data, settings, "cpu")
    arch = space.sample(random.Random(3))
    train = ft.train_config(cfg.trainer)

    def job(arm, steps):
        return ft.Job(
            arch.hash, tuple(arch.blocks), arm, steps, 0.02, train, model, data,
            space.name, str(ckpt), settings, "cpu",
        )  # fmt: skip

    rows = {k: ft.run_job(job(*k)) for k in [("finetune", 0), ("finetune", 2), ("scratch", 2)]}
    assert [r["trained_steps"] for r in rows.values()] == [0, 2, 2]
    assert rows[("finetune", 2)]["config"] == "finetune K=2 lr=0.02"
    for r in rows.values():
        assert 0.0 <= r["val_accuracy"] <= 1.0 and math.isfinite(r["val_loss"])
        assert not r["diverged"] and r["hash"] == arch.hash
    # the inherited start differs from the network's own initial weights
    assert rows[("finetune", 2)]["val_loss"] != rows[("scratch", 2)]["val_loss"]
    # K = 0 is the supernet's weights as they are: scoring them twice gives the same
    assert ft.run_job(job("finetune", 0))["val_loss"] == rows[("finetune", 0)]["val_loss"]
