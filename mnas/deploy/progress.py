"""Training progress for scripts that own a console: one progress bar per epoch."""

from __future__ import annotations

from collections.abc import Callable


class EpochProgress:
    """A ``progress(step, total, loss)`` callback that opens one bar per epoch.

    Args:
        train_images: size of the training split.
        batch_size: the training batch size.
        make_bar: ``make_bar(total_steps, description)`` returns a tqdm-like bar
            (``update``, ``set_postfix``, ``close``); the caller owns the console.
    """

    def __init__(self, train_images: int, batch_size: int, make_bar: Callable) -> None:
        self.per_epoch = -(-train_images // max(1, min(batch_size, train_images)))
        self.make_bar = make_bar
        self.bar = None
        self.prefix = ""

    def __call__(self, step: int, total: int, loss: float) -> None:
        epoch = (step - 1) // self.per_epoch
        if self.bar is None or step - 1 == epoch * self.per_epoch:
            self.close()
            epochs = -(-total // self.per_epoch)
            left = min(self.per_epoch, total - epoch * self.per_epoch)
            self.bar = self.make_bar(left, f"{self.prefix}epoch {epoch + 1}/{epochs}")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
