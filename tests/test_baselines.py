"""Count baselines: proper distributions, the right events, sensible values."""

import math

import pytest

from modules import baselines

NUM_CLASSES = 8  # PAD, boundary, 5 words (ids 2..6), OOV (7)
TRAIN = [[2, 3, 4], [2, 3, 5], [2, 6], [3, 4, 7, 4]]


def test_events_predict_each_token_and_the_end_marker():
  assert list(baselines.events([[5, 6]])) == [(1, 1, 5), (1, 5, 6), (5, 6, 1)]
  assert baselines.num_predicted(TRAIN) == sum(len(s) + 1 for s in TRAIN)


@pytest.mark.parametrize('history', [(1, 1), (1, 2), (2, 3), (3, 4), (7, 7), (6, 5), (4, 2)])
def test_kneser_ney_sums_to_one_over_predictable_classes(history):
  model = baselines.KneserNeyTrigram(TRAIN, NUM_CLASSES)
  probs = [model.prob(*history, w) for w in range(1, NUM_CLASSES)]
  assert min(probs) > 0
  assert math.fsum(probs) == pytest.approx(1.0, abs=1e-12)


def test_kneser_ney_prefers_seen_continuations():
  model = baselines.KneserNeyTrigram(TRAIN, NUM_CLASSES)
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
  assert (baselines.kneser_ney_perplexity(train, evals, NUM_CLASSES)
          < baselines.unigram_perplexity(train, evals, NUM_CLASSES) / 2)
