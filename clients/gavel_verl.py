"""verl custom reward function backed by a running `gavel serve` (standard library only).

    custom_reward_function.path=clients/gavel_verl.py
    custom_reward_function.name=compute_score            # one call per sample
    # or, one HTTP call per batch:
    custom_reward_function.name=compute_score_batch
    reward_model.reward_manager=batch

`ground_truth` is a gavel label: a gold answer string, a list of gold answers, or a dict
(`{"gold_answers": [...]}`, `{"nuggets": [...]}`, `{"rubric": "<id>"}`); see docs/serve.md.
`extra_info["question"]` (or `"query"`), when present, is the question the judge sees.
Environment: GAVEL_URL (default http://127.0.0.1:8000), GAVEL_API_KEY (optional).
"""

import json
import os
import time
import urllib.error
import urllib.request

URL = os.environ.get("GAVEL_URL", "http://127.0.0.1:8000").rstrip("/")
KEY = os.environ.get("GAVEL_API_KEY")


def _post(body, tries=10):
    headers = {"Content-Type": "application/json"}
    if KEY:
        headers["Authorization"] = "Bearer " + KEY
    data = json.dumps(body).encode()
    for attempt in range(tries):
        request = urllib.request.Request(URL + "/get_reward", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=180) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as e:  # 503: queue full, come back after Retry-After
            if e.code != 503 or attempt + 1 == tries:
                raise
            time.sleep(float(e.headers.get("Retry-After", "1")))


def _label(ground_truth, extra_info):
    gt = ground_truth.tolist() if hasattr(ground_truth, "tolist") else ground_truth
    if isinstance(gt, str):
        try:
            gt = json.loads(gt) if gt.lstrip()[:1] in ("{", "[") else gt
        except ValueError:
            pass
    label = dict(gt) if isinstance(gt, dict) else {"gold_answers": gt if isinstance(gt, list) else [str(gt)]}
    question = (extra_info or {}).get("question") or (extra_info or {}).get("query")
    if question and "query" not in label:
        label["query"] = question
    return json.dumps(label)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos):
    extra_infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    labels = [_label(g, e) for g, e in zip(ground_truths, extra_infos)]
    reply = _post({"query": list(solution_strs), "labels": labels})
    logs = reply["extra_logs"]
    return [
        {"score": r, **{k: v[i] for k, v in logs.items()}}
        for i, r in enumerate(reply["rewards"])
    ]


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]
