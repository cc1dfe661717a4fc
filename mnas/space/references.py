"""Published reference networks as block strings, and resolving names or strings to them."""

from __future__ import annotations

from collections.abc import Sequence

from mnas.space.base import Architecture
from mnas.space.blocks import BlockSpec, parse_blocks

# Published reference networks as block strings (see ../shared/REFERENCES.md).
REFERENCE_BLOCKS: dict[str, tuple[str, ...]] = {
    "mobilenetv2": (
        "ds_r1_k3_s1_c16",
        "ir_r2_k3_s2_e6_c24",
        "ir_r3_k3_s2_e6_c32",
        "ir_r4_k3_s2_e6_c64",
        "ir_r3_k3_s1_e6_c96",
        "ir_r3_k3_s2_e6_c160",
        "ir_r1_k3_s1_e6_c320",
    ),
    "mnasnet_a1": (
        "ds_r1_k3_s1_c16_noskip",
        "ir_r2_k3_s2_e6_c24",
        "ir_r3_k5_s2_e3_c40_se0.25",
        "ir_r4_k3_s2_e6_c80",
        "ir_r2_k3_s1_e6_c112_se0.25",
        "ir_r3_k5_s2_e6_c160_se0.25",
        "ir_r1_k3_s1_e6_c320",
    ),
    "mnasnet_b1": (
        "ds_r1_k3_s1_c16_noskip",
        "ir_r3_k3_s2_e3_c24",
        "ir_r3_k5_s2_e3_c40",
        "ir_r3_k5_s2_e6_c80",
        "ir_r2_k3_s1_e6_c96",
        "ir_r4_k5_s2_e6_c192",
        "ir_r1_k3_s1_e6_c320",
    ),
}


def reference(name: str) -> Architecture:
    """A published architecture by name (``mobilenetv2``, ``mnasnet_a1``, ``mnasnet_b1``)."""
    if name not in REFERENCE_BLOCKS:
        raise ValueError(
            f"unknown reference architecture {name!r}; known: {sorted(REFERENCE_BLOCKS)}"
        )
    return Architecture.from_blocks(REFERENCE_BLOCKS[name])


def resolve_arch(text: str) -> Architecture:
    """A reference name or a comma-separated list of block strings."""
    text = text.strip()
    if text in REFERENCE_BLOCKS:
        return reference(text)
    if "_" not in text:
        raise ValueError(
            f"{text!r} is neither a reference name ({sorted(REFERENCE_BLOCKS)}) "
            "nor a list of block strings such as 'ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24'"
        )
    return Architecture.from_blocks(text)


def specs_of(
    arch: Architecture | Sequence[BlockSpec] | Sequence[str] | str,
) -> tuple[BlockSpec, ...]:
    """Block specs of anything that names a MnasNet-style network."""
    if isinstance(arch, Architecture):
        if arch.space == "nasbench201":
            raise ValueError(f"architecture {arch.hash} of space 'nasbench201' has no block specs")
        return parse_blocks(arch.key)
    if isinstance(arch, str):
        return parse_blocks(resolve_arch(arch).key)
    items = list(arch)
    if items and all(isinstance(s, BlockSpec) for s in items):
        return tuple(items)
    return parse_blocks(items)
