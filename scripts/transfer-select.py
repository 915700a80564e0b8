#!/usr/bin/env python3
"""Choose the transfer stack's features by leaving each long-form source out, on part a only.

Reads the features CSV of `gavel calibrate --features-out F.csv` (one row per labeled verdict).
For each candidate feature set (overlap, best-sentence overlap and the nugget's PMI at its three
least expected tokens and after its best window, plus up to three of the extras below, the soft
overlaps counting as one) and head
(one support score with two cuts, or a second at-least-partial score for the partial cut), it
fits on part a of two long-form files and scores part a of the third; the lexical judge gets
the same treatment (two overlap thresholds, grid of 0.05, fitted on the two files). Fits are
monotone logistic regressions (each file weighing the same) and cuts on P(support) (grid of
0.05) placed for class-balanced macro-F1 (scripts/transfer_fit.py, a simplified copy of
`gavel calibrate --stack transfer`; its 2-grade support cut never acts here: the 2-grade file is
scored only when it is left out of the fit). Candidates
are ranked by their worst margin over the lexical judge across the three left-out files, then
by their mean. Part b is never read.

  scripts/transfer-select.py F.csv [FACTCHECK REALSUMM WICE]   (names as in the CSV's file column)

Needs numpy.
"""
import csv
import itertools
import multiprocessing
import os
import sys

import numpy as np

from transfer_fit import IDX, bootstrap_f1, f1, fit  # the transfer fit, a simplified copy of gavel's

BASE = ["overlap", "best_overlap", "pmi_low3", "window_pmi_mean"]
# Each extra is one or more features added together.
EXTRAS = [
    ["soft_overlap", "best_soft_overlap"],
    ["pmi_mean"],
    ["yes_minus_no"],
    ["nugget_lp_mean"],
    ["best_bigram"],
    ["numbers_missing"],
    ["log_answer_words"],
    ["names_missing"],
    ["number_conflict"],
    ["negation_mismatch"],
]
_CANDIDATE = None


def _run_candidate(job):
    return _CANDIDATE(job)


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    files = args[1:4] if len(args) >= 4 else ["factcheck.jsonl", "realsumm4.jsonl", "wice.jsonl"]
    # Part a only, for fitting as for scoring: part b is what the tables report.
    rows = [r for r in csv.DictReader(open(args[0])) if r["part"] == "a"]
    by = {f: [r for r in rows if r["file"] == f] for f in files}
    if not all(by.values()):
        sys.exit(f"no rows for one of {files}")
    gold = {f: np.array([IDX[r["gold"]] for r in by[f]]) for f in files}
    two = {f: not (gold[f] == 1).any() for f in files}
    part_a = {f: np.array([r["part"] == "a" for r in by[f]]) for f in files}

    def cols(f, names):
        x = np.array([[float(r[n]) for n in names] for r in by[f]])
        x[~np.isfinite(x)] = np.nan
        return x

    def lexical(train, test):
        support, partial = bootstrap_f1.fit_lexical([by[f] for f in train])
        pred = bootstrap_f1.lexical(cols(test, ["overlap"])[:, 0], support, partial)
        return f1(gold[test][part_a[test]], pred[part_a[test]], two[test], False)

    def transfer(names, two_scores, train, test):
        predict = fit([cols(f, names) for f in train], [gold[f] for f in train], [two[f] for f in train], names,
                      names if two_scores else None)
        pred = predict(cols(test, names), two[test])
        return f1(gold[test][part_a[test]], pred[part_a[test]], two[test], False)

    lex = {t: lexical([f for f in files if f != t], t) for t in files}
    print("lexical judge fitted on the two other files, part a: " + "  ".join(f"{t} {v:.3f}" for t, v in lex.items()))
    def candidate(job):
        names, two_scores = job
        got = {t: transfer(names, two_scores, [f for f in files if f != t], t) for t in files}
        worst = min(got[t] - lex[t] for t in files)
        return (round(worst, 3), float(np.mean(list(got.values()))), names, two_scores, got)

    jobs = [
        (BASE + [n for e in extra for n in e], two_scores)
        for k in range(4)
        for extra in itertools.combinations(EXTRAS, k)
        for two_scores in (False, True)
    ]
    # One process per core; forked children inherit the data and the closures above.
    global _CANDIDATE
    _CANDIDATE = candidate
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        results = pool.map(_run_candidate, jobs)
    results.sort(key=lambda r: (-r[0], -r[1]))
    print("worst margin  mean   head        features beyond " + "+".join(BASE) + "   left-out part a")
    for worst, mean, names, two_scores, got in results[: int(os.environ.get("TOP", "12"))]:
        extra = "+".join(names[len(BASE):]) or "-"
        head = "two scores" if two_scores else "one score "
        print(f"  {worst:+.3f}     {mean:.3f}  {head}  {extra:32s} " + "  ".join(f"{v:.3f}" for v in got.values()))


if __name__ == "__main__":
    main()
