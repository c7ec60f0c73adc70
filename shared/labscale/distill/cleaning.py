"""Confident Learning (cleanlab) on teacher labels: which items are likely mislabelled, from out-of-fold
probabilities of a logistic regression on frozen student embeddings; then drop or relabel them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cleaning:
    """What Confident Learning did to the labels: the kept items' mask and their (maybe new) labels."""

    mode: str
    flagged: np.ndarray
    """Bool per item: a likely label issue."""
    keep: np.ndarray
    labels: np.ndarray
    relabelled: int = 0
    """Flagged items whose label was changed (mode relabel)."""
    skipped: str | None = None
    """Why nothing was checked (too few items of a class for cross-validation), else None."""

    def counts(self) -> dict[str, object]:
        """The numbers the run reports."""
        return {"cleanlab": self.mode, "cleanlab_flagged": int(self.flagged.sum()),
                "cleanlab_dropped": int((~self.keep).sum()), "cleanlab_relabelled": self.relabelled,
                "cleanlab_skipped": self.skipped}


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """P(class | item) for each item from a model that never saw it (stratified k-fold logistic regression).
    `labels` must be 0..K-1 with every class present at least `folds` times."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(max_iter=2000), features, labels, cv=splitter, method="predict_proba")


def clean_labels(features: np.ndarray, labels: np.ndarray, mode: str, folds: int, seed: int) -> Cleaning:
    """Flag likely label issues with cleanlab's `find_label_issues` and drop or relabel them (mode
    "off": keep every label as it is). Classes too small for `folds`-fold cross-validation lower the
    fold count; below 2 items per class, nothing is checked (`skipped` says why)."""
    n = len(labels)
    untouched = Cleaning(mode, np.zeros(n, bool), np.ones(n, bool), labels.copy())
    if mode == "off":
        return untouched
    classes, compact = np.unique(labels, return_inverse=True)
    smallest = int(np.bincount(compact).min())
    if len(classes) < 2 or smallest < 2:
        reason = "the teacher used one label only" if len(classes) < 2 else "a label has fewer than 2 items"
        return Cleaning(mode, untouched.flagged, untouched.keep, untouched.labels, skipped=reason)
    from cleanlab.filter import find_label_issues

    probs = out_of_fold_probabilities(features, compact, min(folds, smallest), seed)
    flagged = np.asarray(find_label_issues(labels=compact, pred_probs=probs), dtype=bool)
    if mode == "drop":
        return Cleaning(mode, flagged, ~flagged, labels.copy())
    relabelled = np.where(flagged, classes[probs.argmax(axis=1)], labels)
    return Cleaning(mode, flagged, np.ones(n, bool), relabelled, int((relabelled != labels).sum()))
