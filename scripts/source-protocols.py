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
score or in both; negation mismatch added. The lexical judge (two overlap thresholds, fitted the
same way) is the yardstick. Part b is never read.

  scripts/source-protocols.py F.csv FACTCHECK REALSUMM WICE   (names as in the CSV's file column)

F.csv is `gavel calibrate ... --features-out F.csv`. Needs numpy.
"""
import csv
import importlib.util
import os
import sys
import zlib

import numpy as np

_spec = importlib.util.spec_from_file_location("transfer_select", os.path.join(os.path.dirname(__file__), "transfer-select.py"))
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)
f1, logistic, IDX, GRID, bootstrap_f1 = ts.f1, ts.logistic, ts.IDX, ts.GRID, ts.bootstrap_f1
# The length may speak either way (0: unconstrained).
SIGN = dict(ts.SIGN, log_answer_words=0.0)
SHIPPED = ["overlap", "best_overlap", "soft_overlap", "best_soft_overlap", "numbers_missing", "pmi_low3", "window_pmi_mean"]


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["part"] == "a"]
    files = sys.argv[2:5]
    by = {f: [r for r in rows if r["file"] == f] for f in files}
    if not all(by.values()):
        sys.exit(f"no part-a rows for one of {files}")
    gold = {f: np.array([IDX[r["gold"]] for r in by[f]]) for f in files}
    fold = {f: np.array([zlib.crc32(r["group"].encode()) % 4 for r in by[f]]) for f in files}
    two = {f: not (gold[f] == 1).any() for f in files}
    sig = lambda v: 1 / (1 + np.exp(-v))

    def cols(f, names):
        x = np.array([[float(r[n]) for n in names] for r in by[f]])
        x[~np.isfinite(x)] = np.nan
        return x

    def stack(names, partial_names, balanced, train):
        """Fit on `train` (file, mask) pairs; returns predict(file, mask) -> label indices."""
        every = list(dict.fromkeys(names + partial_names))
        xs = [cols(f, every)[m] for f, m in train]
        gs = [gold[f][m] for f, m in train]
        mu, sd = np.nanmean(np.vstack(xs), 0), np.nanstd(np.vstack(xs), 0) + 1e-9
        z = [np.nan_to_num((x - mu) / sd) for x in xs]
        si, pi = [every.index(n) for n in names], [every.index(n) for n in partial_names]
        w = np.concatenate([np.full(len(x), 1.0 / len(x)) for x in xs])
        b, c = logistic(np.vstack(z)[:, si], np.concatenate([(g == 0).astype(float) for g in gs]), w / w.mean(),
                        np.array([SIGN.get(n, 1.0) for n in names]))
        three = [i for i, (f, _) in enumerate(train) if not two[f]]
        w3 = np.concatenate([np.full(len(z[i]), 1.0 / len(z[i])) for i in three])
        b2, c2 = logistic(np.vstack([z[i] for i in three])[:, pi],
                          np.concatenate([(gs[i] <= 1).astype(float) for i in three]), w3 / w3.mean(),
                          np.array([SIGN.get(n, 1.0) for n in partial_names]))
        s1, s2 = [sig(zi[:, si] @ b + c) for zi in z], [sig(zi[:, pi] @ b2 + c2) for zi in z]
        best = (-1.0, 0.0, 0.0)
        for s in GRID[1:]:
            for p in GRID:
                v = np.mean([f1(g, np.where(a >= s, 0, np.where(q >= p, 1, 2)), two[f], balanced)
                             for (f, _), g, a, q in zip(train, gs, s1, s2)])
                if v > best[0] + 1e-12:
                    best = (v, s, p)
        support_two = best[1]
        twos = [i for i, (f, _) in enumerate(train) if two[f]]
        if twos and three:
            top = (-1.0, support_two)
            for s in GRID[1:]:
                v = np.mean([f1(gs[i], np.where(s1[i] >= s, 0, 2), True, balanced) for i in twos])
                if v > top[0] + 1e-12:
                    top = (v, s)
            support_two = top[1]

        def predict(f, m):
            zt = np.nan_to_num((cols(f, every)[m] - mu) / sd)
            a, q = sig(zt[:, si] @ b + c), sig(zt[:, pi] @ b2 + c2)
            if two[f]:
                return np.where(a >= support_two, 0, 2)
            return np.where(a >= best[1], 0, np.where(q >= best[2], 1, 2))

        return predict

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
    ]
    print(f"{'part a':32s} same source: {' '.join(files)}  mean   | new source (left out): same files  mean")
    for name, make in variants:
        same, new = measure(make)
        print(f"{name:32s} " + " ".join(f"{same[t]:.3f}" for t in files) + f"  {np.mean(list(same.values())):.3f}  | "
              + " ".join(f"{new[t]:.3f}" for t in files) + f"  {np.mean(list(new.values())):.3f}", flush=True)


if __name__ == "__main__":
    main()
