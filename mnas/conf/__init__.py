"""Hydra structured-config schemas, turning configs into plain arguments, and validation.

- :mod:`mnas.conf.schema`: every group of ``conf/`` as a dataclass, enums for closed sets;
- :mod:`mnas.conf.arguments`: config nodes to the library's arguments and settings objects;
- :mod:`mnas.conf.validate`: every check of a search config that can run before any work;
- :mod:`mnas.conf.runner`: a composed search config assembled into a :class:`mnas.search.Search`.

The only package that imports Hydra or OmegaConf; nothing outside it imports it.
"""

from mnas.conf.schema import register_configs

__all__ = ["register_configs"]
