"""Scores the doctor's data_issues.csv against a corrupted copy's truth.json.

    python benchmarks/doctor_measure.py OUT/truth.json DOCTOR_OUT/data_issues.csv \
        [--clean CLEAN_DOCTOR_OUT/data_issues.csv]

Near-copies: a planted pair is found when both files are in the same group (recall);
precision counts the flagged groups that hold a planted copy, among the groups that the
doctor did not already find on the clean folder (`--clean`: flowers5's own duplicates,
judged separately by eye); a group that joins a copy to an image other than its original
(and that image's own clean group) counts as wrong. Flagged groups are also compared with
the planted pairs (issue 27: at most twice as many). Label issues: recall among the top 2 x flipped, and the
precision and recall of everything flagged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("truth", type=Path)
    parser.add_argument("issues", type=Path)
    parser.add_argument("--clean", type=Path)
    args = parser.parse_args()
    truth = json.loads(args.truth.read_text())
    issues = pd.read_csv(args.issues, keep_default_na=False)
    dup = issues[issues["issue"] == "near_duplicate"]
    group = dict(zip(dup["path"], dup["group"]))
    pairs = truth["pairs"]
    found = [p for p in pairs if p["original"] in group
             and group.get(p["original"]) == group.get(p["copy"])]
    by_kind = {}
    for p in pairs:
        by_kind.setdefault(p["kind"], [0, 0])[1] += 1
    for p in found:
        by_kind[p["kind"]][0] += 1
    copies = {p["copy"] for p in pairs}
    clean_names = set()
    if args.clean:
        clean = pd.read_csv(args.clean, keep_default_na=False)
        clean_names = {p.split("/", 1)[1] for p in clean.loc[
            clean["issue"] == "near_duplicate", "path"]}
    groups = dup.groupby("group")["path"].apply(list)
    new = [g for g in groups if not all(p.split("/", 1)[1] in clean_names for p in g)]
    original_of = {p["copy"]: p["original"] for p in pairs}
    clean_group = {}
    if args.clean:
        for path, g in zip(clean.loc[clean["issue"] == "near_duplicate", "path"],
                           clean.loc[clean["issue"] == "near_duplicate", "group"]):
            clean_group[path.split("/", 1)[1]] = g
    def right(g) -> bool:
        """Holds a copy, and nothing but copies, their originals and their clean kin."""
        held = [p for p in g if p in copies]
        if not held:
            return False
        kin = {original_of[c].split("/", 1)[1] for c in held}
        groups_of_kin = {clean_group[k] for k in kin if k in clean_group}
        return all(p in copies or p.split("/", 1)[1] in kin
                   or clean_group.get(p.split("/", 1)[1], None) in groups_of_kin for p in g)
    with_copy = [g for g in new if right(g)]
    print(f"near-copies: {len(found)}/{len(pairs)} found (recall {len(found)/len(pairs):.2f});"
          f" by kind {', '.join(f'{k} {a}/{n}' for k, (a, n) in by_kind.items())}")
    print(f"near-duplicate groups: {len(groups)} ({len(groups) / len(pairs):.2f} x the "
          f"{len(pairs)} planted pairs); not found on the clean folder: {len(new)}, of which "
          f"{len(with_copy)} hold a planted copy and only its kin (precision "
          f"{len(with_copy) / max(len(new), 1):.2f})")
    flipped = {f["path"] for f in truth["flipped"]}
    labels = issues[issues["issue"] == "label_issue"].sort_values("score", ascending=False)
    top = labels.head(2 * len(flipped))
    hits = set(top["path"]) & flipped
    true_class = {f["path"]: f["true"] for f in truth["flipped"]}
    right = sum(s == true_class[p] for p, s in zip(labels["path"], labels["suggested_class"])
                if p in flipped)
    flagged = set(labels["path"])
    print(f"label issues: {len(flagged)} flagged; {len(hits)}/{len(flipped)} flipped among the "
          f"top {2 * len(flipped)} (recall {len(hits) / len(flipped):.2f}); of all flagged: "
          f"precision {len(flagged & flipped) / max(len(flagged), 1):.2f}, recall "
          f"{len(flagged & flipped) / len(flipped):.2f}; suggested class right for "
          f"{right}/{len(flagged & flipped)} flagged flips")
    outliers = issues[issues["issue"] == "outlier"]
    print(f"outliers: {len(outliers)}")


if __name__ == "__main__":
    main()
