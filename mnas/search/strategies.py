"""Search strategies behind one ask/tell interface.

The search loop calls ``ask(n)`` for architectures, evaluates them however it likes,
and hands the rewards back with ``tell``. It never knows which strategy runs.

- ``ppo``: a controller (by default independent per-decision logits) updated with PPO on
  rank advantages, proposing only architectures it has not proposed before.
- ``reinforce``: the same with a plain REINFORCE step.
- ``random``: uniform sampling, the baseline every claim is measured against.
- ``evolution``: regularized (ageing) evolution, Real et al. 2019.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import torch

from mnas.search.controller import make_controller
from mnas.search.ppo import EMABaseline, PPOConfig, policy_update, rank_advantages
from mnas.space import Architecture, SearchSpace


class Strategy(Protocol):
    """What the search loop needs from a strategy."""

    name: str

    def ask(self, n: int) -> list[Architecture]: ...

    def tell(self, archs: Sequence[Architecture], rewards: Sequence[float]) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _check_tell(
    pending: int | None, archs: Sequence[Architecture], rewards: Sequence[float]
) -> None:
    if len(archs) != len(rewards):
        raise ValueError(f"tell got {len(archs)} architectures and {len(rewards)} rewards")
    if pending is not None and pending != len(archs):
        raise ValueError(f"tell got {len(archs)} results for the {pending} asked")


class RandomStrategy:
    """Uniform sampling over the space."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.rng = random.Random(seed)

    def ask(self, n: int) -> list[Architecture]:
        return [self.space.sample(self.rng) for _ in range(n)]

    def tell(self, archs: Sequence[Architecture], rewards: Sequence[float]) -> dict[str, float]:
        _check_tell(None, archs, rewards)
        return {}

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))


def _as_rng_state(state) -> tuple:
    # random.getstate() is (version, tuple, gauss); a round trip through torch.save keeps
    # tuples, but JSON or OmegaConf may hand back lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class ControllerStrategy:
    """A controller trained with PPO (``clipped=True``) or REINFORCE.

    Each batch is drawn from the policy but skips architectures this strategy proposed
    before: a slot holding a repeat is redrawn, up to ``resample`` times, and keeps a repeat
    only when every redraw was one too (a nearly converged policy). A repeat would cost a
    sample and teach nothing new; the redraw keeps proposals on the policy's most likely
    *new* architectures, so a policy that concentrates turns into a local search around its
    mode instead of collapsing onto it.

    Args:
        space: the search space (its decision list sizes the controller).
        seed: seeds the controller's weights (LSTM) and its sampling generator.
        lr: Adam learning rate (0.1 for the independent policy; NASNet's LSTM: 3.5e-4).
        adam_beta1: Adam's first-moment decay; 0 (TuNAS) makes each step follow the
            current batch's gradient instead of a momentum of stale ones.
        ppo: update settings (advantages, epochs, clipping, entropy bonus).
        clipped: PPO when True, REINFORCE when False.
        controller: ``independent`` or ``lstm`` (:func:`make_controller`).
        resample: redraws allowed per repeated architecture (0: keep repeats).
        controller_kwargs: passed to :func:`make_controller` (temperature, hidden_size, ...).
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        lr: float = 0.1,
        adam_beta1: float = 0.0,
        ppo: PPOConfig | None = None,
        clipped: bool = True,
        controller: str = "independent",
        resample: int = 50,
        **controller_kwargs,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        if not 0 <= adam_beta1 < 1:
            raise ValueError(f"adam_beta1={adam_beta1} must lie in [0, 1)")
        if resample < 0:
            raise ValueError(f"resample={resample} must be >= 0")
        self.name = "ppo" if clipped else "reinforce"
        self.space = space
        self.config = ppo or PPOConfig()
        self.clipped = clipped
        self.resample = resample
        self.controller = make_controller(
            controller, space.decisions, seed=seed, **controller_kwargs
        )
        self.optimizer = torch.optim.Adam(
            self.controller.parameters(), lr=lr, betas=(adam_beta1, 0.999)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline = EMABaseline(self.config.baseline_decay)
        self.proposed: set[tuple[int, ...]] = set()
        self._pending: torch.Tensor | None = None

    def _draw(self, n: int) -> torch.Tensor:
        tokens = self.controller.sample(n, self.generator).tokens
        if self.resample == 0:
            return tokens
        taken = set(self.proposed)
        rows = [tuple(t) for t in tokens.tolist()]
        for i in range(n):
            tries = 0
            while rows[i] in taken and tries < self.resample:
                rows[i] = tuple(self.controller.sample(1, self.generator).tokens[0].tolist())
                tries += 1
            taken.add(rows[i])
        return torch.tensor(rows, dtype=torch.long)

    def ask(self, n: int) -> list[Architecture]:
        tokens = self._draw(n)
        self.proposed.update(tuple(t) for t in tokens.tolist())
        self._pending = tokens
        return [self.space.architecture(t.tolist()) for t in tokens]

    def tell(self, archs: Sequence[Architecture], rewards: Sequence[float]) -> dict[str, float]:
        if self._pending is None:
            raise ValueError("tell() called before ask()")
        tokens = self._pending
        _check_tell(tokens.shape[0], archs, rewards)
        r = torch.tensor([float(x) for x in rewards])
        if self.config.advantages == "rank":
            advantages = rank_advantages(r)
        else:
            # The advantage uses the baseline from *before* this batch, as in NASNet.
            base = self.baseline.value if self.baseline.value is not None else float(r.mean())
            advantages = r - base
            self.baseline.update(r)
        with torch.no_grad():
            old_log_probs, _ = self.controller.evaluate(tokens)
        diag = policy_update(
            self.controller,
            self.optimizer,
            tokens,
            old_log_probs,
            advantages,
            self.config,
            self.clipped,
        )
        diag["reward_mean"] = float(r.mean())
        diag["unique_proposed"] = float(len(self.proposed))
        self._pending = None
        return diag

    def state_dict(self) -> dict:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline.value,
            "proposed": sorted(self.proposed),
        }

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline.value = state["baseline"]
        self.proposed = {tuple(t) for t in state["proposed"]}
        self._pending = None


class EvolutionStrategy:
    """Regularized evolution: tournament selection, one-decision mutation, oldest dies.

    Args:
        population: population size P (NAS-Bench-201 paper: 10).
        sample_size: tournament size S (NAS-Bench-201 paper: 3).
    """

    name = "evolution"

    def __init__(
        self, space: SearchSpace, seed: int = 0, population: int = 10, sample_size: int = 3
    ) -> None:
        if population < 2:
            raise ValueError(f"population={population} must be >= 2")
        if not 1 <= sample_size <= population:
            raise ValueError(f"sample_size={sample_size} must lie in [1, population={population}]")
        self.space = space
        self.rng = random.Random(seed)
        self.population_size = population
        self.sample_size = sample_size
        self.population: deque[tuple[tuple[int, ...], float]] = deque()
        self._pending: int | None = None

    def _mutate(self, tokens: tuple[int, ...]) -> tuple[int, ...]:
        mutable = [i for i, d in enumerate(self.space.decisions) if len(d.choices) > 1]
        out = list(tokens)
        i = self.rng.choice(mutable)
        out[i] = self.rng.choice(
            [c for c in range(len(self.space.decisions[i].choices)) if c != out[i]]
        )
        return tuple(out)

    def ask(self, n: int) -> list[Architecture]:
        archs = []
        for _ in range(n):
            if len(self.population) < self.population_size:
                archs.append(self.space.sample(self.rng))
                continue
            contenders = self.rng.sample(list(self.population), self.sample_size)
            parent = max(contenders, key=lambda p: p[1])[0]
            archs.append(self.space.architecture(self._mutate(parent)))
        self._pending = n
        return archs

    def tell(self, archs: Sequence[Architecture], rewards: Sequence[float]) -> dict[str, float]:
        _check_tell(self._pending, archs, rewards)
        for arch, reward in zip(archs, rewards, strict=True):
            self.population.append((arch.tokens, float(reward)))
            if len(self.population) > self.population_size:
                self.population.popleft()
        self._pending = None
        return {"population_best": max(r for _, r in self.population)}

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "population": list(self.population)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))
        self.population = deque((tuple(t), float(r)) for t, r in state["population"])
        self._pending = None


STRATEGIES = ("ppo", "reinforce", "random", "evolution")


def make_strategy(name: str, space: SearchSpace, seed: int = 0, **kwargs) -> Strategy:
    """A strategy by name; keyword arguments go to its constructor."""
    if name == "ppo":
        return ControllerStrategy(space, seed=seed, clipped=True, **kwargs)
    if name == "reinforce":
        return ControllerStrategy(space, seed=seed, clipped=False, **kwargs)
    if name == "random":
        return RandomStrategy(space, seed=seed, **kwargs)
    if name == "evolution":
        return EvolutionStrategy(space, seed=seed, **kwargs)
    raise ValueError(f"unknown strategy {name!r}; known: {list(STRATEGIES)}")
