"""gavel_rl.verl against a running `gavel serve`, with the call shapes of verl's reward loop."""

import asyncio
import importlib.util
import re
import sys
import time
import types

import pytest

from conftest import REPO, fixture, post
from gavel_rl import GavelError
from gavel_rl import verl as gv
from gavel_rl.labels import label_value

CALLS = fixture("verl-v0.7.0-reward-loop-calls.json")["calls"]


@pytest.mark.parametrize("call", CALLS, ids=[str(i) for i in range(len(CALLS))])
def test_reward_loop_calls(gavel_env, call):
    want = call["expect"]
    if want.get("raises"):
        # None and "" are no label: never gold "None" or an item error turned into 0.0.
        with pytest.raises(GavelError):
            gv.compute_score(**call["kwargs"])
        return
    r = gv.compute_score(**call["kwargs"])
    assert r["score"] == want["score"] and r["acc"] == want["acc"], r
    assert r["gavel_error"] == 0.0


def test_async_variant_is_awaited_and_agrees(gavel_env):
    kwargs = CALLS[0]["kwargs"]
    assert asyncio.iscoroutinefunction(gv.compute_score_async)
    got = asyncio.run(gv.compute_score_async(**kwargs))
    assert got == gv.compute_score(**kwargs)
    many = asyncio.run(_gather(kwargs, 6))
    assert all(m["score"] == 1.0 for m in many)


async def _gather(kwargs, n):
    return await asyncio.gather(*(gv.compute_score_async(**kwargs) for _ in range(n)))


def test_every_result_has_the_same_keys_and_a_configured_error_value(gavel_env, monkeypatch):
    bad = '{"nuggets": [{"text": "x", "kind": "magic"}]}'
    with pytest.raises(GavelError, match="kind"):
        gv.compute_score_batch(["gavel"] * 2, ["Canberra", "x"], ["Canberra", bad], [None, None])
    monkeypatch.setenv("GAVEL_ON_ERROR", "-1")
    out = gv.compute_score_batch(["gavel"] * 2, ["Canberra", "x"], ["Canberra", bad], [None, None])
    assert [o["score"] for o in out] == [1.0, -1.0]
    assert [o["gavel_error"] for o in out] == [0.0, 1.0]
    assert out[0].keys() == out[1].keys()
    assert "acc" in out[0]


def test_batches_go_in_chunks_and_413_splits(proxy, gavel_env, monkeypatch):
    monkeypatch.setenv("GAVEL_URL", proxy.url)
    monkeypatch.setenv("GAVEL_CHUNK", "4")
    n = 10
    out = gv.compute_score_batch(["gavel"] * n, [str(i) for i in range(n)], list(range(n)), None, extra=1)
    assert [o["score"] for o in out] == [1.0] * n
    assert sorted(len(b["query"]) for b in proxy.bodies) == [2, 4, 4]
    # A server that takes fewer records per request than the chunk: halves until it fits.
    proxy.bodies.clear()
    proxy.max_records = 1
    out = gv.compute_score_batch(["gavel"] * 3, ["a", "b", "c"], ["a", "b", "c"], None)
    assert [o["score"] for o in out] == [1.0] * 3
    assert [len(b["query"]) for b in proxy.bodies if len(b["query"]) == 1].count(1) == 3


def test_transient_failures_are_retried(proxy, gavel_env, monkeypatch):
    monkeypatch.setenv("GAVEL_URL", proxy.url)
    proxy.script = [503, 504, "reset", 502, 429]
    r = gv.compute_score("gavel", "Canberra", "Canberra", None)
    assert r["score"] == 1.0
    assert len(proxy.bodies) == 6


def test_the_deadline_bounds_the_retries(proxy, gavel_env, monkeypatch):
    monkeypatch.setenv("GAVEL_URL", proxy.url)
    monkeypatch.setenv("GAVEL_TIMEOUT", "3")
    proxy.script = [503] * 100
    start = time.monotonic()
    with pytest.raises(GavelError, match="deadline"):
        gv.compute_score("gavel", "Canberra", "Canberra", None)
    assert time.monotonic() - start < 4.5
    # A 400 is not retried: it will not get better.
    proxy.script = [400]
    with pytest.raises(GavelError, match="400"):
        gv.compute_score("gavel", "Canberra", "Canberra", None)


def test_other_data_sources_go_to_verls_default_scorer(gavel_env, monkeypatch, proxy):
    calls = []

    def default_compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw):
        calls.append(data_source)
        return 0.25

    mod = types.ModuleType("verl.utils.reward_score")
    mod.default_compute_score = default_compute_score
    for name in ("verl", "verl.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "verl.utils.reward_score", mod)
    monkeypatch.setenv("GAVEL_URL", proxy.url)
    monkeypatch.setenv("GAVEL_DATA_SOURCES", "gavel*,nq")
    out = gv.compute_score_batch(["openai/gsm8k", "gavel/x", "nq"], ["4", "a", "b"], ["4", "a", "b"], None)
    assert [o["score"] for o in out] == [0.25, 1.0, 1.0]
    assert calls == ["openai/gsm8k"]
    assert [len(b["query"]) for b in proxy.bodies] == [2]
    assert out[0].keys() == out[1].keys()


def test_url_is_read_at_call_time_and_the_file_shim_works(proxy, gavel_env, monkeypatch):
    spec = importlib.util.spec_from_file_location("gavel_verl_file", REPO / "clients" / "gavel_verl.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    monkeypatch.setenv("GAVEL_URL", proxy.url)
    assert shim.compute_score("gavel", "Canberra", "Canberra")["score"] == 1.0
    assert len(proxy.bodies) == 1


def test_prime_gets_a_float(gavel_env):
    assert gv.compute_score_scalar("gavel", "Canberra", "Canberra", None) == 1.0


def test_long_form_reward_is_the_servers(gavel_env, server):
    label = {"query": "Where is the Eiffel Tower?", "nuggets": ["The Eiffel Tower is in Paris"]}
    answer = "The Eiffel Tower stands in Paris, France."
    # The server reads each nugget's content-free baseline once and reuses it; warm it so the
    # two calls compared below are the same decode (bit-identical numbers).
    post(server, {"query": [answer], "labels": [label]})
    r = gv.compute_score("gavel", answer, label, None)
    direct = post(server, {"query": [answer], "labels": [label]})
    assert r["score"] == direct["rewards"][0]
    assert r["acc"] == r["score"]
    assert r["soft_reward"] == direct["extra_logs"]["soft_reward"][0]


def test_number_labels_are_written_as_a_person_writes_them():
    # A float column's 8.0 must match the answer "8" by exact match: gold "8", not "8.0".
    assert label_value(8.0) == {"gold_answers": ["8"]}
    assert label_value(1e3) == {"gold_answers": ["1000"]}
    assert label_value(-3.0) == {"gold_answers": ["-3"]}
    assert label_value(0.5) == {"gold_answers": ["0.5"]}
    assert label_value(3.14) == {"gold_answers": ["3.14"]}
    assert label_value(999999999999999.0) == {"gold_answers": ["999999999999999"]}
    assert label_value(1e15) == {"gold_answers": [repr(1e15)]}  # from 1e15 on: Python's repr
    assert label_value(1889) == {"gold_answers": ["1889"]}
    assert label_value(True) == {"gold_answers": ["true"]}
    assert label_value(float("nan")) == {"gold_answers": ["nan"]}
    assert label_value(float("inf")) == {"gold_answers": ["inf"]}
    assert label_value([8.0, 0.5, "eight", None]) == {"gold_answers": ["8", "0.5", "eight"]}
    assert label_value("[8.0, 2]") == {"gold_answers": ["8", "2"]}
    # A dict label's gold answers are sent as text, not numbers; other fields are untouched.
    assert label_value({"gold_answers": [8, 8.0, "8.0"], "id": 7}, "q") == {
        "gold_answers": ["8", "8", "8.0"], "id": 7, "query": "q"}
    assert label_value('{"gold_answers": [2.0]}') == {"gold_answers": ["2"]}
    # Strings are never changed.
    assert label_value("8.0") == {"gold_answers": ["8.0"]}
    assert label_value(["8.0"]) == {"gold_answers": ["8.0"]}


def test_number_labels_are_the_text_gavel_writes_for_them():
    # A label sent as a number is made text by gavel; one the client made text must be the same
    # text, or the same label would score differently by the way it came. Exact match decides
    # each record without the model: the client's text as the answer, the number as the gold.
    import json
    import subprocess

    from conftest import _binary

    # 847472097840887.25 lies halfway between two shortest texts: Python writes the even one.
    numbers = [8.0, 0.5, 0.1, -2.25, 1e-4, 1e-5, -1.5e-7, 1e15, 1234567890123456.7, 1e16, 2e20, 1.5e300, 7, 10**18,
               847472097840887.25, 937917.4360351562]
    records = "".join(json.dumps({"id": str(i), "answer": label_value(n)["gold_answers"][0], "gold_answers": [n]}) + "\n"
                      for i, n in enumerate(numbers))
    out = subprocess.run([_binary(), "verify", "--short-form", "em"], input=records, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    got = {r["id"]: (r["correct"], r["verdicts"][0]["nugget"]) for r in map(json.loads, out.stdout.splitlines())}
    for i, n in enumerate(numbers):
        assert got[str(i)] == (True, label_value(n)["gold_answers"][0]), (n, got[str(i)])


def test_numpy_labels_are_written_as_a_person_writes_them():
    np = pytest.importorskip("numpy")
    assert label_value(np.float64(8.0)) == {"gold_answers": ["8"]}
    assert label_value(np.float64(0.25)) == {"gold_answers": ["0.25"]}
    assert label_value(np.array([8.0, 2.5])) == {"gold_answers": ["8", "2.5"]}
    assert label_value([np.float64(8.0), np.int64(3)]) == {"gold_answers": ["8", "3"]}
    assert label_value({"gold_answers": np.array([8.0])}) == {"gold_answers": ["8"]}
    assert label_value({"gold_answers": [np.float64(8.0)]}) == {"gold_answers": ["8"]}
    # A float32 column: as it prints, not as it widens to a Python float.
    assert label_value(np.float32(0.1)) == {"gold_answers": ["0.1"]}
    assert label_value(np.array([0.1, 8.0], dtype=np.float32)) == {"gold_answers": ["0.1", "8"]}
    # None among a label's gold answers is dropped, as in a plain list.
    assert label_value({"gold_answers": [None, 8.0]}) == {"gold_answers": ["8"]}


def test_the_documented_settings_for_current_verl_are_keys_it_reads():
    """docs/serve.md's rows for verl >= 0.8 name only keys verl reads there (v0.9 silently ignores
    the old top-level ones, so a wrong row means gavel is never called) and managers it has."""
    keys = fixture("verl-v0.9.1-config-keys.json")
    rows = [
        line
        for line in (REPO / "docs" / "serve.md").read_text().splitlines()
        if line.startswith("| v0.8.0 and later")
    ]
    assert len(rows) >= 3, rows
    seen = set()
    for row in rows:
        manager_cell, settings = row.split("|")[2], row.split("|")[3]
        for manager in re.findall(r"`([a-z_]+)`", manager_cell):
            assert manager in keys["managers"], (manager, row)
        for key, value in re.findall(r"\+?([a-zA-Z_][\w.]*)=([\w./]+)", settings):
            if key.startswith("GAVEL_"):
                continue
            assert key in keys["reads"], (key, row)
            assert key not in keys["ignored"], (key, row)
            seen.add(key)
            if key == "reward.custom_reward_function.name":
                assert callable(getattr(gv, value)), value
            if key == "reward.reward_manager.name":
                assert value in keys["managers"], value
    assert {"reward.custom_reward_function.path", "reward.custom_reward_function.name"} <= seen, seen
