"""``python -m mnas describe`` (issue 2)."""

import json
import subprocess
import sys

from mnas.cli import main
from mnas.space import reference


def test_describe_json_for_reference(capsys):
    assert main(["describe", "mnasnet_b1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["params"] == 4_383_312
    assert record["hash"] == reference("mnasnet_b1").hash
    assert record["blocks"][0] == "ds_r1_k3_s1_c16_noskip"
    assert 0.31e9 < record["macs"] < 0.32e9


def test_describe_block_strings_small_input(capsys):
    arch = "ds_r1_k3_s1_c16,ir_r2_k5_s2_e3_c24_se0.25"
    args = ["describe", arch, "--input-size", "32", "--num-classes", "10", "--in-channels", "1"]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["blocks"] == arch.split(",")
    assert record["in_channels"] == 1 and record["params"] > 0


def test_describe_bad_arch_is_a_clear_error():
    out = subprocess.run(
        [sys.executable, "-m", "mnas", "describe", "ir_r2_k3_s2_c24"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "needs an expansion" in out.stderr
