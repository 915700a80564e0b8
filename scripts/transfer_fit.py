"""A simplified copy of the transfer stack's fit (`gavel calibrate --stack transfer`), for the
scripts that measure it (transfer-select.py, source-protocols.py): monotone logistic scores
(each fitting file weighing the same), a support score and an at-least-partial score, cuts on a
0.05 grid placed for class-balanced (or plain) macro-F1 averaged over the fitting files, and a
support cut of its own for 2-grade files when 3-grade files are fitted too. Simpler than gavel's:
the L2 penalty is fixed at 0.001 (gavel chooses among three) and the cut grid is plain. Needs
numpy.
"""
import csv
import importlib.util
import os
import sys

import numpy as np

# The lexical judge, its threshold fit and the label indices are bootstrap-f1.py's (a hyphenated
# file name, so loaded by path); the scripts that use this fit get it from here.
_spec = importlib.util.spec_from_file_location("bootstrap_f1", os.path.join(os.path.dirname(__file__), "bootstrap-f1.py"))
bootstrap_f1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bootstrap_f1)
IDX = bootstrap_f1.IDX
# Features that speak against support; the rest speak for it (0: either way).
SIGN = {
    "numbers_missing": -1.0,
    "log_answer_words": -1.0,
    "names_missing": -1.0,
    "number_conflict": -1.0,
    "negation_mismatch": -1.0,
    "missing_words": -1.0,
}
GRID = np.arange(0, 21) * 0.05


def f1(g, p, two, balanced):
    """Macro-F1 of labels `p` against gold `g` (indices of IDX); 2-grade folds partial into not;
    `balanced` weighs each gold class the same."""
    if two:
        g, p = np.where(g == 1, 2, g), np.where(p == 1, 2, p)
    w = np.ones(len(g))
    if balanced:
        for c in range(3):
            if (g == c).any():
                w[g == c] = 1.0 / (g == c).sum()
    fs = []
    for c in range(3):
        if not (g == c).any() and not (p == c).any():
            continue
        tp, fp, fn = w[(g == c) & (p == c)].sum(), w[(g != c) & (p == c)].sum(), w[(g == c) & (p != c)].sum()
        fs.append(2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0)
    return float(np.mean(fs)) if fs else 0.0


def logistic(x, y, w, signs, l2=1e-3, steps=1500, lr=0.5):
    """Weighted L2 logistic regression by gradient steps; a weight whose sign disagrees with
    `signs` (where nonzero) is held at 0."""
    b, c = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ b + c)))
        g = (p - y) * w
        b -= lr * (x.T @ g / w.sum() + l2 * b)
        c -= lr * g.sum() / w.sum()
        b = np.where(signs * b < 0, 0.0, b)
    return b, c


def sig(v):
    return 1 / (1 + np.exp(-v))


def fit(xs, golds, twos, names, partial_names=None, balanced=True, signs=None, only_three=False, worst=False):
    """Fit on the files given as feature matrices `xs` (columns `names`, then any of
    `partial_names` not in `names`), gold indices `golds` and 2-grade flags `twos`. Without
    `partial_names` the partial cut is a second cut on the support score. Returns
    predict(x, two) -> label indices for a matrix with the same columns; predict.scores(x) gives
    the two scores the cuts are placed on. Variants: `only_three` places the 3-grade cuts on the
    3-grade files alone when the 2-grade files get a support cut of their own; `worst` places the
    cuts for the worst fitting file instead of the mean."""
    signs = signs or SIGN
    every = list(dict.fromkeys(names + (partial_names or [])))
    mu, sd = np.nanmean(np.vstack(xs), 0), np.nanstd(np.vstack(xs), 0) + 1e-9
    z = [np.nan_to_num((x - mu) / sd) for x in xs]
    si = [every.index(n) for n in names]
    w = np.concatenate([np.full(len(x), 1.0 / len(x)) for x in xs])
    b, c = logistic(np.vstack(z)[:, si], np.concatenate([(g == 0).astype(float) for g in golds]), w / w.mean(),
                    np.array([signs.get(n, 1.0) for n in names]))
    pi, b2, c2 = si, b, c
    three = [i for i, t in enumerate(twos) if not t]
    if partial_names and three:
        pi = [every.index(n) for n in partial_names]
        w3 = np.concatenate([np.full(len(z[i]), 1.0 / len(z[i])) for i in three])
        b2, c2 = logistic(np.vstack([z[i] for i in three])[:, pi],
                          np.concatenate([(golds[i] <= 1).astype(float) for i in three]), w3 / w3.mean(),
                          np.array([signs.get(n, 1.0) for n in partial_names]))
    s1, s2 = [sig(zi[:, si] @ b + c) for zi in z], [sig(zi[:, pi] @ b2 + c2) for zi in z]
    best = (-1.0, 0.0, 0.0)
    for s in GRID[1:]:
        for p in GRID if partial_names else GRID[GRID <= s]:
            v = (np.min if worst else np.mean)([f1(g, np.where(a >= s, 0, np.where(q >= p, 1, 2)), t, balanced)
                                                for g, t, a, q in zip(golds, twos, s1, s2)
                                                if not (only_three and t and three)])
            if v > best[0] + 1e-12:
                best = (v, s, p)
    support_two = best[1]
    twos_at = [i for i, t in enumerate(twos) if t]
    if twos_at and three:
        top = (-1.0, support_two)
        for s in GRID[1:]:
            v = np.mean([f1(golds[i], np.where(s1[i] >= s, 0, 2), True, balanced) for i in twos_at])
            if v > top[0] + 1e-12:
                top = (v, s)
        support_two = top[1]

    def scores(x):
        zt = np.nan_to_num((x - mu) / sd)
        return sig(zt[:, si] @ b + c), sig(zt[:, pi] @ b2 + c2)

    def predict(x, two):
        a, q = scores(x)
        if two:
            return np.where(a >= support_two, 0, 2)
        return np.where(a >= best[1], 0, np.where(q >= best[2], 1, 2))

    predict.scores = scores  # (support score, at-least-partial score) of a matrix, before the cuts
    return predict


def load_part_a(path, files):
    """Part a of each of `files` (names as in the CSV's file column) from a features CSV
    (`gavel calibrate --features-out`): (rows by file, gold indices by file, 2-grade flag by
    file, cols(file, names) -> feature matrix with NaN for what is not finite)."""
    rows = [r for r in csv.DictReader(open(path)) if r["part"] == "a"]
    by = {f: [r for r in rows if r["file"] == f] for f in files}
    if not all(by.values()):
        sys.exit(f"no part-a rows for one of {files}")
    gold = {f: np.array([IDX[r["gold"]] for r in by[f]]) for f in files}
    two = {f: not (gold[f] == 1).any() for f in files}

    def cols(f, names):
        x = np.array([[float(r[n]) for n in names] for r in by[f]])
        x[~np.isfinite(x)] = np.nan
        return x

    return by, gold, two, cols
