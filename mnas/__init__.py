"""mnas: platform-aware neural architecture search (MnasNet) with measured latency."""

__version__ = "0.1.0"
