"""The reference networks of drift correction (docs/latency.md, "Drift correction").

A reference is named ``mobilenetv2`` (the space's MobileNetV2, the default) or
``space:SEED`` (the network of the MnasNet space drawn by ``MnasSpace().sample`` with
``random.Random(SEED)``). With several, each is timed in a block of its own beside the
candidate and the machine's speed is read from the geometric mean of their medians.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from mnas.space import Architecture, MnasSpace

DEFAULT_REFERENCES = ("mobilenetv2",)
ALLOWED = "'mobilenetv2' or 'space:SEED' (SEED an integer >= 0)"


def reference_arch() -> Architecture:
    """The default reference network: the MnasNet space's MobileNetV2."""
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


def check_references(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each checked, at least one and none twice.

    Raises:
        ValueError: naming the first bad value.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"references={names!r}: a list of names ({ALLOWED})")
    names = tuple(names)
    if not names:
        raise ValueError(f"references=[]: at least one reference ({ALLOWED})")
    for name in names:
        try:
            reference_network(name)
        except ValueError:
            raise ValueError(
                f"references={list(names)!r}: {name!r} is not a reference; allowed: {ALLOWED}"
            ) from None
    if len(set(names)) != len(names):
        raise ValueError(f"references={list(names)!r} names a network twice")
    return names


def references_id(names: Sequence[str]) -> str:
    """What cache keys and set-ups record as the reference: the network's hash for one
    (the key figures were cached under before several were possible), the hashes joined
    by ``+`` for several, in the order given (the order of the blocks)."""
    return "+".join(reference_network(n).hash for n in check_references(names))
