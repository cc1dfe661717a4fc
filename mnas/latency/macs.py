"""Multiply-adds as a latency proxy: free of timing noise, blind to memory traffic."""

from __future__ import annotations

from mnas.latency.ort import describe_arch
from mnas.latency.session import torch_threads
from mnas.latency.stats import LatencyError, LatencyStats
from mnas.latency.timing import positive_int
from mnas.nn import build_model, count_macs
from mnas.space import Architecture


class MacsLatency:
    """Multiply-adds of one forward pass at batch 1, in millions, reported as "latency".

    ``median_ms`` (and p10, p90, mean) hold MACs / 1e6, not milliseconds; ``source`` is
    ``"macs"``, ``cv`` and ``runs`` are 0. A target latency ``T`` for the reward must then
    be given in millions of MACs as well (EfficientNet-B0 was searched this way with
    T = 400M FLOPS). Counting uses :func:`mnas.nn.count_macs` (convolutions and
    matrix products); results are memoised per architecture hash.
    """

    def __init__(
        self,
        input_size: int = 224,
        in_channels: int = 3,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        stem_stride: int = 2,
    ) -> None:
        self.input_size = positive_int("input_size", input_size)
        self.in_channels = positive_int("in_channels", in_channels)
        self.num_classes = positive_int("num_classes", num_classes)
        self.stem_stride = positive_int("stem_stride", stem_stride)
        if not width_mult > 0:
            raise ValueError(f"width_mult={width_mult} must be > 0")
        self.width_mult = float(width_mult)
        self._memo: dict[str, LatencyStats] = {}

    def measure(self, arch: Architecture) -> LatencyStats:
        """Millions of multiply-adds of ``arch`` (see the class docstring).

        Raises:
            LatencyError: naming the architecture if it cannot be built or run.
        """
        if arch.hash not in self._memo:
            try:
                model = build_model(
                    arch,
                    num_classes=self.num_classes,
                    in_channels=self.in_channels,
                    width_mult=self.width_mult,
                    stem_stride=self.stem_stride,
                )
                with torch_threads(1):
                    macs = count_macs(model, self.input_size, self.in_channels)
            except Exception as e:
                raise LatencyError(
                    f"cannot count MACs of {describe_arch(arch)}: {type(e).__name__}: {e}"
                ) from e
            self._memo[arch.hash] = LatencyStats.point(macs / 1e6, "macs")
        return self._memo[arch.hash]
