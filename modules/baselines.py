"""Count-based baselines the caption LM must beat, on exactly its tokens.

Inputs are lists of token-id sequences as the Trainer sees them (vocabulary
ids from the transform graph, truncated, no padding). Every predicted event
is one real token or the end marker, so perplexities are comparable with the
model's: PPL = exp(total NLL / number of predicted tokens).

The predictable classes are every id but PAD: the end marker, the vocabulary
and the OOV bucket (`num_classes - 1` of them).
"""

import functools
import math
from collections import Counter, defaultdict
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

from modules import constants

BOUNDARY = constants.BOUNDARY_ID
Seqs = Sequence[Sequence[int]]


def ngrams(seqs: Seqs, order: int) -> Iterator[Tuple[Tuple[int, ...], int]]:
  """(history, w) for every predicted token w (each token of a caption, then
  the end marker); history is the `order - 1` tokens before w, padded with
  start markers."""
  for seq in seqs:
    history = [BOUNDARY] * (order - 1) + list(seq)
    for i, w in enumerate(list(seq) + [BOUNDARY]):
      yield tuple(history[i:i + order - 1]), w


def events(seqs: Seqs) -> Iterator[Tuple[int, int, int]]:
  """(u, v, w) for every predicted token w with its two-token history.

  Histories are padded with two start markers; the last event of a caption
  predicts the end marker.
  """
  for (u, v), w in ngrams(seqs, 3):
    yield u, v, w


def num_predicted(seqs: Seqs) -> int:
  return sum(len(s) + 1 for s in seqs)


def unigram_perplexity(train: Seqs, evals: Seqs, num_classes: int) -> float:
  """Add-one unigram fitted on `train`, perplexity on `evals`."""
  counts = Counter(w for _, _, w in events(train))
  total = sum(counts.values()) + (num_classes - 1)
  nll = -sum(math.log((counts[w] + 1) / total) for _, _, w in events(evals))
  return math.exp(nll / num_predicted(evals))


class _Level:
  """One order of interpolated Kneser-Ney: discounted counts per context
  (a tuple of the last n - 1 tokens)."""

  def __init__(self, counts: Dict[Tuple, int], discount: float):
    self.counts = counts
    self.discount = discount
    self.total: Dict = defaultdict(float)
    self.types: Dict = defaultdict(int)
    for (context, _), count in counts.items():
      self.total[context] += count
      self.types[context] += 1

  def shares(self, key) -> Tuple[np.ndarray, ...]:
    """`prob` split into a sparse and an interpolation part, for lookup
    tables: (keys, max(c - D, 0)/c(ctx)) per seen (ctx, w), then (context
    keys, D * types(ctx)/c(ctx)) per seen ctx; `key` maps a token tuple to
    an int64."""
    pairs = [(key(context + (w,)), max(count - self.discount, 0.0) / self.total[context])
             for (context, w), count in self.counts.items()]
    contexts = [(key(context), self.discount * self.types[context] / total)
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


class KneserNey:
  """Interpolated Kneser-Ney of any order with a fixed discount; order 3 is
  the trigram baseline.

  - the highest order: raw counts;
  - each lower order: continuation counts N1+(. context w), except for an
    n-gram that starts with the start marker, whose left neighbour is always
    the padding (raw counts, as KenLM);
  - order 1: continuation counts N1+(. w), interpolated with the uniform
    distribution so every class, unseen ones included, has probability > 0.
  An unseen context hands its whole mass to the next lower order.
  """

  def __init__(self, train: Seqs, num_classes: int, order: int = 3, discount: float = 0.75):
    if order < 1 or num_classes ** order >= 2 ** 63:
      raise ValueError(f'a Kneser-Ney model of order {order} over {num_classes} classes '
                       'cannot key its n-grams in int64')
    self.order = order
    self.num_classes = num_classes
    self.uniform = 1.0 / (num_classes - 1)
    counts = [Counter(ngrams(train, order))]
    while len(counts) < order:
      lower: Counter = Counter()
      for (context, w), count in counts[0].items():
        lower[(context[1:], w)] += count if len(context) > 1 and context[1] == BOUNDARY else 1
      counts.insert(0, lower)
    self.levels = [_Level(level, discount) for level in counts]

  def prob(self, *history_and_w: int) -> float:
    """P(w | history): `prob(u, v, w)` for the trigram (the last `order - 1`
    tokens of a longer history are used)."""
    *history, w = history_and_w
    p = self.uniform
    for n, level in enumerate(self.levels):
      p = level.prob(tuple(history[len(history) - n:]) if n else (), w, p)
    return p

  def tables(self) -> Dict[str, np.ndarray]:
    """The fitted model as arrays, for `modules.model.KneserNeyLayer`: `p1`,
    the unigram level over every class; then per order n >= 2, `a{n}_keys`,
    `a{n}`, `b{n}_keys`, `b{n}` (`_Level.shares`), a token tuple keyed by its
    digits in base `num_classes`."""
    n = self.num_classes
    key = lambda tokens: functools.reduce(lambda acc, t: acc * n + t, tokens, 0)
    found = {'p1': np.array([self.levels[0].prob((), w, self.uniform) for w in range(n)],
                            np.float32)}
    for order, level in enumerate(self.levels[1:], start=2):
      names = [f'a{order}_keys', f'a{order}', f'b{order}_keys', f'b{order}']
      found.update(zip(names, level.shares(key)))
    return found

  def perplexity(self, seqs: Seqs) -> float:
    nll = -sum(math.log(self.prob(*history, w)) for history, w in ngrams(seqs, self.order))
    return math.exp(nll / num_predicted(seqs))
