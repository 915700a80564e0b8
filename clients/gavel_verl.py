"""verl custom reward function file: `reward.custom_reward_function.path=clients/gavel_verl.py`
(verl >= 0.8; `custom_reward_function.path=` in 0.7 and older).

It re-exports `gavel_rl.verl` (clients/python), usable without installing the package; see
that module or docs/serve.md for the names to pick per verl version.
"""

import os
import sys

try:
    from gavel_rl.verl import compute_score, compute_score_async, compute_score_batch, compute_score_scalar
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
    from gavel_rl.verl import compute_score, compute_score_async, compute_score_batch, compute_score_scalar

__all__ = ["compute_score", "compute_score_async", "compute_score_batch", "compute_score_scalar"]
