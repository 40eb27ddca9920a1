"""Count-based baselines the caption LM must beat, on exactly its tokens.

Inputs are lists of token-id sequences as the Trainer sees them (vocabulary
ids from the transform graph, truncated, no padding). Every predicted event
is one real token or the end marker, so perplexities are comparable with the
model's: PPL = exp(total NLL / number of predicted tokens).

The predictable classes are every id but PAD: the end marker, the vocabulary
and the OOV bucket (`num_classes - 1` of them).
"""

import math
from collections import Counter, defaultdict
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

from modules import constants

BOUNDARY = constants.BOUNDARY_ID
Seqs = Sequence[Sequence[int]]


def events(seqs: Seqs) -> Iterator[Tuple[int, int, int]]:
  """(u, v, w) for every predicted token w with its two-token history.

  Histories are padded with two start markers; the last event of a caption
  predicts the end marker.
  """
  for seq in seqs:
    history = [BOUNDARY, BOUNDARY] + list(seq)
    for i, w in enumerate(list(seq) + [BOUNDARY]):
      yield history[i], history[i + 1], w


def num_predicted(seqs: Seqs) -> int:
  return sum(len(s) + 1 for s in seqs)


def unigram_perplexity(train: Seqs, evals: Seqs, num_classes: int) -> float:
  """Add-one unigram fitted on `train`, perplexity on `evals`."""
  counts = Counter(w for _, _, w in events(train))
  total = sum(counts.values()) + (num_classes - 1)
  nll = -sum(math.log((counts[w] + 1) / total) for _, _, w in events(evals))
  return math.exp(nll / num_predicted(evals))


class _Level:
  """One order of interpolated Kneser-Ney: discounted counts per context."""

  def __init__(self, counts: Dict[Tuple, int], discount: float):
    self.counts = counts
    self.discount = discount
    self.total: Dict = defaultdict(float)
    self.types: Dict = defaultdict(int)
    for (context, _), count in counts.items():
      self.total[context] += count
      self.types[context] += 1

  def shares(self, pair_key, context_key) -> Tuple[np.ndarray, ...]:
    """`prob` split into a sparse and an interpolation part, for lookup
    tables: (keys, max(c - D, 0)/c(ctx)) per seen (ctx, w), then (context
    keys, D * types(ctx)/c(ctx)) per seen ctx; the key functions map a
    (context, w) pair and a context to int64 keys."""
    pairs = [(pair_key(context, w), max(count - self.discount, 0.0) / self.total[context])
             for (context, w), count in self.counts.items()]
    contexts = [(context_key(context), self.discount * self.types[context] / total)
                for context, total in self.total.items()]
    as_arrays = lambda rows: (np.array([k for k, _ in rows], np.int64),
                              np.array([v for _, v in rows], np.float32))
    return as_arrays(pairs) + as_arrays(contexts)

  def prob(self, context, w, lower: float) -> float:
    """max(c - D, 0)/c(ctx) + D * types(ctx)/c(ctx) * lower; `lower` if ctx unseen."""
    total = self.total.get(context)
    if not total:
      return lower
    count = self.counts.get((context, w), 0)
    return (max(count - self.discount, 0.0)
            + self.discount * self.types[context] * lower) / total


class KneserNeyTrigram:
  """Interpolated Kneser-Ney trigram with a fixed discount.

  - order 3: raw trigram counts;
  - order 2: continuation counts N1+(. v w), except when v is the start
    marker, whose left neighbour is always the padding (raw counts, as KenLM);
  - order 1: continuation counts N1+(. w), interpolated with the uniform
    distribution so every class, unseen ones included, has probability > 0.
  An unseen context hands its whole mass to the next lower order.
  """

  def __init__(self, train: Seqs, num_classes: int, discount: float = 0.75):
    self.uniform = 1.0 / (num_classes - 1)
    trigrams = Counter(((u, v), w) for u, v, w in events(train))
    bigrams: Counter = Counter()
    for ((_, v), w), count in trigrams.items():
      bigrams[(v, w)] += count if v == BOUNDARY else 1
    unigrams = Counter(((), w) for (_, w) in bigrams)
    self.levels = [_Level(unigrams, discount), _Level(bigrams, discount),
                   _Level(trigrams, discount)]

  def prob(self, u: int, v: int, w: int) -> float:
    p1 = self.levels[0].prob((), w, self.uniform)
    p2 = self.levels[1].prob(v, w, p1)
    return self.levels[2].prob((u, v), w, p2)

  def tables(self, num_classes: int) -> Dict[str, np.ndarray]:
    """The fitted model as arrays, for `modules.model.KneserNeyLayer`: keys
    are ids in base `num_classes` (v*n + w, u*n + v, (u*n + v)*n + w)."""
    n = num_classes
    p1 = np.array([self.levels[0].prob((), w, self.uniform) for w in range(n)], np.float32)
    a2_keys, a2, b2_keys, b2_values = self.levels[1].shares(lambda v, w: v * n + w,
                                                            lambda v: v)
    b2 = np.ones(n, np.float32)
    b2[b2_keys] = b2_values
    a3_keys, a3, b3_keys, b3 = self.levels[2].shares(lambda uv, w: (uv[0] * n + uv[1]) * n + w,
                                                     lambda uv: uv[0] * n + uv[1])
    return {'p1': p1, 'b2': b2, 'a2_keys': a2_keys, 'a2': a2, 'b3_keys': b3_keys, 'b3': b3,
            'a3_keys': a3_keys, 'a3': a3}

  def perplexity(self, seqs: Seqs) -> float:
    nll = -sum(math.log(self.prob(u, v, w)) for u, v, w in events(seqs))
    return math.exp(nll / num_predicted(seqs))


def kneser_ney_perplexity(train: Seqs, evals: Seqs, num_classes: int) -> float:
  """Interpolated KN trigram fitted on `train`, perplexity on `evals`."""
  return KneserNeyTrigram(train, num_classes).perplexity(evals)

