"""The NAS-Bench-201 cell search space.

The NAS-Bench-201 cell (Dong & Yang, ICLR 2020) is a DAG of 4 nodes; each of its 6 edges
``j -> i`` (j < i) carries one of 5 operations. Its canonical string, the ``arch`` column of
the benchmark table and the architecture key here, lists the edges node by node::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
     1<-0   2<-0 2<-1   3<-0 3<-1 3<-2

Tokens follow that order. All 5**6 = 15,625 cells are in the table; 341 of them have no
path of non-``none`` edges from the input (node 0) to the output (node 3) and score chance
accuracy ("disconnected" cells). The table itself is read by :mod:`mnas.evaluate.tabular`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from mnas.space.base import Architecture, Decision, register_space, validate_tokens

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in the order the cell string lists them.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def cell_string(ops: Sequence[str]) -> str:
    """The canonical cell string of 6 edge operations (in :data:`EDGES` order)."""
    if len(ops) != len(EDGES):
        raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} ops")
    nodes = []
    for node in (1, 2, 3):
        nodes.append(
            "|" + "|".join(f"{op}~{j}" for op, (i, j) in zip(ops, EDGES, strict=True) if i == node)
        )
    return "+".join(n + "|" for n in nodes)


def parse_cell(text: str) -> tuple[int, ...]:
    """Tokens (op indices in :data:`EDGES` order) of a cell string.

    Raises:
        ValueError: naming the string and what is wrong with it.
    """
    nodes = text.split("+")
    if len(nodes) != 3:
        raise ValueError(f"cell string {text!r} must have 3 nodes joined by '+'")
    tokens: list[int] = []
    for node, part in enumerate(nodes, start=1):
        if not (part.startswith("|") and part.endswith("|")):
            raise ValueError(f"cell string {text!r}: node {node} part {part!r} not in |...|")
        edges = part[1:-1].split("|")
        if len(edges) != node:
            raise ValueError(f"cell string {text!r}: node {node} needs {node} inputs")
        for j, edge in enumerate(edges):
            op, _, src = edge.partition("~")
            if op not in OPS or src != str(j):
                raise ValueError(
                    f"cell string {text!r}: edge {edge!r} must be 'op~{j}' with op in {OPS}"
                )
            tokens.append(OPS.index(op))
    return tuple(tokens)


def is_connected(tokens: Sequence[int]) -> bool:
    """Whether a path of non-``none`` edges leads from node 0 to node 3."""
    reached = {0}
    for (i, j), t in zip(EDGES, tokens, strict=True):
        if OPS[t] != "none" and j in reached:
            reached.add(i)
    return 3 in reached


@register_space("nasbench201")
class NB201Space:
    """The NAS-Bench-201 cell space: 6 edges, 5 operations each.

    All edges share the decision type ``op``, so the controller uses one softmax head and
    one embedding for every edge.
    """

    def __init__(self, ops: Sequence[str] = OPS, name: str = "nasbench201") -> None:
        if tuple(ops) != OPS:
            raise ValueError(f"NAS-Bench-201 ops are fixed to {OPS}; got {tuple(ops)}")
        self.name = name
        self.decisions = tuple(Decision("op", OPS, block=e) for e in range(len(EDGES)))

    def size(self) -> int:
        """5 ** 6 = 15,625 cells."""
        return math.prod(len(d.choices) for d in self.decisions)

    def validate(self, tokens: Sequence[int]) -> None:
        validate_tokens(self.name, self.decisions, tokens)

    def architecture(self, tokens: Sequence[int]) -> Architecture:
        tokens = list(tokens)
        self.validate(tokens)
        key = cell_string([OPS[t] for t in tokens])
        return Architecture(space=self.name, tokens=tuple(tokens), key=key)

    def from_string(self, text: str) -> Architecture:
        """The architecture of a cell string such as the table's ``arch`` column."""
        return self.architecture(parse_cell(text))

    def sample(self, rng: random.Random) -> Architecture:
        """One cell with every edge drawn uniformly."""
        return self.architecture([rng.randrange(len(d.choices)) for d in self.decisions])
