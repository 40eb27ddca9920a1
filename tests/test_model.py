"""The language model's pieces: shifting, masking, shapes, schedule."""

import numpy as np
import pytest
import tensorflow as tf

from modules import baselines, constants, features, model, trainer
from modules import inputs as inputs_lib



def test_inputs_and_targets_place_markers_and_padding():
  token_ids = tf.constant([[5, 6, 7], [8, 0, 0], [0, 0, 0]], tf.int64)
  inputs, targets = model.lm_inputs_and_targets(token_ids, tf.constant([3, 1, 0]))
  b, p = constants.BOUNDARY_ID, constants.PAD_ID
  np.testing.assert_array_equal(inputs, [[b, 5, 6, 7], [b, 8, p, p], [b, p, p, p]])
  np.testing.assert_array_equal(targets, [[5, 6, 7, b], [8, b, p, p], [b, p, p, p]])


def test_token_nll_masks_padding_only():
  targets = tf.constant([[3, 1, 0]])
  logits = tf.zeros([1, 3, 5])
  nll, mask = model.token_nll(targets, logits)
  np.testing.assert_allclose(nll.numpy(), [[np.log(5), np.log(5), 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(mask, [[1, 1, 0]])


@pytest.mark.parametrize('shape', [(6,), (3, 4)])
def test_label_nll_is_the_softmax_cross_entropy_and_has_its_gradient(shape):
  logits = tf.Variable(tf.random.stateless_normal(shape + (7,), seed=[1, 2]) * 5)
  labels = tf.random.stateless_uniform(shape, seed=[3, 4], maxval=7, dtype=tf.int32)
  with tf.GradientTape(persistent=True) as tape:
    ours = model.label_nll(labels, logits)
    stock = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  np.testing.assert_allclose(ours.numpy(), stock.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tape.gradient(ours, logits).numpy(),
                             tape.gradient(stock, logits).numpy(), atol=1e-6)


def test_model_ties_weights_and_never_predicts_padding():
  bias = np.log(np.full(11, 1 / 11, np.float32))
  lm = model.build_model(num_classes=11, embed_dim=4, gru_units=6, dropout=0.0, output_bias=bias)
  probs = tf.nn.softmax(lm(tf.constant([[1, 2, 3]])))
  assert probs.shape == (1, 3, 11)
  np.testing.assert_allclose(probs[..., constants.PAD_ID], 0.0, atol=1e-30)
  shapes = sorted(tuple(v.shape) for v in lm.trainable_variables)
  assert (11, 4) in shapes and (4, 11) not in shapes  # one matrix serves input and output
  np.testing.assert_allclose(lm.output_bias.numpy(), bias)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_training_step_lowers_loss_on_a_tiny_corpus(seed):
  """The loss after training, not the epoch's running mean (which averages in
  the first steps and sat right at the bar on some seeds)."""
  model.keras.utils.set_random_seed(seed)
  lm = model.build_model(num_classes=8, embed_dim=8, gru_units=8, dropout=0.0)
  lm.compile(optimizer=model.keras.optimizers.Adam(0.05))
  inputs, targets = model.lm_inputs_and_targets(tf.constant([[2, 3, 4, 0]] * 8), tf.constant([3] * 8))
  before = float(tf.reduce_mean(lm.predicted_nll(inputs, targets)))
  lm.fit(tf.data.Dataset.from_tensors((inputs, targets)).repeat(30), verbose=0)
  after = float(tf.reduce_mean(lm.predicted_nll(inputs, targets)))
  assert before > 0.8 * np.log(7)        # starts near uniform over the 7 predictable classes
  assert after < 0.25 * np.log(7)


@pytest.mark.parametrize('sampler', ['log-uniform', 'unigram'])
def test_a_sampled_softmax_in_training_lowers_the_full_softmax_loss(sampler):
  """Training on the sampled estimate (half the classes) still teaches the
  full softmax, which scoring uses; the loss it reports is the sampled one."""
  model.keras.utils.set_random_seed(0)
  weights = (None if sampler == 'log-uniform'
             else model.sampler_weights(np.arange(40, dtype=np.float64)[::-1], 1.0))
  lm = model.build_model(num_classes=40, embed_dim=8, gru_units=8, dropout=0.0, sampled_softmax=20,
                         sampler_weights=weights)
  lm.compile(optimizer=model.keras.optimizers.Adam(0.05))
  inputs, targets = model.lm_inputs_and_targets(tf.constant([[2, 3, 4, 0]] * 8), tf.constant([3] * 8))
  before = float(tf.reduce_mean(lm.predicted_nll(inputs, targets)))
  lm.fit(tf.data.Dataset.from_tensors((inputs, targets)).repeat(60), verbose=0)
  after = float(tf.reduce_mean(lm.predicted_nll(inputs, targets)))
  assert before > 0.8 * np.log(39) and after < 0.3 * np.log(39)


def test_the_sampler_follows_the_train_targets_and_never_draws_padding():
  split = {features.TOKEN_IDS_KEY: np.array([[2, 3, 3, 0], [3, 0, 0, 0]]),
           features.NUM_TOKENS_KEY: np.array([3, 1])}
  counts = model.target_counts(split, 6)
  np.testing.assert_array_equal(counts, [0, 2, 1, 3, 0, 0])   # PAD, boundary (the ends), 2, 3, ...
  weights = model.sampler_weights(counts, 0.5)
  np.testing.assert_allclose(weights, [0, 3 ** 0.5, 2 ** 0.5, 2, 1, 1])
  np.testing.assert_allclose(np.exp(model.unigram_log_probs(counts)), np.array([1, 3, 2, 4, 1, 1]) / 12)
  lm = model.build_model(num_classes=6, embed_dim=4, gru_units=4, dropout=0.0, sampled_softmax=4,
                         sampler_weights=weights)
  assert lm.sampled_softmax == 4   # the five classes it can draw, less the true one
  inputs, targets = model.lm_inputs_and_targets(split[features.TOKEN_IDS_KEY], split[features.NUM_TOKENS_KEY])
  assert np.all(np.isfinite(lm.sampled_nll(inputs, targets).numpy()))
  drawn = set()
  for _ in range(20):
    drawn |= set(tf.random.fixed_unigram_candidate_sampler(
        tf.zeros([1, 1], tf.int64), 1, 4, True, 6, unigrams=lm._sampler_weights)[0].numpy())
  assert drawn == {1, 2, 3, 4, 5}


def test_a_vocabulary_smaller_than_the_sample_trains_on_the_full_softmax():
  lm = model.build_model(num_classes=30, embed_dim=8, gru_units=8, dropout=0.0, sampled_softmax=512)
  assert lm.sampled_softmax == 0
  lm.compile(optimizer=model.keras.optimizers.Adam(0.05))
  inputs, targets = model.lm_inputs_and_targets(tf.constant([[2, 3, 4, 0]] * 8), tf.constant([3] * 8))
  history = lm.fit(tf.data.Dataset.from_tensors((inputs, targets)).repeat(5), verbose=0)
  assert np.isfinite(history.history['loss'][-1])


def test_warmup_cosine_schedule():
  schedule = model.WarmupCosine(peak=1.0, warmup_steps=10, total_steps=100)
  cosine = lambda step: 0.5 * (1 + np.cos(np.pi * step / 100))
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(9)) == pytest.approx(cosine(9))
  assert float(schedule(50)) == pytest.approx(0.5)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_fit_schedule_covers_requested_steps():
  assert trainer._fit_schedule(1500, 250) == (6, 250)
  epochs, steps = trainer._fit_schedule(60, 250)
  assert epochs == 1 and steps == 60
  epochs, steps = trainer._fit_schedule(1000, 300)
  assert epochs * steps >= 1000 and epochs == 3


def test_masked_eval_matches_full_softmax_scoring():
  """corpus_nll (softmax at predicted positions only) = the serving computation."""
  lm = model.build_model(num_classes=9, embed_dim=4, gru_units=4, dropout=0.0)
  token_ids = tf.constant([[2, 3, 4, 0], [5, 0, 0, 0], [6, 7, 8, 2]], tf.int64)
  inputs, targets = model.lm_inputs_and_targets(token_ids, tf.constant([3, 1, 4]))
  total, count = model.corpus_nll(lm, tf.data.Dataset.from_tensors((inputs, targets)))
  nll, mask = model.token_nll(targets, lm(inputs))
  assert count == int(tf.reduce_sum(mask)) == 3 + 1 + 1 + 1 + 4 + 1
  assert total == pytest.approx(float(tf.reduce_sum(nll)), rel=1e-5)


def test_early_stopping_restores_the_best_epoch():
  """Eval loss that rises after epoch 1 stops training and restores epoch 1."""
  lm = model.build_model(num_classes=8, embed_dim=8, gru_units=8, dropout=0.0)
  lm.compile(optimizer=model.keras.optimizers.Adam(0.1))
  train_inputs, train_targets = model.lm_inputs_and_targets(
      tf.constant([[2, 3, 4, 0]] * 8), tf.constant([3] * 8))
  eval_pairs = model.lm_inputs_and_targets(tf.constant([[4, 3, 2, 0]] * 4), tf.constant([3] * 4))
  logger = model.EpochLogger(tf.data.Dataset.from_tensors(eval_pairs), 4, steps_per_epoch=5,
                             patience=2)
  lm.fit(tf.data.Dataset.from_tensors((train_inputs, train_targets)).repeat(),
         epochs=20, steps_per_epoch=5, verbose=0, callbacks=[logger])
  losses = [h['eval_loss'] for h in logger.history]
  assert len(losses) < 20  # stopped early
  assert logger.best_epoch == losses.index(min(losses)) + 1
  assert len(losses) - logger.best_epoch == 2
  total, count = model.corpus_nll(lm, tf.data.Dataset.from_tensors(eval_pairs))
  assert total / count == pytest.approx(min(losses), abs=1e-3)  # best weights are back


def test_the_last_epoch_scores_the_whole_split_once_for_both_numbers():
  """The last epoch's sample loss comes from the first batches of its one
  pass over the whole split, and that pass is the final perplexity."""
  model.keras.utils.set_random_seed(0)
  lm = model.build_model(num_classes=8, embed_dim=8, gru_units=8, dropout=0.0)
  lm.compile(optimizer=model.keras.optimizers.Adam(0.05))
  pairs = model.lm_inputs_and_targets(tf.constant([[2, 3, 4, 0], [4, 3, 0, 0], [5, 6, 7, 2]] * 4),
                                      tf.constant([3, 2, 4] * 4))
  whole = tf.data.Dataset.from_tensor_slices(pairs).batch(4)    # 3 batches
  sample = whole.take(1)
  logger = model.EpochLogger(sample, 4, steps_per_epoch=3, patience=2, whole=whole,
                             sample_batches=1)
  lm.fit(tf.data.Dataset.from_tensors(pairs).repeat(), epochs=2, steps_per_epoch=3, verbose=0,
         callbacks=[logger])
  assert logger.best_epoch == 2
  total, count = model.corpus_nll(lm, sample)
  assert logger.history[-1]['eval_loss'] == pytest.approx(total / count, abs=1e-4)
  total, count = model.corpus_nll(lm, whole)
  assert logger.whole_score[1] == count and count > 3 * 4
  assert logger.whole_score[0] == pytest.approx(total, rel=1e-6)
  data = trainer.EvalData(whole, 1, 4, is_everything=False)
  assert trainer.final_perplexity(lm, data, logger) == round(np.exp(total / count), 3)


# ------------------------------------------------------------------ the Kneser-Ney model mixed in
TRAIN_SEQS = [[2, 3, 4], [2, 3, 5], [3, 4, 2, 3], [6, 2], [2, 3, 4, 4]]
EVAL_SEQS = [[2, 3, 4], [2, 6, 7], [7, 7], [5, 3, 2, 4]]   # seen and unseen contexts, 7 unseen


@pytest.mark.parametrize('order', [2, 3, 4, 5])
def test_the_kneser_ney_layer_gives_the_baselines_probabilities(order):
  """The exported model's n-gram model is the Trainer's, event by event."""
  fitted = baselines.KneserNey(TRAIN_SEQS, num_classes=9, order=order)
  layer = model.KneserNeyLayer(fitted.tables(), 9)
  assert layer.order == order
  events = list(baselines.ngrams(EVAL_SEQS, order))
  history = [tf.constant(column) for column in zip(*(h for h, _ in events))]
  w = tf.constant([w for _, w in events])
  np.testing.assert_allclose(layer(history, w).numpy(), [fitted.prob(*h, w) for h, w in events],
                             rtol=1e-6)


def test_histories_are_the_tokens_before_each_target_boundary_padded():
  b = constants.BOUNDARY_ID
  inputs, _ = model.lm_inputs_and_targets(tf.constant([[5, 6, 7]]), tf.constant([3]))
  older, before, current = model.histories(inputs, 3)
  np.testing.assert_array_equal(current, [[b, 5, 6, 7]])
  np.testing.assert_array_equal(before, [[b, b, 5, 6]])
  np.testing.assert_array_equal(older, [[b, b, b, 5]])
  # as the count models see them: targets 5 6 7 <end> after (b b b), (b b 5), ...
  assert [h for h, _ in baselines.ngrams([[5, 6, 7]], 4)] == [
      tuple(int(t[0, i]) for t in (older, before, current)) for i in range(4)]


def graph_hash_of_a_saved(layer, directory):
  """The fingerprint's graph hash of a SavedModel serving `layer`."""
  from tensorflow.core.protobuf import fingerprint_pb2  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.layer = layer
  spec = tf.TensorSpec([None], tf.int64)
  module.score = tf.function(lambda u, v, w: layer([u, v], w), input_signature=[spec] * 3)
  tf.saved_model.save(module, str(directory))
  with open(directory / 'fingerprint.pb', 'rb') as f:
    return fingerprint_pb2.FingerprintDef.FromString(f.read()).graph_def_program_hash


def test_the_same_trigram_exports_the_same_graph_whatever_was_built_before(tmp_path):
  """Two runs of one model publish one graph (tests/test_publish.py compares
  them): the tables' names must not depend on what the process built first
  (the stock eager initializer names them after a process-wide counter)."""
  tables = baselines.KneserNey(TRAIN_SEQS, num_classes=9).tables()
  first = graph_hash_of_a_saved(model.KneserNeyLayer(tables, 9), tmp_path / 'first')
  for _ in range(3):
    tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer([1], [1.0]), 0.0)
  again = graph_hash_of_a_saved(model.KneserNeyLayer(tables, 9), tmp_path / 'again')
  other = baselines.KneserNey(TRAIN_SEQS[:-1], num_classes=9).tables()
  assert first == again
  assert graph_hash_of_a_saved(model.KneserNeyLayer(other, 9), tmp_path / 'other') != first


def lm_with_kneser_ney(weight, order=3):
  lm = model.build_model(num_classes=9, embed_dim=4, gru_units=4, dropout=0.0)
  lm.attach_kneser_ney(baselines.KneserNey(TRAIN_SEQS, 9, order).tables(), weight)
  pairs = model.lm_inputs_and_targets(
      tf.constant([s + [0] * (4 - len(s)) for s in EVAL_SEQS]), tf.constant([len(s) for s in EVAL_SEQS]))
  return lm, pairs


@pytest.mark.parametrize('order', [3, 4])
def test_scores_mix_the_full_softmax_with_the_kneser_ney_model(order):
  """P = (1 - k) P_gru + k P_kn at every predicted position; every scorer agrees."""
  gru, (inputs, targets) = lm_with_kneser_ney(0.0, order)
  mixed, _ = lm_with_kneser_ney(0.3, order)
  mixed.set_weights(gru.get_weights())
  fitted = baselines.KneserNey(TRAIN_SEQS, 9, order)
  p_gru = np.exp(-gru.predicted_nll(inputs, targets).numpy())
  p_kn = np.array([fitted.prob(*h, w) for h, w in baselines.ngrams(EVAL_SEQS, order)])
  expected = -np.log(0.7 * p_gru + 0.3 * p_kn)
  np.testing.assert_allclose(mixed.predicted_nll(inputs, targets).numpy(), expected, rtol=1e-5)
  nll, mask = mixed.position_nll(inputs, targets)        # what the export scores
  assert float(tf.reduce_sum(nll)) == pytest.approx(expected.sum(), rel=1e-5)
  total, count = model.corpus_nll(mixed, tf.data.Dataset.from_tensors((inputs, targets)))
  assert count == int(tf.reduce_sum(mask)) == len(expected)
  assert total == pytest.approx(expected.sum(), rel=1e-5)
  # training fits the GRU alone
  np.testing.assert_allclose(mixed.predicted_nll(inputs, targets, training=True).numpy(),
                             -np.log(p_gru), rtol=1e-5)


def test_bucketed_batches_are_cut_to_their_longest_caption():
  lengths = np.array([3, 16, 9, 12, 12, 9, 16, 3] * 40)
  token_ids = np.where(np.arange(16)[None, :] < lengths[:, None], 5, 0)
  split = {features.TOKEN_IDS_KEY: token_ids, features.NUM_TOKENS_KEY: lengths}
  bounds = inputs_lib.length_bucket_bounds(16)
  seen = set()
  for inputs, targets in inputs_lib.lm_dataset(split, 8, training=True, seed=0,
                                               bucketed=True).take(40):
    kept = np.sum(targets.numpy() != constants.PAD_ID, axis=1) - 1   # tokens before the end marker
    assert inputs.shape == (8, kept.max() + 1)
    assert len({int(np.searchsorted(bounds, n, side='right')) for n in kept}) == 1
    seen.add(int(kept.max()))
  assert seen == {3, 9, 12, 16}
