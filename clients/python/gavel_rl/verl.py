"""verl reward functions backed by `gavel serve`.

verl >= 0.8 (managers naive, dapo, gdpo, rate_limited, remote; the keys live under ``reward.``,
and v0.9+ silently ignores the old top-level ones)::

    reward.custom_reward_function.path=clients/gavel_verl.py
    reward.custom_reward_function.name=compute_score_async   # naive, dapo, gdpo, rate_limited (awaited)
    reward.custom_reward_function.name=compute_score         # reward.reward_manager.name=remote

verl 0.7: the same names under ``custom_reward_function.`` (no ``reward.``). verl < 0.7, or 0.7
with ``reward_model.use_reward_loop=False``::

    custom_reward_function.name=compute_score_batch reward_manager.name=batch   # one call per batch
    custom_reward_function.name=compute_score_scalar reward_manager.name=prime  # prime wants floats

`ground_truth` is a gavel label: a gold answer (string or number), a list of them, JSON text of
either, or a dict (`{"gold_answers": [...]}`, `{"nuggets": [...]}`, `{"rubric": "<id>"}`).
`extra_info["question"]` (or `"query"`) is the question the judge sees.

Results are dicts with `score` (the reward), `acc` (1/0 correctness for short-form labels, the
reward for long-form; DAPO's group filter reads `acc` by default), gavel's other scores and
`gavel_error` (0/1); every dict has the same keys, as verl requires.

An item the server could not judge (a bad label, a server that stays down past the deadline):
`GAVEL_ON_ERROR=raise` (the default) raises, which stops the step with the reason;
`GAVEL_ON_ERROR=<number>` gives that score with `gavel_error` 1. Never a silent 0.0 from gavel;
verl's rate_limited manager turns any exception into 0.0 itself, so set `GAVEL_ON_ERROR=0` there
to keep gavel's keys and the `gavel_error` count.

`data_source`: rows whose data_source matches `GAVEL_DATA_SOURCES` (comma-separated shell
patterns, default `*`) go to gavel; the others to verl's own `default_compute_score`.
"""

import fnmatch
import math
import os

from . import client
from .labels import label_value

# Seconds a reward call may take, retries included: verl's rate_limited manager gives up after
# reward.timeout (reward_model.timeout in 0.7; 300 s by default); stay inside it.
DEFAULT_TIMEOUT = 280.0

EXTRA_KEYS = ("soft_reward", "all_score", "strict_all_score", "model_verdicts")


def _config():
    return client.Config.from_env(timeout=DEFAULT_TIMEOUT)


def _on_error():
    policy = os.environ.get("GAVEL_ON_ERROR", "raise").strip().lower()
    if policy == "raise":
        return None
    try:
        return float(policy)
    except ValueError:
        raise ValueError(f"GAVEL_ON_ERROR must be `raise` or a number, not {policy!r}") from None


def _ours(data_source):
    patterns = [p.strip() for p in os.environ.get("GAVEL_DATA_SOURCES", "*").split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(str(data_source), p) for p in patterns)


def _question(extra_info):
    if isinstance(extra_info, dict):
        return extra_info.get("question") or extra_info.get("query")
    return None


def _label(ground_truth, extra_info):
    return label_value(ground_truth, _question(extra_info))


def _result(item, label):
    if item.error is not None:
        value = _on_error()
        if value is None:
            raise client.GavelError(f"gavel could not judge this item: {item.error}")
        return {"score": value, "acc": value, **{k: 0.0 for k in EXTRA_KEYS}, "gavel_error": 1.0}
    short = isinstance(label, dict) and "gold_answers" in label and "nuggets" not in label and "rubric" not in label
    extra = {k: float(item.extra.get(k, 0.0)) for k in EXTRA_KEYS}
    acc = float(item.reward >= 1.0) if short else item.reward
    return {"score": item.reward, "acc": acc, **extra, "gavel_error": 0.0}


def _failed(error):
    value = _on_error()
    if value is None:
        raise error
    return {"score": value, "acc": value, **{k: 0.0 for k in EXTRA_KEYS}, "gavel_error": 1.0}


def _fallback(data_source, solution_str, ground_truth, extra_info, **kwargs):
    """verl's own scorer, for data sources that are not gavel's; shaped like gavel's results."""
    from verl.utils.reward_score import default_compute_score

    r = default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    score = float(r["score"]) if isinstance(r, dict) else float(r)
    acc = float(r.get("acc", score)) if isinstance(r, dict) else score
    return {"score": score, "acc": acc, **{k: score for k in EXTRA_KEYS[:3]}, "model_verdicts": 0.0, "gavel_error": 0.0}


def _split(data_sources, solution_strs, ground_truths, extra_infos):
    n = len(solution_strs)
    data_sources = list(data_sources) if data_sources is not None else ["gavel"] * n
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * n
    ground_truths = list(ground_truths)
    ours = [i for i in range(n) if _ours(data_sources[i])]
    labels = [_label(ground_truths[i], extra_infos[i]) for i in ours]
    return data_sources, extra_infos, ground_truths, ours, labels


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs):
    """verl's batch reward manager: one list of result dicts, the batch sent in chunks."""
    data_sources, extra_infos, ground_truths, ours, labels = _split(
        data_sources, solution_strs, ground_truths, extra_infos
    )
    out = [None] * len(solution_strs)
    if ours:
        try:
            items = client.reward([solution_strs[i] for i in ours], labels, _config())
            for i, item, label in zip(ours, items, labels):
                out[i] = _result(item, label)
        except client.GavelError as e:
            failed = _failed(e)
            for i in ours:
                out[i] = dict(failed)
    for i, r in enumerate(out):
        if r is None:
            out[i] = _fallback(data_sources[i], solution_strs[i], ground_truths[i], extra_infos[i])
    return out


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """One sample (verl's naive, dapo, rate_limited and remote managers)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """One sample, awaited by verl's reward loop (>= 0.7): many samples wait on the server at
    once without a thread each, and the server batches them into shared model calls."""
    if not _ours(data_source):
        return _fallback(data_source, solution_str, ground_truth, extra_info)
    label = _label(ground_truth, extra_info)
    try:
        items = await client.reward_async([solution_str], [label], _config())
    except client.GavelError as e:
        return _failed(e)
    return _result(items[0], label)


def compute_score_scalar(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """The reward alone, as a float: verl's `prime` manager calls float() on results (a dict
    there fails the whole batch). A failed item raises, or gives GAVEL_ON_ERROR's value."""
    r = compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    score = float(r["score"])
    if math.isnan(score):
        raise client.GavelError("gavel gave no score")
    return score
