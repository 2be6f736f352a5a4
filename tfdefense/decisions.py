"""The one decision vocabulary of every defense, detector, serving signature and metric.

A defense answers each input with a label and a decision:

* ``ACCEPTED`` (0): classified as it came (FM-Defense §III-A (3) calls it *clean*);
* ``PURIFIED`` (1): classified after purification (FM-Defense: *salvageable*);
* ``REJECTED`` (2): refused; its label is :data:`REJECTED_LABEL` (−1).

``Decision.CLEAN`` and ``Decision.SALVAGEABLE`` are the FM-Defense paper's names for the
same codes (aliases, not other values), so code written in the paper's words and the
serving signature's ``decision`` output (``DECISIONS[code]``) agree.

This module depends on nothing but the standard library, so every layer may import it.

Example:
    >>> from tfdefense.decisions import DECISIONS, Decision
    >>> Decision.SALVAGEABLE is Decision.PURIFIED, DECISIONS[Decision.REJECTED]
    (True, 'rejected')
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["DECISIONS", "REJECTED_LABEL", "Decision"]

#: the label of an input the defense refuses to classify
REJECTED_LABEL = -1


class Decision(IntEnum):
    """What a defense did with an input (the ``decision`` output of a ``defend`` signature)."""

    ACCEPTED = 0
    PURIFIED = 1
    REJECTED = 2
    # FM-Defense §III-A (3)'s names for the same outcomes
    CLEAN = 0
    SALVAGEABLE = 1


#: ``decision`` code -> word, as the serving signatures spell it
DECISIONS = ("accepted", "purified", "rejected")
