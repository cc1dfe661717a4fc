"""mnas: platform-aware neural architecture search (MnasNet) with measured latency.

One package per job (docs/concepts.md, "Where things live"); imports point down this list:
``space`` -> ``nn`` -> ``data`` -> ``training`` -> ``latency`` -> ``evaluate`` -> ``search`` ->
``deploy`` / ``experiments`` -> ``conf``.
"""

__version__ = "0.1.0"
