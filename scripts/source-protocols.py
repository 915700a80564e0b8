#!/usr/bin/env python3
"""The transfer stack and variants of it, each measured two ways on part a only.

- same source: 4 folds by query group (the CSV's `group`, hashed) within part a of every file;
  each fold's stack is fitted on the other folds of all the files and scores the held-out fold;
  macro-F1 per file over the pooled held-out predictions. This is what data like the dev files
  (another sample of the same sources) should see.
- new source: each file left out in turn, fitted on part a of the others, scored on its part a
  (as scripts/transfer-select.py does).

Variants: the shipped recipe (`gavel calibrate --stack transfer`: monotone support and
at-least-partial scores, cuts on a 0.05 grid of P placed for class-balanced macro-F1, a 2-grade
support cut of its own on 2-grade files); its cuts placed for each file's own macro-F1 (label
shares counted) instead; the judged text's length (log words, either direction) in the partial
score or in both; negation mismatch added; the 3-grade cuts placed on the 3-grade files alone;
the cuts placed for the worst fitting file; with the columns of scripts/idf-overlap.py in the
CSV, the soft overlaps weighted by word rarity in place of the plain ones. The lexical judge
(two overlap thresholds, fitted the same way) is the yardstick. Part b is never read.

  scripts/source-protocols.py F.csv FACTCHECK REALSUMM WICE   (names as in the CSV's file column)

F.csv is `gavel calibrate ... --features-out F.csv`. Needs numpy.
"""
import sys
import zlib

import numpy as np

from transfer_fit import SIGN, bootstrap_f1, f1, fit, load_part_a  # the transfer fit, a simplified copy of gavel's

# The length may speak either way (0: unconstrained).
SIGN = dict(SIGN, log_answer_words=0.0)
SHIPPED = ["overlap", "best_overlap", "soft_overlap", "best_soft_overlap", "numbers_missing", "pmi_low3", "window_pmi_mean"]


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    files = sys.argv[2:5]
    by, gold, two, cols = load_part_a(sys.argv[1], files)
    fold = {f: np.array([zlib.crc32(r["group"].encode()) % 4 for r in by[f]]) for f in files}

    def stack(names, partial_names, balanced, train, **variant):
        """Fit on `train` (file, mask) pairs; returns predict(file, mask) -> label indices."""
        every = list(dict.fromkeys(names + partial_names))
        predict = fit([cols(f, every)[m] for f, m in train], [gold[f][m] for f, m in train], [two[f] for f, _ in train],
                      names, partial_names, balanced, SIGN, **variant)
        return lambda f, m: predict(cols(f, every)[m], two[f])

    def lexical(train):
        support, partial = bootstrap_f1.fit_lexical([[r for r, keep in zip(by[f], m) if keep] for f, m in train])
        return lambda f, m: bootstrap_f1.lexical(cols(f, ["overlap"])[m][:, 0], support, partial)

    def measure(make):
        every = {f: np.ones(len(gold[f]), bool) for f in files}
        same = {}
        for t in files:
            pred = np.zeros(len(gold[t]), int)
            for k in range(4):
                p = make([(f, fold[f] != k) for f in files])
                m = fold[t] == k
                pred[m] = p(t, m)
            same[t] = f1(gold[t], pred, two[t], False)
        new = {t: f1(gold[t], make([(f, every[f]) for f in files if f != t])(t, every[t]), two[t], False) for t in files}
        return same, new

    length = SHIPPED + ["log_answer_words"]
    variants = [
        ("lexical judge", lexical),
        ("shipped (balanced cuts)", lambda tr: stack(SHIPPED, SHIPPED, True, tr)),
        ("cuts for own label shares", lambda tr: stack(SHIPPED, SHIPPED, False, tr)),
        ("length in partial score", lambda tr: stack(SHIPPED, length, True, tr)),
        ("length in partial, own shares", lambda tr: stack(SHIPPED, length, False, tr)),
        ("length in both scores", lambda tr: stack(length, length, True, tr)),
        ("+ negation mismatch", lambda tr: stack(SHIPPED + ["negation_mismatch"], SHIPPED + ["negation_mismatch"], True, tr)),
        ("3-grade cuts on 3-grade files", lambda tr: stack(SHIPPED, SHIPPED, True, tr, only_three=True)),
        ("cuts for the worst file", lambda tr: stack(SHIPPED, SHIPPED, True, tr, worst=True)),
    ]
    if "idf_soft" in by[files[0]][0]:  # columns added by scripts/idf-overlap.py
        rare_whole = [n if n != "soft_overlap" else "idf_soft" for n in SHIPPED]
        rare = [n if n != "best_soft_overlap" else "idf_soft_best" for n in rare_whole]
        variants += [
            ("rarity-weighted soft overlap", lambda tr: stack(rare_whole, rare_whole, True, tr)),
            ("rarity-weighted, both windows", lambda tr: stack(rare, rare, True, tr)),
        ]
    print(f"{'part a':32s} same source: {' '.join(files)}  mean   | new source (left out): same files  mean")
    for name, make in variants:
        same, new = measure(make)
        print(f"{name:32s} " + " ".join(f"{same[t]:.3f}" for t in files) + f"  {np.mean(list(same.values())):.3f}  | "
              + " ".join(f"{new[t]:.3f}" for t in files) + f"  {np.mean(list(new.values())):.3f}", flush=True)


if __name__ == "__main__":
    main()
