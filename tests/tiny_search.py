"""The tiny real search the reliability and fault tests run (8 px digits, width 0.25, a tenth
of an epoch, latency as MACs): one definition, so both files test the same search."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from mnas.conf import register_configs

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.1",
    "trainer.batch_size=32",
    "trainer.bn_recalibrate_batches=1",
    "latency=macs",
    "reward.target_ms=0.5",
    "tensorboard=false",
    "batch_size=2",
]


def make_cfg(*overrides):
    """The search config ``scripts/search.py`` composes for the tiny search plus ``overrides``."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="search", overrides=[*TINY, *overrides])
