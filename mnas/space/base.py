"""Decisions, architectures, the search-space protocol and the registry of spaces.

An architecture is a sequence of integer *tokens*, one per decision; the space
turns tokens into a canonical *key* (for the MnasNet space: a comma-separated
list of block strings, see :mod:`mnas.space.blocks`) and the key's SHA-256 is the
architecture's stable hash. Two token sequences that decode to the same network
share a hash, so caches never pay twice for one model.

Spaces register themselves with :func:`register_space`; :func:`make_space` builds
one by name, so this module never imports a concrete space.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mnas.space.blocks import BlockSpec, blocks_key, parse_blocks


@dataclass(frozen=True)
class Decision:
    """One categorical decision of a space.

    Attributes:
        name: decision type (shared by all blocks, e.g. ``kernel``); the controller
            keeps one softmax head and one embedding per type.
        choices: the values a token indexes.
        block: which block (or edge) the decision belongs to.
    """

    name: str
    choices: tuple
    block: int = 0


def stable_hash(key: str) -> str:
    """16 hex digits of SHA-256: the same in every process and on every machine."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Architecture:
    """An architecture: its space, its tokens and its canonical key.

    ``key`` identifies the network itself (block strings for MnasNet-style spaces,
    the cell string for NAS-Bench-201); ``hash`` is derived from it.
    """

    space: str
    tokens: tuple[int, ...]
    key: str
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(int(t) for t in self.tokens))
        object.__setattr__(self, "hash", stable_hash(self.key))

    @property
    def blocks(self) -> tuple[str, ...]:
        """The key split into its parts (block strings for MnasNet spaces)."""
        return tuple(self.key.split(",")) if self.space != "nasbench201" else (self.key,)

    def to_dict(self) -> dict:
        return {"space": self.space, "tokens": list(self.tokens), "key": self.key}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        try:
            arch = cls(space=data["space"], tokens=tuple(data["tokens"]), key=data["key"])
        except KeyError as e:
            raise ValueError(f"architecture record lacks key {e}; needs space, tokens, key") from e
        if "hash" in data and data["hash"] != arch.hash:
            raise ValueError(f"architecture hash {data['hash']} does not match its key")
        return arch

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_blocks(cls, blocks: str | Sequence[str] | Sequence[BlockSpec]) -> Architecture:
        """An architecture outside any token space, given by its blocks."""
        if not isinstance(blocks, str) and blocks and isinstance(blocks[0], BlockSpec):
            specs = tuple(blocks)
        else:
            specs = parse_blocks(blocks)
        return cls(space="blocks", tokens=(), key=blocks_key(specs))


class SearchSpace(Protocol):
    """What the controller and the search loop need from a space."""

    name: str
    decisions: tuple[Decision, ...]

    def size(self) -> int: ...

    def architecture(self, tokens: Sequence[int]) -> Architecture: ...

    def sample(self, rng: random.Random) -> Architecture: ...


def validate_tokens(name: str, decisions: Sequence[Decision], tokens: Sequence[int]) -> None:
    if len(tokens) != len(decisions):
        raise ValueError(f"space {name!r} needs {len(decisions)} tokens, got {len(tokens)}")
    for i, (t, d) in enumerate(zip(tokens, decisions, strict=True)):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(d.choices):
            raise ValueError(
                f"token {i} ({d.name} of block {d.block}) is {t!r}; "
                f"allowed 0..{len(d.choices) - 1} for choices {list(d.choices)}"
            )


SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str) -> Callable[[type], type]:
    """Class decorator: make a space constructible as ``make_space(name)``."""

    def add(cls: type) -> type:
        SPACES[name] = cls
        return cls

    return add


def make_space(name: str = "mnas", **kwargs) -> SearchSpace:
    """A search space by name; keyword arguments go to its constructor."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known: {sorted(SPACES)}")
    return SPACES[name](**kwargs)
