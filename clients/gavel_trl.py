"""TRL reward functions: `from gavel_trl import reward_func` with clients/ on PYTHONPATH.

It re-exports `gavel_rl.trl` (clients/python); `pip install ./clients/python` and
`from gavel_rl.trl import reward_func` is the same thing.
"""

import os
import sys

try:
    from gavel_rl.trl import reward_func, reward_func_async
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
    from gavel_rl.trl import reward_func, reward_func_async

__all__ = ["reward_func", "reward_func_async"]
