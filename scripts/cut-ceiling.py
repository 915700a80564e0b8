#!/usr/bin/env python3
"""Where a fit on other sources loses: each long-form file left out in turn (part a), macro-F1
with the cuts the two-source fit places, and with the best cuts placed on the left-out file
itself (a ceiling that no cut placement can pass, for those scores), for the shipped recipe's
scores and for the lexical judge's overlap. Part b is never read.

  scripts/cut-ceiling.py F.csv FACTCHECK REALSUMM WICE   (names as in the CSV's file column)

F.csv is `gavel calibrate ... --features-out F.csv`. Needs numpy.
"""
import sys

import numpy as np

from transfer_fit import SIGN, bootstrap_f1, f1, fit, load_part_a

SHIPPED = ["overlap", "best_overlap", "soft_overlap", "best_soft_overlap", "numbers_missing", "pmi_low3", "window_pmi_mean"]
GRID = np.arange(0, 101) * 0.01  # finer than the fit's 0.05 grid: a ceiling


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    files = sys.argv[2:5]
    by, gold, two, cols = load_part_a(sys.argv[1], files)

    def ceiling(t, a, q):
        if two[t]:
            return max(f1(gold[t], np.where(a >= s, 0, 2), True, False) for s in GRID)
        return max(f1(gold[t], np.where(a >= s, 0, np.where(q >= p, 1, 2)), False, False) for s in GRID for p in GRID)

    print(f"{'left out (part a)':20s} stack: fitted cuts  own-file cuts | lexical: fitted cuts  own-file cuts")
    for t in files:
        train = [f for f in files if f != t]
        predict = fit([cols(f, SHIPPED) for f in train], [gold[f] for f in train], [two[f] for f in train],
                      SHIPPED, SHIPPED, True, SIGN)
        x = cols(t, SHIPPED)
        support, partial = bootstrap_f1.fit_lexical([by[f] for f in train])
        ov = cols(t, ["overlap"])[:, 0]
        lexical = f1(gold[t], bootstrap_f1.lexical(ov, support, partial), two[t], False)
        print(f"{t:20s} {f1(gold[t], predict(x, two[t]), two[t], False):.3f}  {ceiling(t, *predict.scores(x)):.3f}"
              f"  | {lexical:.3f}  {ceiling(t, ov, ov):.3f}", flush=True)


if __name__ == "__main__":
    main()
