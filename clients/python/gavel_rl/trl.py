"""TRL GRPOTrainer reward functions backed by `gavel serve`::

    from gavel_rl.trl import reward_func            # or reward_func_async (awaited by TRL)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward_func], train_dataset=dataset)

The dataset needs one label column: `label` (a gavel label: a gold answer, a list of them, JSON
text, or a dict as in docs/serve.md), or `gold_answers` (short-form), `nuggets` (long-form),
`rubric` (an id loaded on the server). The question the judge sees is the `question` (or
`query`) column, else the prompt's last user message (conversational), else a plain prompt.

Completions may be plain strings or conversational (lists of messages, with tool calls): the
judged text is the last assistant message that has text.

A sample without a label (None or "") gets None ("not applicable"; TRL leaves it out), and so
does a sample the server could not judge, with the reason logged. gavel's other scores go to
TRL's completions table (`log_extra`) and metrics (`log_metric`) when TRL passes them (>= 1.9).
"""

import logging
import math

from . import client
from .labels import completion_text, is_empty, label_value, question_of

logger = logging.getLogger("gavel_rl.trl")

LOGGED = ("soft_reward", "model_verdicts")


def _column(columns, name, i):
    values = columns.get(name)
    if values is None or i >= len(values):
        return None
    return values[i]


def _label(i, prompts, columns):
    question = _column(columns, "question", i) or _column(columns, "query", i)
    if not question and prompts is not None and i < len(prompts):
        question = question_of(prompts[i])
    if "label" in columns:
        raw = _column(columns, "label", i)
        return None if is_empty(raw) else label_value(raw, question)
    label = {k: _column(columns, k, i) for k in ("gold_answers", "nuggets", "rubric")}
    label = {k: v for k, v in label.items() if not is_empty(v)}
    if not label:
        return None
    return label_value(label, question)


def _prepare(prompts, completions, columns):
    labels = [_label(i, prompts, columns) for i in range(len(completions))]
    todo = [i for i, l in enumerate(labels) if l is not None]
    return labels, todo


def _finish(n, labels, todo, items, columns):
    rewards = [None] * n
    extras = {k: [None] * n for k in LOGGED}
    for i, item in zip(todo, items):
        if item.error is not None:
            logger.warning("gavel could not judge completion %d: %s", i, item.error)
            continue
        rewards[i] = item.reward
        for k in LOGGED:
            if k in item.extra:
                extras[k][i] = float(item.extra[k])
    log_extra, log_metric = columns.get("log_extra"), columns.get("log_metric")
    if callable(log_extra):
        for k, values in extras.items():
            log_extra("gavel_" + k, values)
    if callable(log_metric):
        judged = [r for r in rewards if r is not None]
        log_metric("gavel/unjudged", float(n - len(judged)))
        for k, values in extras.items():
            vals = [v for v in values if v is not None and not math.isnan(v)]
            if vals:
                log_metric("gavel/" + k, sum(vals) / len(vals))
    return rewards


def reward_func(prompts, completions, completion_ids=None, **columns):
    """TRL reward function: one reward per completion, None where not applicable or not judged.
    A server that stays unreachable past GAVEL_TIMEOUT (default 600 s) raises."""
    labels, todo = _prepare(prompts, completions, columns)
    items = client.reward([completion_text(completions[i]) for i in todo], [labels[i] for i in todo]) if todo else []
    return _finish(len(completions), labels, todo, items, columns)


async def reward_func_async(prompts, completions, completion_ids=None, **columns):
    """`reward_func` for TRL's async reward functions (run concurrently with the others)."""
    labels, todo = _prepare(prompts, completions, columns)
    items = (
        await client.reward_async([completion_text(completions[i]) for i in todo], [labels[i] for i in todo])
        if todo
        else []
    )
    return _finish(len(completions), labels, todo, items, columns)
