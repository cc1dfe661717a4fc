"""The NASNet-style LSTM controller that MnasNet reused.

At each step the LSTM reads the embedding of the previous token (a learned start
vector at step 0), and the softmax head of the current decision's *type* turns its
hidden state into logits. Heads and embeddings are shared by decisions of one type
(``kernel`` of block 1 and of block 7 use the same head), so the controller is sized
from the space's decision list alone and never sees a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnas.space import Decision


@dataclass(frozen=True)
class Sample:
    """A batch of sampled token sequences.

    Attributes:
        tokens: (n, L) int64.
        log_probs: (n,) log-probability of each whole sequence.
        entropies: (n,) sum over steps of the entropy of the full per-step distribution.
    """

    tokens: Tensor
    log_probs: Tensor
    entropies: Tensor


class Controller(nn.Module):
    """One-layer LSTM policy over a sequence of categorical decisions.

    Args:
        decisions: the space's decisions, in token order.
        hidden_size: LSTM units (NASNet: 100).
        embed_size: size of the token embeddings fed back to the LSTM.
        temperature: logits are divided by it (> 0).
        tanh_constant: if set, logits become ``C * tanh(logits / temperature)`` (NASNet's cap).
        init_range: weights are drawn uniformly in +-init_range (NASNet: 0.1).
        seed: seeds the initial weights (without touching torch's global generator).
    """

    def __init__(
        self,
        decisions: Sequence[Decision],
        hidden_size: int = 100,
        embed_size: int | None = None,
        temperature: float = 1.0,
        tanh_constant: float | None = None,
        init_range: float = 0.1,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not decisions:
            raise ValueError("the controller needs at least one decision")
        if hidden_size < 1:
            raise ValueError(f"hidden_size={hidden_size} must be >= 1")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        if tanh_constant is not None and tanh_constant <= 0:
            raise ValueError(f"tanh_constant={tanh_constant} must be > 0 or None")
        embed_size = embed_size or hidden_size
        self.types: list[str] = []
        sizes: dict[str, int] = {}
        for d in decisions:
            if d.name in sizes and sizes[d.name] != len(d.choices):
                raise ValueError(
                    f"decision type {d.name!r} has {sizes[d.name]} and {len(d.choices)} choices; "
                    "decisions of one type must have the same number of choices"
                )
            sizes[d.name] = len(d.choices)
            self.types.append(d.name)
        self.num_choices = [len(d.choices) for d in decisions]
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.lstm = nn.LSTMCell(embed_size, hidden_size)
        self.start = nn.Parameter(torch.zeros(1, embed_size))
        self.heads = nn.ModuleDict({t: nn.Linear(hidden_size, n) for t, n in sizes.items()})
        self.embeds = nn.ModuleDict({t: nn.Embedding(n, embed_size) for t, n in sizes.items()})
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range, generator=gen)

    def _logits(self, step: int, h: Tensor) -> Tensor:
        logits = self.heads[self.types[step]](h) / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _run(self, n: int, tokens: Tensor | None, generator: torch.Generator | None) -> Sample:
        x = self.start.expand(n, -1)
        state = None
        chosen, logps, ents = [], [], []
        for step in range(len(self.types)):
            state = self.lstm(x, state)
            log_p = torch.log_softmax(self._logits(step, state[0]), dim=-1)
            if tokens is None:
                tok = torch.multinomial(log_p.detach().exp(), 1, generator=generator).squeeze(1)
            else:
                tok = tokens[:, step]
            chosen.append(tok)
            logps.append(log_p.gather(1, tok.unsqueeze(1)).squeeze(1))
            ents.append(-(log_p.exp() * log_p).sum(-1))
            x = self.embeds[self.types[step]](tok)
        return Sample(
            tokens=torch.stack(chosen, 1),
            log_probs=torch.stack(logps, 1).sum(1),
            entropies=torch.stack(ents, 1).sum(1),
        )

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Sample:
        """Sample ``n`` sequences (no gradient)."""
        if n < 1:
            raise ValueError(f"n={n} must be >= 1")
        return self._run(n, None, generator)

    def evaluate(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies of given sequences under the current policy
        (with gradient): ``(log_probs (n,), entropies (n,))``."""
        if tokens.dim() != 2 or tokens.shape[1] != len(self.types):
            raise ValueError(
                f"tokens of shape {tuple(tokens.shape)}; expected (n, {len(self.types)})"
            )
        out = self._run(tokens.shape[0], tokens.long(), None)
        return out.log_probs, out.entropies
