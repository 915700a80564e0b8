#!/usr/bin/env python3
"""Bootstrap confidence intervals for macro-F1 differences on one labeled file's part.

Reads the features gavel wrote (`gavel calibrate --features-out F.csv`, one row per labeled
verdict with every feature) and two calibration files (`gavel calibrate -o X.json`), applies
each calibration's long-form stack to the rows of FILE in PART, and prints macro-F1 for
calibration A, calibration B and the lexical judge, with 95% intervals of A - lexical and A - B
from resampling groups of records (records that share a query, or an article: the CSV's `group`
column; 2,000 resamples, seed 0).

  scripts/bootstrap-f1.py F.csv FILE PART A.json B.json [--two-grade] [--lexical-from N1,N2]
                          [--verdicts FILE=V.jsonl]

The lexical judge has fixed thresholds (support >= 0.75, partial >= 0.5) unless --lexical-from
names files of the CSV: then its thresholds are fitted on every row of those files (grid of 0.05,
mean macro-F1 over the files, each on its own grading), as a user without a model would.

A calibration with a hidden-state head (`--stack transfer-hidden`) reads its feature
`hidden_logit` from the reads of the verdicts the CSV was made from: `--verdicts FILE=V.jsonl`
names the verdicts file (judged with `--hidden`) of the CSV's FILE; without it, or for a verdict
without the read, the feature reads as the stack's mean (as gavel does).

Needs numpy. 2-grade (REALSumm): the partial probability is folded into not_support before
choosing, as `gavel eval` does for 2-grade gold.
"""
import csv
import json
import sys

import numpy as np

IDX = {"support": 0, "partial_support": 1, "not_support": 2}


def macro_f1(g, p, two):
    if two:
        g, p = np.where(g == 1, 2, g), np.where(p == 1, 2, p)
    fs = []
    for c in range(3):
        tp, n_p, n_g = ((g == c) & (p == c)).sum(), (p == c).sum(), (g == c).sum()
        if n_p == 0 and n_g == 0:
            continue
        pr, rc = (tp / n_p if n_p else 0.0), (tp / n_g if n_g else 0.0)
        fs.append(2 * pr * rc / (pr + rc) if pr + rc > 0 else 0.0)
    return float(np.mean(fs)) if fs else 0.0


def head_logit(head, reads):
    x = reads.get(head["pool"]) if reads else None
    if x is None or len(x) != len(head["weights"]):
        return float("nan")
    z = (np.asarray(x, dtype=float) - np.array(head["mean"])) / np.array(head["std"])
    return float(head["bias"] + np.array(head["weights"]) @ z)


def load_reads(spec):
    """`FILE=V.jsonl`: the hidden reads of each verdict of V, keyed by (FILE, id, nugget index)."""
    name, path = spec.split("=", 1)
    out = {}
    for line in open(path):
        rec = json.loads(line)
        for i, v in enumerate(rec.get("verdicts") or []):
            h = (v.get("raw") or {}).get("hidden")
            if h:
                out[(name, rec["id"], str(i))] = h
    return out


def predict(stack, row, two, reads=None):
    def value(n):
        if n == "hidden_logit":
            return head_logit(stack["head"], (reads or {}).get((row["file"], row["id"], row["nugget"])))
        return float(row[n])

    x = np.array([value(n) for n in stack["names"]])
    z = np.where(np.isfinite(x), (x - np.array(stack["mean"])) / np.array(stack["std"]), 0.0)
    w = np.array(stack["weights"])
    logits = w[:, 0] + w[:, 1:] @ z
    o = stack.get("ordinal")
    if o:
        # An ordinal stack decides by its cuts (as gavel does), whatever its distribution's peak.
        score = logits[0] - logits[-1]
        if two:
            cut = o["support_two"] if o.get("support_two") is not None else o["support"]
            return 0 if score >= cut else 2
        # The partial cut reads a score of its own when the stack has one.
        pw = o.get("partial_weights")
        partial = pw[0] + np.array(pw[1:]) @ z if pw else score
        return 0 if score >= o["support"] else (1 if partial >= o["partial"] else 2)
    else:
        e = np.exp(logits - logits.max())
        e /= e.sum()
        p = [0.0, 0.0, 0.0]
        for label, v in zip(stack["labels"], e):
            p[IDX[label]] = v
    if two:
        return 0 if p[0] >= p[1] + p[2] else 2
    return int(np.argmax(p))


def lexical(ov, support, partial):
    return np.where(ov >= support, 0, np.where(ov >= partial, 1, 2))


def fit_lexical(rows_by_file):
    """Thresholds with the best mean macro-F1 over the files, each on its own grading."""
    data = []
    for rows in rows_by_file:
        g = np.array([IDX[r["gold"]] for r in rows])
        data.append((g, np.array([float(r["overlap"]) for r in rows]), not (g == 1).any()))
    best = (-1.0, 0.75, 0.5)
    for s in range(1, 21):
        for p in range(0, s + 1):
            f = np.mean([macro_f1(g, lexical(ov, s * 0.05, p * 0.05), two) for g, ov, two in data])
            if f > best[0] + 1e-12:
                best = (f, s * 0.05, p * 0.05)
    return best[1], best[2]


def main():
    argv = sys.argv[1:]
    lex_from = None
    if "--lexical-from" in argv:
        i = argv.index("--lexical-from")
        lex_from = argv[i + 1].split(",")
        del argv[i : i + 2]
    reads = {}
    while "--verdicts" in argv:
        i = argv.index("--verdicts")
        reads.update(load_reads(argv[i + 1]))
        del argv[i : i + 2]
    args = [a for a in argv if not a.startswith("--")]
    two = "--two-grade" in argv
    if len(args) != 5:
        sys.exit(__doc__)
    csv_path, file_name, part, a_path, b_path = args
    every = list(csv.DictReader(open(csv_path)))
    rows = [r for r in every if r["file"] == file_name and r["part"] == part]
    if not rows:
        sys.exit(f"no rows for file {file_name!r} part {part!r} in {csv_path}")
    a, b = (json.load(open(p))["stack"] for p in (a_path, b_path))
    gold = np.array([IDX[r["gold"]] for r in rows])
    pa = np.array([predict(a, r, two, reads) for r in rows])
    pb = np.array([predict(b, r, two, reads) for r in rows])
    ov = np.array([float(r["overlap"]) for r in rows])
    cuts = (0.75, 0.5)
    if lex_from:
        fitting = [[r for r in every if r["file"] == n] for n in lex_from]
        if not all(fitting):
            sys.exit(f"--lexical-from: no rows for one of {lex_from}")
        cuts = fit_lexical(fitting)
    pl = lexical(ov, *cuts)
    key = "group" if "group" in rows[0] else "id"
    ids = sorted({r[key] for r in rows})
    by_id = {i: [] for i in ids}
    for j, r in enumerate(rows):
        by_id[r[key]].append(j)
    rng = np.random.default_rng(0)
    d_lex, d_b = [], []
    for _ in range(2000):
        ix = np.concatenate([by_id[ids[t]] for t in rng.choice(len(ids), len(ids))])
        fa = macro_f1(gold[ix], pa[ix], two)
        d_lex.append(fa - macro_f1(gold[ix], pl[ix], two))
        d_b.append(fa - macro_f1(gold[ix], pb[ix], two))

    def ci(d):
        return f"{np.mean(d):+.3f} [{np.quantile(d, 0.025):+.3f}, {np.quantile(d, 0.975):+.3f}]"

    print(f"{file_name} part {part}: {len(rows)} verdicts, {len(ids)} groups ({key})")
    lex = f"lexical (support >= {cuts[0]:.2f}, partial >= {cuts[1]:.2f}{', fitted on ' + '+'.join(lex_from) if lex_from else ', fixed'})"
    print(f"macro-F1  A {macro_f1(gold, pa, two):.3f}  B {macro_f1(gold, pb, two):.3f}  {lex} {macro_f1(gold, pl, two):.3f}")
    print(f"A - lexical {ci(d_lex)}   A - B {ci(d_b)}   (95% bootstrap over {key}s)")


if __name__ == "__main__":
    main()
