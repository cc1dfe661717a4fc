"""Search spaces: decisions, tokens, architectures, block specs and block strings.

- :mod:`mnas.space.base`: :class:`Decision`, :class:`Architecture`, the
  :class:`SearchSpace` protocol and the registry (:func:`make_space`);
- :mod:`mnas.space.blocks`: :class:`BlockSpec` and the block-string grammar;
- :mod:`mnas.space.mnas`: MnasNet's factorized hierarchical space, and its all-``mbconv``
  sub-space (``mnas_mbconv``, the one weight sharing trains);
- :mod:`mnas.space.references`: MobileNetV2, MnasNet-A1 and -B1 as block strings;
- :mod:`mnas.space.nasbench201`: the NAS-Bench-201 cell space.

Must not know about: torch modules, data, latency, the search.
"""

from mnas.space.base import (
    SPACES,
    Architecture,
    Decision,
    SearchSpace,
    make_space,
    register_space,
    stable_hash,
    validate_tokens,
)
from mnas.space.blocks import (
    BLOCK_TYPES,
    SKIP_OPS,
    BlockSpec,
    blocks_key,
    parse_block,
    parse_blocks,
)
from mnas.space.mnas import CONV_OPS, MBCONV_OPS, MnasMBConvSpace, MnasSpace, round_filters
from mnas.space.nasbench201 import NB201Space
from mnas.space.references import REFERENCE_BLOCKS, reference, resolve_arch, specs_of

__all__ = [
    "BLOCK_TYPES",
    "CONV_OPS",
    "MBCONV_OPS",
    "REFERENCE_BLOCKS",
    "SKIP_OPS",
    "SPACES",
    "Architecture",
    "BlockSpec",
    "Decision",
    "MnasMBConvSpace",
    "MnasSpace",
    "NB201Space",
    "SearchSpace",
    "blocks_key",
    "make_space",
    "parse_block",
    "parse_blocks",
    "reference",
    "register_space",
    "resolve_arch",
    "round_filters",
    "specs_of",
    "stable_hash",
    "validate_tokens",
]
