"""TRL GRPOTrainer reward function backed by a running `gavel serve` (standard library only).

    from gavel_trl import reward_func
    trainer = GRPOTrainer(model=..., reward_funcs=[reward_func], train_dataset=dataset)

The dataset needs one label column: `label` (a gavel label string: a gold answer, or JSON as in
docs/serve.md), or `gold_answers` (list, short-form), or `nuggets` (list, long-form), or
`rubric` (a rubric id loaded on the server). A `question` (or `query`) column, when present,
is the question the judge sees. Environment: GAVEL_URL, GAVEL_API_KEY.
"""

import json

from gavel_verl import _post


def _text(message):
    # Conversational datasets give lists of {"role", "content"}; take the last message.
    return message[-1]["content"] if isinstance(message, list) else message


def _label(i, columns):
    if "label" in columns:
        label = columns["label"][i]
        return label if isinstance(label, str) else json.dumps(label)
    label = {k: columns[k][i] for k in ("gold_answers", "nuggets", "rubric") if k in columns}
    question = (columns.get("question") or columns.get("query") or [None] * (i + 1))[i]
    if question:
        label["query"] = question
    return json.dumps(label)


def reward_func(prompts, completions, **columns):
    labels = [_label(i, columns) for i in range(len(completions))]
    reply = _post({"query": [_text(c) for c in completions], "labels": labels})
    failed = {e["index"] for e in reply.get("errors", [])}
    return [None if i in failed else r for i, r in enumerate(reply["rewards"])]
