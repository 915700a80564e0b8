#!/usr/bin/env python3
"""AUC (support vs rest) of every feature, per labeled file, from the features CSV that
`gavel calibrate --features-out F.csv` writes. 0.5 is chance; below 0.5 the feature signals
support the other way round (e.g. names missing).

  scripts/signal-auc.py F.csv [--part a|b]   (only that half of each file)

Standard library only.
"""
import bisect
import csv
import math
import sys

META = ("file", "id", "part", "group", "nugget", "gold")


def auc(pos, neg):
    if not pos or not neg:
        return float("nan")
    negs = sorted(neg)
    s = 0.0
    for p in pos:
        lo, hi = bisect.bisect_left(negs, p), bisect.bisect_right(negs, p)
        s += lo + 0.5 * (hi - lo)
    return s / (len(pos) * len(neg))


def main():
    if len(sys.argv) not in (2, 4) or (len(sys.argv) == 4 and sys.argv[2] != "--part"):
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    if len(sys.argv) == 4:
        rows = [r for r in rows if r["part"] == sys.argv[3]]
    files = sorted({r["file"] for r in rows})
    names = [c for c in rows[0] if c not in META]
    print("feature".ljust(20) + "".join(f[:16].ljust(18) for f in files))
    for n in names:
        cells = []
        for f in files:
            xs = [(r["gold"] == "support", float(r[n])) for r in rows if r["file"] == f]
            xs = [(y, x) for y, x in xs if math.isfinite(x)]
            a = auc([x for y, x in xs if y], [x for y, x in xs if not y])
            cells.append("-" if math.isnan(a) else f"{a:.3f}")
        print(n.ljust(20) + "".join(c.ljust(18) for c in cells))


if __name__ == "__main__":
    main()
