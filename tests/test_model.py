"""The language model's pieces: shifting, masking, shapes, schedule."""

import numpy as np
import tensorflow as tf

from modules import model
from pipeline import config


def test_inputs_and_targets_place_markers_and_padding():
  token_ids = tf.constant([[5, 6, 7], [8, 0, 0], [0, 0, 0]], tf.int64)
  inputs, targets = model.lm_inputs_and_targets(token_ids, tf.constant([3, 1, 0]))
  b, p = config.BOUNDARY_ID, config.PAD_ID
  np.testing.assert_array_equal(inputs, [[b, 5, 6, 7], [b, 8, p, p], [b, p, p, p]])
  np.testing.assert_array_equal(targets, [[5, 6, 7, b], [8, b, p, p], [b, p, p, p]])


def test_token_nll_masks_padding_only():
  targets = tf.constant([[3, 1, 0]])
  logits = tf.zeros([1, 3, 5])
  nll, mask = model.token_nll(targets, logits)
  np.testing.assert_allclose(nll.numpy(), [[np.log(5), np.log(5), 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(mask, [[1, 1, 0]])
  assert float(model.masked_mean_nll(targets, logits)) == np.float32(np.log(5))


def test_model_outputs_logits_over_all_classes_with_tied_weights():
  lm = model.build_model(num_classes=11, embed_dim=4, gru_units=6, dropout=0.0)
  logits = lm(tf.constant([[1, 2, 3]]))
  assert logits.shape == (1, 3, 11)
  embedding = lm.get_layer('embedding').embeddings
  tied = [w for w in lm.get_layer('logits').trainable_weights if w is embedding]
  assert len(tied) == 1


def test_fit_schedule_covers_requested_steps():
  assert model._fit_schedule(1500, 250) == (6, 250)
  epochs, steps = model._fit_schedule(60, 250)
  assert epochs == 1 and steps == 60
  epochs, steps = model._fit_schedule(1000, 300)
  assert epochs * steps >= 1000 and epochs == 3
