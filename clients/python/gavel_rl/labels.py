"""Turning what trainers hold (verl's ground_truth, TRL's dataset columns, chat messages) into
gavel labels and judged text."""

import json


def plain(value):
    """numpy arrays and scalars (verl stores ground truths in numpy) as plain Python values; a
    float32 or float16 as it prints (0.1, not the 0.10000000149011612 it widens to)."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "") == "f" and dtype.itemsize < 8:
        if getattr(value, "ndim", 0) == 0:
            return float(str(value))
        return [plain(x) for x in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def answer_text(value):
    """A gold answer as the text a person writes it: a string as it is; an integral float below
    1e15 in magnitude without its fraction (`8.0` and `1e3` -> "8" and "1000", so a float
    column's `8.0` matches the answer `8`), other floats as Python's shortest repr (`0.5` ->
    "0.5"; NaN and infinities as `str()`); ints as they are; booleans as JSON ("true"). numpy
    scalars are read as the Python values they hold (see `plain`)."""
    value = plain(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def is_empty(label):
    label = plain(label)
    return label is None or (isinstance(label, str) and not label.strip())


def label_value(label, question=None):
    """A gavel label (JSON-able) from a ground truth: a string (a gold answer, or JSON text of a
    list or object), a number, a list of gold answers, or a dict of gavel label fields. `None`
    stays `None` (the server then applies its --rubric, or refuses). Numbers and booleans that
    become gold answers (bare, in a list, or in a dict's `gold_answers` list) are written by
    `answer_text`; strings are never changed. `question`, when given, is added as the label's
    `query` unless the label has one."""
    gt = plain(label)
    if isinstance(gt, str):
        t = gt.strip()
        if t[:1] in ("{", "["):
            try:
                gt = json.loads(t)
            except ValueError:
                pass
    if gt is None or (isinstance(gt, str) and not gt.strip()):
        return None
    if isinstance(gt, dict):
        out = {k: plain(v) for k, v in gt.items()}
        if isinstance(out.get("gold_answers"), list):
            golds = [plain(a) for a in out["gold_answers"]]
            out["gold_answers"] = [answer_text(a) if isinstance(a, (int, float)) else a for a in golds if a is not None]
    elif isinstance(gt, (list, tuple)):
        out = {"gold_answers": [answer_text(a) for a in gt if plain(a) is not None]}
    else:
        out = {"gold_answers": [answer_text(gt)]}
    if question and "query" not in out:
        out["query"] = question
    return out


def content_text(content):
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "\n".join(p for p in parts if p)
    return ""


def completion_text(completion):
    """The judged text of a completion: a string as it is; for a conversational completion (a
    list of messages, possibly with tool calls and tool results), the content of the last
    assistant message that has text. A message without `content`, or with `content: None` (a
    pure tool call), is skipped; no text at all gives ""."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        for m in reversed(completion):
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant":
                text = content_text(m.get("content"))
                if text.strip():
                    return text
        return ""
    return "" if completion is None else str(completion)


def question_of(prompt):
    """The question in a prompt: the last user message of a conversational prompt, or a plain
    string prompt as it is."""
    if isinstance(prompt, str):
        return prompt.strip() or None
    if isinstance(prompt, list):
        for m in reversed(prompt):
            if isinstance(m, dict) and m.get("role") == "user":
                text = content_text(m.get("content")).strip()
                if text:
                    return text
    return None
