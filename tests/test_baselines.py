"""Count baselines: proper distributions, the right events, sensible values."""

import math

import pytest

from modules import baselines

NUM_CLASSES = 8  # PAD, boundary, 5 words (ids 2..6), OOV (7)
TRAIN = [[2, 3, 4], [2, 3, 5], [2, 6], [3, 4, 7, 4]]


def test_events_predict_each_token_and_the_end_marker():
  assert list(baselines.events([[5, 6]])) == [(1, 1, 5), (1, 5, 6), (5, 6, 1)]
  assert baselines.num_predicted(TRAIN) == sum(len(s) + 1 for s in TRAIN)


@pytest.mark.parametrize('history', [(1, 1), (1, 2), (2, 3), (3, 4), (7, 7), (6, 5), (4, 2),
                                     (1, 1, 2), (2, 3, 4), (3, 4, 7), (5, 5, 5)])
def test_kneser_ney_sums_to_one_over_predictable_classes(history):
  model = baselines.KneserNey(TRAIN, NUM_CLASSES, order=len(history) + 1)
  probs = [model.prob(*history, w) for w in range(1, NUM_CLASSES)]
  assert min(probs) > 0
  assert math.fsum(probs) == pytest.approx(1.0, abs=1e-12)


def test_kneser_ney_prefers_seen_continuations():
  model = baselines.KneserNey(TRAIN, NUM_CLASSES)
  assert model.prob(2, 3, 4) > model.prob(2, 3, 6)
  assert model.prob(1, 1, 2) > model.prob(1, 1, 4)


def test_unigram_add_one_matches_hand_computation():
  # train events: 12 tokens + 4 end markers = 16, plus 7 predictable classes = 23.
  evals = [[2]]
  counts = {2: 3, 1: 4}
  expected = math.exp(-(math.log((counts[2] + 1) / 23) + math.log((counts[1] + 1) / 23)) / 2)
  assert baselines.unigram_perplexity(TRAIN, evals, NUM_CLASSES) == pytest.approx(expected)


def test_trigram_beats_unigram_on_repetitive_text():
  train = [[2, 3, 4, 5]] * 20 + [[6, 3, 4]] * 5
  evals = [[2, 3, 4, 5], [6, 3, 4]]
  assert (baselines.KneserNey(train, NUM_CLASSES).perplexity(evals)
          < baselines.unigram_perplexity(train, evals, NUM_CLASSES) / 2)


def test_the_trigram_is_the_kneser_ney_model_of_order_three_by_hand():
  """P(4 | 2 3) from the definition on TRAIN: raw counts after (2, 3), then
  continuation counts N1+(. 3 w) for the bigram level and N1+(. w) for the
  unigram level, each discounted by 0.75 and interpolated downwards."""
  model = baselines.KneserNey(TRAIN, NUM_CLASSES)
  d, uniform = 0.75, 1 / (NUM_CLASSES - 1)
  # unigram continuation counts N1+(. w) over bigram types (v, w)
  bigram_types = {(v, w) for _, v, w in baselines.events(TRAIN)}
  p1 = {w: sum(1 for _, x in bigram_types if x == w) for w in range(NUM_CLASSES)}
  total1 = sum(p1.values())
  unigram = lambda w: (max(p1[w] - d, 0) + d * sum(1 for c in p1.values() if c) * uniform) / total1
  # bigram level for context 3: continuation counts N1+(. 3 w)
  contexts = {(u, w) for u, v, w in baselines.events(TRAIN) if v == 3}
  c2 = {w: sum(1 for _, x in contexts if x == w) for w in range(NUM_CLASSES)}
  total2 = sum(c2.values())
  bigram = lambda w: (max(c2[w] - d, 0) + d * sum(1 for c in c2.values() if c) * unigram(w)) / total2
  # trigram level, raw counts after (2, 3)
  c3 = {w: sum(1 for u, v, x in baselines.events(TRAIN) if (u, v, x) == (2, 3, w))
        for w in range(NUM_CLASSES)}
  total3 = sum(c3.values())
  expected = (max(c3[4] - d, 0) + d * sum(1 for c in c3.values() if c) * bigram(4)) / total3
  assert model.prob(2, 3, 4) == pytest.approx(expected, rel=1e-12)


def test_a_model_whose_ngrams_do_not_fit_in_int64_keys_is_refused():
  with pytest.raises(ValueError, match='order 6 over 5003 classes'):
    baselines.KneserNey(TRAIN, 5003, order=6)
