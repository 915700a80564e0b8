"""gavel_rl.trl against a running `gavel serve`, with the call shapes of TRL 1.9's GRPOTrainer."""

import asyncio
import importlib.util

from conftest import REPO, fixture, post
from gavel_rl import trl as gt

CASE = fixture("trl-v1.9.0-conversational-tool-calls.json")


class Log:
    def __init__(self):
        self.extra, self.metrics = {}, {}

    def log_extra(self, column, values):
        self.extra[column] = values

    def log_metric(self, name, value):
        self.metrics[name] = value


def _call(func, case=CASE, **more):
    c = case["call"]
    log = Log()
    out = func(c["prompts"], c["completions"], completion_ids=None, trainer_state=object(),
               log_extra=log.log_extra, log_metric=log.log_metric, **c["columns"], **more)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return out, log


def test_conversational_completions_with_tool_calls(gavel_env):
    rewards, log = _call(gt.reward_func)
    assert rewards == CASE["expect"]["rewards"]
    # gavel's other scores reach TRL's completions table and metrics, one value per sample.
    n = len(rewards)
    assert len(log.extra["gavel_soft_reward"]) == n and log.extra["gavel_soft_reward"][3] is None
    assert log.metrics["gavel/unjudged"] == 2.0
    assert "gavel/soft_reward" in log.metrics


def test_async_variant(gavel_env):
    assert asyncio.iscoroutinefunction(gt.reward_func_async)
    rewards, _ = _call(gt.reward_func_async)
    assert rewards == CASE["expect"]["rewards"]


def test_the_question_comes_from_the_column_or_the_last_user_message(gavel_env, server):
    q = "Where is the Eiffel Tower?"
    answer = "It stands in the French capital."  # the model decides: the question matters
    # The first call also reads the nugget's content-free baseline (kept by the server); the
    # second is the same decode as the calls compared below (bit-identical numbers).
    post(server, {"query": [answer], "labels": [{"query": q, "gold_answers": ["Paris"]}]})
    direct = post(server, {"query": [answer], "labels": [{"query": q, "gold_answers": ["Paris"]}]})
    want = direct["extra_logs"]["soft_reward"][0]
    log = Log()
    gt.reward_func([[{"role": "user", "content": q}]], [[{"role": "assistant", "content": answer}]],
                   label=["Paris"], log_extra=log.log_extra)
    assert log.extra["gavel_soft_reward"] == [want]
    log = Log()
    gt.reward_func(["ignored prompt"], [answer], label=["Paris"], question=[q], log_extra=log.log_extra)
    assert log.extra["gavel_soft_reward"] == [want]


def test_items_the_server_cannot_judge_are_none(gavel_env):
    bad = '{"nuggets": [{"text": "x", "kind": "magic"}]}'
    out = gt.reward_func(["p", "p"], ["Canberra", "x"], label=["Canberra", bad])
    assert out == [1.0, None]
    # gold_answers / nuggets columns, None where a row has none.
    out = gt.reward_func(["p", "p"], ["Canberra", "x"], gold_answers=[["Canberra"], None])
    assert out == [1.0, None]


def test_transient_failures_are_retried(proxy, gavel_env, monkeypatch):
    monkeypatch.setenv("GAVEL_URL", proxy.url)
    proxy.script = [503, "reset", 504]
    assert gt.reward_func(["p"], ["Canberra"], label=["Canberra"]) == [1.0]
    assert len(proxy.bodies) == 4


def test_the_old_import_path_still_works(gavel_env):
    spec = importlib.util.spec_from_file_location("gavel_trl_file", REPO / "clients" / "gavel_trl.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    assert shim.reward_func(["p"], ["Canberra"], label=["Canberra"]) == [1.0]
