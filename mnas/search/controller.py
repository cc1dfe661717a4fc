"""Controllers: policies over a space's sequence of categorical decisions.

- ``independent`` (the default): one free logit vector per decision, initialised to zero
  (uniform), as TuNAS (Bender et al. 2020) uses. Decisions are sampled independently.
- ``lstm``: the NASNet-style LSTM controller that MnasNet reused. At each step the LSTM reads
  the embedding of the previous token (a learned start vector at step 0), and the softmax head
  of the current decision's *type* turns its hidden state into logits. Heads and embeddings
  are shared by decisions of one type (``kernel`` of block 1 and of block 7 use the same head).

Both are sized from the space's decision list alone, never see a network, and offer the same
two calls: ``sample(n, generator)`` and ``evaluate(tokens)``. On NAS-Bench-201 the independent
policy out-searched the LSTM under the same update (docs/nasbench201.md, ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnas.space import Decision

CONTROLLERS = ("independent", "lstm")


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


class LSTMController(nn.Module):
    """One-layer LSTM policy over a sequence of categorical decisions (NASNet).

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
        _check_logit_shaping(temperature, tanh_constant)
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
        _check_tokens(tokens, len(self.types))
        out = self._run(tokens.shape[0], tokens.long(), None)
        return out.log_probs, out.entropies


def _check_logit_shaping(temperature: float, tanh_constant: float | None) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if tanh_constant is not None and tanh_constant <= 0:
        raise ValueError(f"tanh_constant={tanh_constant} must be > 0 or None")


def _check_tokens(tokens: Tensor, length: int) -> None:
    if tokens.dim() != 2 or tokens.shape[1] != length:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)}; expected (n, {length})")


class IndependentController(nn.Module):
    """One logit vector per decision, no state between decisions (TuNAS).

    Logits start at zero, so the first samples are uniform over the space. Decisions with
    fewer choices than the widest one are padded with logits of ``-inf``.

    Args:
        decisions: the space's decisions, in token order.
        temperature: logits are divided by it (> 0).
        tanh_constant: if set, logits become ``C * tanh(logits / temperature)``.
    """

    def __init__(
        self,
        decisions: Sequence[Decision],
        temperature: float = 1.0,
        tanh_constant: float | None = None,
    ) -> None:
        super().__init__()
        if not decisions:
            raise ValueError("the controller needs at least one decision")
        _check_logit_shaping(temperature, tanh_constant)
        self.num_choices = [len(d.choices) for d in decisions]
        width = max(self.num_choices)
        self.temperature = temperature
        self.tanh_constant = tanh_constant
        self.logits = nn.Parameter(torch.zeros(len(decisions), width))
        mask = torch.zeros(len(decisions), width)
        for i, n in enumerate(self.num_choices):
            mask[i, n:] = -torch.inf
        self.register_buffer("mask", mask, persistent=False)

    def log_policy(self) -> Tensor:
        """(L, max choices) log-probabilities of every choice of every decision."""
        logits = self.logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return torch.log_softmax(logits + self.mask, dim=-1)

    def _entropy(self, log_p: Tensor) -> Tensor:
        p = log_p.exp()
        # padded choices have p = 0 and log p = -inf; their term is 0, not nan
        return -(p * log_p.masked_fill(p == 0, 0.0)).sum()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Sample:
        """Sample ``n`` sequences (no gradient)."""
        if n < 1:
            raise ValueError(f"n={n} must be >= 1")
        log_p = self.log_policy()
        tokens = torch.multinomial(log_p.exp(), n, replacement=True, generator=generator).T
        log_probs = log_p.gather(1, tokens.T).sum(0)
        return Sample(
            tokens=tokens.contiguous(),
            log_probs=log_probs,
            entropies=self._entropy(log_p).expand(n).clone(),
        )

    def evaluate(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies of given sequences under the current policy
        (with gradient): ``(log_probs (n,), entropies (n,))``."""
        _check_tokens(tokens, len(self.num_choices))
        log_p = self.log_policy()
        log_probs = log_p.gather(1, tokens.long().T).sum(0)
        return log_probs, self._entropy(log_p).expand(tokens.shape[0])


Controller = IndependentController | LSTMController


def make_controller(
    kind: str,
    decisions: Sequence[Decision],
    seed: int | None = None,
    temperature: float = 1.0,
    tanh_constant: float | None = None,
    hidden_size: int | None = None,
    init_range: float | None = None,
) -> Controller:
    """A controller by kind (:data:`CONTROLLERS`).

    ``hidden_size`` and ``init_range`` (and the seed of the initial weights) only exist for the
    LSTM; the independent policy starts uniform. ``None`` means NASNet's 100 and 0.1.

    Raises:
        ValueError: for an unknown kind or an LSTM-only setting given to ``independent``.
    """
    if kind == "independent":
        lstm_only = {"hidden_size": hidden_size, "init_range": init_range}
        given = [k for k, v in lstm_only.items() if v is not None]
        if given:
            raise ValueError(
                f"controller kind 'independent' has no {given}; they are LSTM settings "
                "(controller.kind=lstm)"
            )
        return IndependentController(decisions, temperature, tanh_constant)
    if kind == "lstm":
        return LSTMController(
            decisions,
            hidden_size=100 if hidden_size is None else hidden_size,
            temperature=temperature,
            tanh_constant=tanh_constant,
            init_range=0.1 if init_range is None else init_range,
            seed=seed,
        )
    raise ValueError(f"unknown controller kind {kind!r}; known: {list(CONTROLLERS)}")
