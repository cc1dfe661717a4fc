"""The reference networks of drift correction (docs/latency.md, "Drift correction").

A reference is named ``mobilenetv2`` (the space's MobileNetV2) or ``space:SEED`` (the
network of the MnasNet space drawn by ``MnasSpace().sample`` with ``random.Random(SEED)``).
With several, each is timed in a block of its own beside the candidate and the machine's
speed is read from the geometric mean of their medians. ``auto`` (the default) picks by the
input size (:func:`resolve_references`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from mnas.space import Architecture, MnasSpace

AUTO = "auto"
DEFAULT_REFERENCES = (AUTO,)
# What ``auto`` stands for. Measured (docs/latency.md, "Which reference"): at 16x16 and
# 32x32 two networks of the space agree between two passes of the same networks better than
# MobileNetV2 does (within +-5%: 62 -> 75% and 61 -> 66% on networks the choice never saw);
# at 224x224 the 0.6 s time cap leaves the candidate 13 runs instead of 23 beside two
# references, and MobileNetV2 alone agrees better (80 against 62% within +-10%).
AUTO_SMALL = ("space:7", "space:11")
AUTO_LARGE = ("mobilenetv2",)
AUTO_SMALL_MAX_SIZE = 32
ALLOWED = "'auto', or names: 'mobilenetv2' or 'space:SEED' (SEED an integer >= 0)"


def reference_arch() -> Architecture:
    """The MnasNet space's MobileNetV2, the reference above 32x32 input."""
    space = MnasSpace()
    return space.architecture(space.baseline_tokens())


@functools.cache
def _space_network(seed: int) -> Architecture:
    return MnasSpace().sample(random.Random(seed))


def reference_network(name: str) -> Architecture:
    """The architecture a reference name stands for.

    Raises:
        ValueError: naming ``name`` and what is allowed.
    """
    if name == "mobilenetv2":
        return reference_arch()
    kind, _, seed = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind != "space" or not seed.isdigit():
        raise ValueError(f"reference {name!r}; allowed: {ALLOWED}")
    return _space_network(int(seed))


def resolve_references(names: Sequence[str], input_size: int) -> tuple[str, ...]:
    """The reference networks ``names`` stand for at ``input_size``: ``auto`` (alone) is
    ``space:7`` and ``space:11`` up to 32x32 and MobileNetV2 above (measured; see the
    module's constants); names are checked and kept.

    Raises:
        ValueError: naming the first bad value.
    """
    names = check_references(names)
    if names == (AUTO,):
        return AUTO_SMALL if input_size <= AUTO_SMALL_MAX_SIZE else AUTO_LARGE
    return names


def check_references(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each checked, at least one and none twice; ``auto`` only
    alone.

    Raises:
        ValueError: naming the first bad value.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"references={names!r}: a list of names ({ALLOWED})")
    names = tuple(names)
    if not names:
        raise ValueError(f"references=[]: at least one reference ({ALLOWED})")
    if AUTO in names and len(names) > 1:
        raise ValueError(f"references={list(names)!r}: 'auto' stands alone")
    if names == (AUTO,):
        return names
    hashes = set()
    for name in names:
        try:
            hashes.add(reference_network(name).hash)
        except ValueError:
            raise ValueError(
                f"references={list(names)!r}: {name!r} is not a reference; allowed: {ALLOWED}"
            ) from None
    if len(hashes) != len(names):  # (space:7 and space:07 are one network)
        raise ValueError(f"references={list(names)!r} names a network twice")
    return names


def references_id(names: Sequence[str]) -> str:
    """What cache keys and set-ups record as the reference: the network's hash for one
    (the key figures were cached under before several were possible), the hashes joined
    by ``+`` for several, in the order given (the order of the blocks); resolved names
    only (not ``auto``)."""
    names = check_references(names)
    if AUTO in names:
        raise ValueError("references_id needs resolved names (resolve_references)")
    return "+".join(reference_network(n).hash for n in names)


def references_label(names: Sequence[str]) -> str:
    """How a person reads resolved reference names: ``MobileNetV2``, ``space:7``, or
    ``space:7 x space:11`` (several: the geometric mean of their medians)."""
    return " x ".join("MobileNetV2" if n == "mobilenetv2" else n for n in names)
