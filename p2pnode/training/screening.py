"""The validation screen: drop updates that make the validation loss worse, then aggregate.

A server-side robust rule sees only the updates; a validator also holds a validation split. The
screen uses it the way Zeno (Xie, Koyejo and Gupta, ICML 2019) and FLTrust (Cao et al., NDSS
2021) use a small trusted set: an update is judged by what it does to the loss. Scoring an update
*alone* is useless on non-IID data (an honest client holding two classes raises the loss of a
balanced validation set when applied alone), so the screen scores each update by its *marginal*
effect on the mean of the others (leave one out):

    score_i = L(base + mean(kept minus i)) - L(base + mean(kept))

which is positive when the update helps. Loud inputs (farther from the coordinate-wise median
than 3x the median such distance) are left out first and do not count against ``max_drop``.
Then, greedily, up to ``max_drop`` times, the input whose
removal lowers the loss most is dropped if that lowers it by more than ``margin`` (nats); then
``inner`` (a robust rule) aggregates the kept inputs. An attacker that hides inside the honest
spread (ALIE, IPM, min-max, min-sum) still pulls the mean the wrong way, which the loss sees; an
honest client that carries classes the others lack helps the loss, so it is kept.

**Determinism.** The screen decides which inputs enter the aggregate, so every validator must
reach the same decisions. Inputs are canonicalised (sorted by id); means are row sums in
canonical order in float64; the validation loss comes from :func:`exact_loss`, whose matrix
products for the built-in models are plain multiply-adds in a fixed order (no BLAS, whose blocking
and threads vary), then a float64 softmax cross-entropy. Ties go to the earlier canonical
position. What can still differ between machines is the last bit of ``exp``/``log`` (numpy
picks SIMD kernels by CPU), and it changes a decision only if a loss difference lies within about
1e-15 of ``margin`` or of another candidate's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from p2pnode.training.aggregation import (
    AggregationResult,
    AggregationRule,
    ClientUpdate,
    _distance_outliers,
    _result,
    canonicalize,
    norm,
)
from p2pnode.training.data import Dataset
from p2pnode.training.models import MLP, Model, SoftmaxRegression
from p2pnode.training.state_dict import ParamSpec, StateDict, flatten, unflatten

__all__ = ["LossFn", "ScreenedRule", "exact_logits", "exact_loss", "validation_loss_fn"]

#: the validation loss of the base model plus a flat delta.
LossFn = Callable[[np.ndarray], float]


def _exact_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w`` in float64 as a sum over the inner index in order: each output element is the
    same sequence of IEEE multiply-adds on every machine (unlike BLAS)."""
    out = np.zeros((a.shape[0], w.shape[1]), dtype=np.float64)
    for j in range(a.shape[1]):
        out += a[:, j : j + 1] * w[j]
    return out


def exact_logits(model: Model, params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits in float64, computed without BLAS for the built-in models; any other model's own
    ``logits`` (then bit-reproducible only as far as that model is)."""
    x64 = np.asarray(x, dtype=np.float64)
    if isinstance(model, MLP):
        h = x64
        for i in range(model.num_layers):
            w = np.asarray(params[f"layers.{i}.weight"], dtype=np.float64)
            h = _exact_matmul(h, w) + np.asarray(params[f"layers.{i}.bias"], dtype=np.float64)
            if i < model.num_layers - 1:
                h = np.maximum(h, 0.0)
        return h
    if isinstance(model, SoftmaxRegression):
        w = np.asarray(params["weight"], dtype=np.float64)
        return _exact_matmul(x64, w) + np.asarray(params["bias"], dtype=np.float64)
    return np.asarray(model.logits(dict(params), x), dtype=np.float64)


def exact_loss(model: Model, params: Mapping[str, np.ndarray], data: Dataset) -> float:
    """Mean softmax cross-entropy of ``data`` in float64 (see :func:`exact_logits`); the mean
    is numpy's pairwise sum over samples in the data's order."""
    z = exact_logits(model, params, data.x)
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z), axis=1))
    per = lse - z[np.arange(len(data)), data.y]
    return float(np.sum(per) / len(data))


def validation_loss_fn(model: Model, params: StateDict, data: Dataset) -> LossFn:
    """``delta -> exact_loss(params + delta)``: the loss a screen asks about (the delta applied
    as plain FedAvg does, whatever the outer optimizer: the screen judges direction)."""
    spec = ParamSpec.of(params)
    base = flatten(params)

    def loss(delta: np.ndarray) -> float:
        moved = (base.astype(np.float64) + delta.astype(np.float64)).astype(base.dtype)
        return exact_loss(model, unflatten(moved, spec), data)

    return loss


@dataclass(frozen=True, slots=True)
class ScreenedRule:
    """The validation screen (module docstring) in front of ``inner``.

    ``loss`` is bound per round (the base model and the validator's split); the rule itself
    holds only the knobs. ``scores`` of the result are the first pass's leave-one-out scores
    (nats; higher is better, negative means the update made the loss worse); dropped inputs
    are not contributors (see :meth:`aggregate_with` for outliers).
    """

    inner: AggregationRule
    max_drop: int = 2
    margin: float = 0.0
    #: re-score the kept inputs after each drop (greedy); False drops the up to ``max_drop``
    #: lowest first-pass scores below ``-margin`` at once.
    rescore: bool = True
    #: search every set of up to ``max_drop`` inputs (when there are at most ``subset_cap``
    #: such sets) for the one whose removal lowers the loss most: attackers who send the same
    #: vector mask each other's leave-one-out score, a set of them is seen together.
    subset: bool = False
    subset_cap: int = 256
    outlier_factor: float = 3.0
    #: the inner rule is re-made for the inputs it gets: f minus the inputs dropped.
    remake: Callable[[int], AggregationRule] | None = None

    @property
    def name(self) -> str:
        return f"screen+{self.inner.name}"

    def max_byzantine(self, n: int) -> int:
        return self.inner.max_byzantine(n)

    def aggregate(self, updates: Sequence[ClientUpdate]) -> AggregationResult:
        raise TypeError("ScreenedRule needs the validation loss: call aggregate_with(loss)")

    def screen(
        self, updates: Sequence[ClientUpdate], loss: LossFn
    ) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, float]]:
        """(kept ids, left-out ids (loud and dropped), leave-one-out scores), canonical order.

        Every left-out input lowers the f the inner rule is re-made for (it is one attacker
        fewer among the kept, if it was one), but only the loss-screened drops count against
        ``max_drop``."""
        c = canonicalize(updates)
        rows = [row.astype(np.float64) for row in c.stack]
        loud = self._loud(c.stack)
        kept = [i for i in range(len(c.ids)) if i not in loud]
        scores: dict[str, float] = {}
        dropped: list[int] = []
        total = np.zeros(c.stack.shape[1], dtype=np.float64)
        for i in kept:  # canonical order
            total += rows[i]
        n, top = len(rows), min(self.max_drop, len(kept) - 1)
        search = (
            self.subset
            and top > 0
            and sum(comb(len(kept), k) for k in range(1, top + 1)) <= self.subset_cap
        )
        for step in range(min(self.max_drop, len(kept) - 1) if self.max_drop else 0):
            k = len(kept)
            full = loss(total / k)
            loo = []
            for i in kept:
                # Re-summed in canonical order (not total - row) so every path gives the same bits.
                s = np.zeros_like(total)
                for j in kept:
                    if j != i:
                        s += rows[j]
                loo.append(loss(s / (k - 1)))
            if step == 0:
                scores = {c.ids[i]: float(v - full) for i, v in zip(kept, loo, strict=True)}
            if search:
                break  # the drops come from _best_subset below
            if not self.rescore:
                # Stable: equal scores go to the earlier canonical position.
                order = np.argsort(np.asarray(loo), kind="stable")[: self.max_drop]
                gone_at = sorted(
                    (int(p) for p in order if full - loo[p] > self.margin), reverse=True
                )
                for p in gone_at:
                    dropped.append(kept.pop(p))
                break
            best = int(np.argmin(np.asarray(loo)))  # first minimum: earliest canonical position
            if not full - loo[best] > self.margin:
                break
            gone = kept.pop(best)
            dropped.append(gone)
            total = np.zeros_like(total)
            for j in kept:
                total += rows[j]
        if search:
            quiet = [i for i in range(n) if i not in loud]
            best = self._best_subset([rows[i] for i in quiet], loss)
            if best is not None:
                gone = {quiet[p] for p in best}
                kept = [i for i in quiet if i not in gone]
                dropped = sorted(gone)
        # A loud input scores as its own leave-one-out effect would have had it been kept.
        scores = {cid: scores.get(cid, 0.0) for cid in c.ids}
        for i in loud:
            scores[c.ids[i]] = self._loud_score(rows, kept, i, loss)
        return (
            tuple(c.ids[i] for i in kept),
            tuple(sorted(c.ids[i] for i in [*dropped, *loud])),
            scores,
        )

    def _loud(self, stack: np.ndarray) -> set[int]:
        """Inputs farther from the coordinate-wise median than ``outlier_factor`` times the
        median such distance: left out before the loss is asked, and not counted against
        ``max_drop`` (so attackers past ``f`` that are loud, not hidden, cannot use up the
        screen's drops and get the rule re-made for fewer than are there)."""
        if stack.shape[0] < 3:
            return set()
        med = np.median(stack.astype(np.float64), axis=0)
        dists = np.array([norm(row.astype(np.float64) - med) for row in stack])
        ref = float(np.median(dists))
        return {i for i, d in enumerate(dists) if d > self.outlier_factor * ref and d > 0}

    @staticmethod
    def _loud_score(rows: list[np.ndarray], kept: list[int], i: int, loss: LossFn) -> float:
        """``L(mean(kept)) - L(mean(kept + i))``: what adding the loud input would have done."""
        if not kept:
            return 0.0
        s = np.zeros_like(rows[0])
        for j in sorted([*kept, i]):
            s += rows[j]
        with_i = loss(s / (len(kept) + 1))
        s = np.zeros_like(rows[0])
        for j in kept:
            s += rows[j]
        return float(loss(s / len(kept)) - with_i)

    def _best_subset(self, rows: list[np.ndarray], loss: LossFn) -> tuple[int, ...] | None:
        """The set of up to ``max_drop`` inputs whose removal gives the lowest loss, if that
        beats keeping all by more than ``margin`` (else None); sets in (size, canonical) order,
        so the first minimum is the smallest and earliest."""
        n = len(rows)
        top = min(self.max_drop, n - 1)

        def mean_without(gone: tuple[int, ...]) -> np.ndarray:
            s = np.zeros(rows[0].shape[0], dtype=np.float64)
            for j in range(n):
                if j not in gone:
                    s += rows[j]
            return s / (n - len(gone))

        best_loss = loss(mean_without(())) - self.margin
        best: tuple[int, ...] | None = None
        for k in range(1, top + 1):
            for gone in combinations(range(n), k):
                v = loss(mean_without(gone))
                if v < best_loss:
                    best_loss, best = v, gone
        return best

    def aggregate_with(self, updates: Sequence[ClientUpdate], loss: LossFn) -> AggregationResult:
        """Screen, then aggregate the kept inputs with the inner rule.

        Dropped inputs are left out of ``contributors`` but are *not* outliers for that alone:
        on a clean swarm the screen also drops one or two honest updates a round (those that
        raise the validation loss of the mean), and outliers are what the trust ledger slashes
        for when they repeat. Outliers are the inner rule's plus every input, kept or dropped,
        farther from the aggregate than ``outlier_factor`` times the median distance (the
        library's distance test), so a loud attacker is still evidence; a quiet one that the
        screen drops loses its reward and its contribution score says why."""
        c = canonicalize(updates)
        kept, dropped, scores = self.screen(updates, loss)
        keep = set(kept)
        inner_rule = self.remake(len(dropped)) if self.remake is not None else self.inner
        inner = inner_rule.aggregate([u for u in updates if u.client_id in keep])
        far, _ = _distance_outliers(c, inner.aggregate, self.outlier_factor)
        outliers = set(far) | set(inner.outliers)
        return _result(c, inner.aggregate, sorted(outliers), inner.contributors, scores)
