#!/usr/bin/env python3
"""Add word-rarity-weighted soft overlaps to a features CSV (a measurement, not a gavel feature).

`soft_overlap` counts every content word of the nugget the same; here each word weighs its
rarity in English, max(0.5, 7 - Zipf frequency) from the `wordfreq` package (so "penicillin",
Zipf 3.0, weighs 4.0 and "discovered", 4.7, weighs 2.3), as BM25's IDF does for a corpus:

- `idf_soft`: weighted share of the nugget's content words whose five-letter key is in the text;
- `idf_soft_best`: the same against the best one- or two-sentence window (sentences split at
  . ! ? followed by a space, a simpler split than gavel's).

Words are normalised as gavel's `lexical.rs` does (lower case, accents folded, punctuation and
a/an/the dropped, its stop words removed). Rows of files not given get 0.

  scripts/idf-overlap.py F.csv OUT.csv RECORDS.jsonl...   (matched to F.csv's `file` by base name)

Needs `pip install wordfreq`.
"""
import csv
import json
import os
import re
import sys
import unicodedata

from wordfreq import zipf_frequency

STOP = set("of in on at to for by with and or is are was were be been it its as that this from has have had he she his "
           "her they their which who not but".split())


def words(s):
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).lower()
    s = "".join(c if c.isalnum() or c.isspace() else " " for c in s)
    return [w for w in s.split() if w not in ("a", "an", "the")]


def weighted(content, weights, keys):
    return sum(wt for w, wt in zip(content, weights) if w[:5] in keys) / sum(weights)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    records = {}
    for path in sys.argv[3:]:
        for line in open(path):
            r = json.loads(line)
            records[(os.path.basename(path), r["id"])] = r
    rarity = {}
    texts = {}
    src = csv.DictReader(open(sys.argv[1]))
    out = csv.writer(open(sys.argv[2], "w"))
    out.writerow(src.fieldnames + ["idf_soft", "idf_soft_best"])
    for row in src:
        r = records.get((row["file"], row["id"]))
        content = [w for w in words(r["nuggets"][int(row["nugget"])]["text"]) if w not in STOP] if r else []
        if not content:
            out.writerow([row[c] for c in src.fieldnames] + [0, 0])
            continue
        key = (row["file"], r["id"])
        if key not in texts:
            sents = [{w[:5] for w in words(s)} for s in re.split(r"(?<=[.!?])\s+", r["answer"])]
            texts[key] = ({w[:5] for w in words(r["answer"])}, sents)
        keys, sents = texts[key]
        weights = [rarity.setdefault(w, max(0.5, 7.0 - zipf_frequency(w, "en"))) for w in content]
        windows = [set().union(*sents[i:i + n]) for n in (1, 2) for i in range(len(sents) - n + 1)]
        best = max((weighted(content, weights, k) for k in windows), default=0.0)
        out.writerow([row[c] for c in src.fieldnames] + [weighted(content, weights, keys), best])


if __name__ == "__main__":
    main()
