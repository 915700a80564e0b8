"""Reward functions for RL trainers backed by a running `gavel serve`.

- `gavel_rl.verl`: `compute_score`, `compute_score_async`, `compute_score_batch`,
  `compute_score_scalar` (verl's custom_reward_function).
- `gavel_rl.trl`: `reward_func`, `reward_func_async` (TRL's GRPOTrainer).
- `gavel_rl.client`: `reward` / `reward_async`, the HTTP client under both.

OpenRLHF and slime call the server directly (docs/serve.md).
"""

from .client import Config, GavelError, Item, reward, reward_async

__all__ = ["Config", "GavelError", "Item", "reward", "reward_async"]
__version__ = "0.2.0"
