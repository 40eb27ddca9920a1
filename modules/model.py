"""The caption language model: training (`run_fn`) and export.

A tied-embedding GRU predicts each caption token from the ones before it.
Keras 2 (`tf_keras`) is used on purpose: TFT 1.16's transform layer is a
tf_keras layer and mixing it with Keras 3 fails. The export is a plain TF
SavedModel carrying the transform graph, so it answers raw caption strings
with TensorFlow alone.
"""

import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Tuple

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio
from tensorflow_metadata.proto.v0 import schema_pb2

from modules import baselines
from pipeline import config

log = logging.getLogger('coco_captions.trainer')

SCORE_SIGNATURE = 'score_captions'
EVAL_BATCH = 512


# ------------------------------------------------------------------ data
def lm_inputs_and_targets(token_ids: tf.Tensor,
                          num_tokens: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Shifts token ids into next-token-prediction pairs.

  inputs  = [BOUNDARY, t1, ..., tL]
  targets = [t1, ..., tn, BOUNDARY, PAD, ...]  (the end marker right after
  the n kept tokens). Shared by training and the exported signatures so both
  score exactly the same positions.
  """
  token_ids = tf.cast(token_ids, tf.int32)
  num_tokens = tf.cast(tf.reshape(num_tokens, [-1]), tf.int32)
  batch = tf.shape(token_ids)[0]
  length = tf.shape(token_ids)[1] + 1
  boundary = tf.fill([batch, 1], config.BOUNDARY_ID)
  inputs = tf.concat([boundary, token_ids], axis=1)
  padded = tf.concat([token_ids, tf.fill([batch, 1], config.PAD_ID)], axis=1)
  end_marker = tf.one_hot(num_tokens, length, dtype=tf.int32) * config.BOUNDARY_ID
  return inputs, padded + end_marker


def token_nll(targets: tf.Tensor, logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Per-position negative log-likelihood and the mask of predicted positions."""
  nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=targets, logits=tf.cast(logits, tf.float32))
  mask = tf.cast(tf.not_equal(targets, config.PAD_ID), tf.float32)
  return nll * mask, mask


def schema_subset(schema: schema_pb2.Schema, keys) -> schema_pb2.Schema:
  """The schema's features named in `keys` only, so reading parses just those
  (with images on, each example also holds a 49k-float image tensor)."""
  subset = schema_pb2.Schema()
  subset.CopyFrom(schema)
  del subset.feature[:]
  subset.feature.extend(f for f in schema.feature if f.name in keys)
  return subset


def _load_split(fn_args: tfx.components.FnArgs, files: List[str],
                tft_output: tft.TFTransformOutput) -> Dict[str, np.ndarray]:
  """Reads the token features of one split of transformed examples into
  memory (a few MB)."""
  keys = (config.TOKEN_IDS_KEY, config.NUM_TOKENS_KEY)
  dataset = fn_args.data_accessor.tf_dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(batch_size=4096, num_epochs=1, shuffle=False),
      schema_subset(tft_output.transformed_metadata.schema, keys))
  parts = {key: [] for key in keys}
  for batch in dataset:
    for key in keys:
      parts[key].append(batch[key].numpy())
  if not parts[config.TOKEN_IDS_KEY]:
    raise ValueError(f'No transformed examples in {files}')
  return {
      config.TOKEN_IDS_KEY: np.concatenate(parts[config.TOKEN_IDS_KEY]),
      config.NUM_TOKENS_KEY: np.concatenate(parts[config.NUM_TOKENS_KEY]).reshape(-1),
  }


def _lm_dataset(split: Dict[str, np.ndarray], batch_size: int,
                training: bool, seed: int) -> tf.data.Dataset:
  dataset = tf.data.Dataset.from_tensor_slices(
      (split[config.TOKEN_IDS_KEY], split[config.NUM_TOKENS_KEY]))
  if training:
    dataset = dataset.shuffle(len(split[config.NUM_TOKENS_KEY]), seed=seed,
                              reshuffle_each_iteration=True).repeat()
  dataset = dataset.batch(batch_size, drop_remainder=training)
  return dataset.map(lm_inputs_and_targets).prefetch(tf.data.AUTOTUNE)


def sequences(split: Dict[str, np.ndarray]) -> List[List[int]]:
  """The kept token ids of each caption, without padding (for the baselines)."""
  return [list(row[:n]) for row, n in
          zip(split[config.TOKEN_IDS_KEY].tolist(), split[config.NUM_TOKENS_KEY].tolist())]


# ------------------------------------------------------------------ model
class CaptionLM(keras.Model):
  """Tied-embedding GRU language model over caption token ids.

  The output layer reuses the input embedding matrix (weight tying: half the
  parameters, better generalisation on a small corpus). PAD can never be
  predicted (its logit is pinned very low), so the distribution covers the
  same classes as the count baselines. Training computes the 5k-way softmax
  only at the positions that are predicted, which on CPU is most of the cost.
  """

  def __init__(self, num_classes: int, embed_dim: int, gru_units: int,
               dropout: float, output_bias: np.ndarray = None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.embedding = keras.layers.Embedding(num_classes, embed_dim, name='embedding')
    self.dropout = keras.layers.Dropout(dropout)
    self.gru = keras.layers.GRU(gru_units, return_sequences=True, name='gru')
    self.project = (keras.layers.Dense(embed_dim, name='project')
                    if gru_units != embed_dim else None)
    initial_bias = (keras.initializers.Constant(output_bias) if output_bias is not None
                    else 'zeros')
    self.output_bias = self.add_weight(name='output_bias', shape=[num_classes],
                                       initializer=initial_bias)
    self._pad_logit = tf.one_hot(config.PAD_ID, num_classes, on_value=-1e9, off_value=0.0)
    self.loss_tracker = keras.metrics.Mean(name='loss')

  def hidden(self, tokens, training=False):
    x = self.dropout(self.embedding(tokens), training=training)
    x = self.gru(x, training=training)
    if self.project is not None:
      x = self.project(x)
    return self.dropout(x, training=training)

  def logits(self, hidden):
    return (tf.matmul(hidden, self.embedding.embeddings, transpose_b=True)
            + self.output_bias + self._pad_logit)

  def call(self, tokens, training=False):
    """[batch, time] token ids -> [batch, time, num_classes] next-token logits."""
    return self.logits(self.hidden(tokens, training=training))

  def predicted_nll(self, inputs, targets, training=False):
    """NLL of every predicted (non-PAD) target, as a flat vector: the softmax
    is computed only there, which on CPU is most of the cost."""
    predicted = tf.not_equal(targets, config.PAD_ID)
    hidden = tf.boolean_mask(self.hidden(inputs, training=training), predicted)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.boolean_mask(targets, predicted), logits=self.logits(hidden))

  @property
  def metrics(self):
    return [self.loss_tracker]

  def train_step(self, data):
    inputs, targets = data
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(self.predicted_nll(inputs, targets, training=True))
    self.optimizer.apply_gradients(
        zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
    self.loss_tracker.update_state(loss)
    return {'loss': self.loss_tracker.result()}


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up, then cosine decay to zero at the last step: with a fixed
  step budget this beats a constant rate at no cost."""

  def __init__(self, peak: float, warmup_steps: int, total_steps: int):
    self.peak, self.warmup, self.total = peak, max(1, warmup_steps), max(1, total_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warm = tf.minimum(1.0, (step + 1.0) / self.warmup)
    decay = 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(1.0, step / self.total)))
    return self.peak * warm * decay

  def get_config(self):
    return {'peak': self.peak, 'warmup_steps': self.warmup, 'total_steps': self.total}


def unigram_log_probs(split: Dict[str, np.ndarray], num_classes: int) -> np.ndarray:
  """Add-one log frequencies of the targets: the output bias starts at the
  unigram model instead of uniform, which shortens the first epoch's work."""
  _, targets = lm_inputs_and_targets(split[config.TOKEN_IDS_KEY], split[config.NUM_TOKENS_KEY])
  counts = np.bincount(targets.numpy().ravel(), minlength=num_classes).astype(np.float64)
  counts[config.PAD_ID] = 0
  return np.log((counts + 1.0) / (counts + 1.0).sum()).astype(np.float32)


def build_model(num_classes: int, embed_dim: int, gru_units: int, dropout: float,
                output_bias: np.ndarray = None) -> CaptionLM:
  model = CaptionLM(num_classes, embed_dim, gru_units, dropout, output_bias, name='caption_lm')
  model(tf.zeros([1, 1], tf.int32))  # create the variables
  return model


# ------------------------------------------------------------------ eval
def corpus_nll(model: CaptionLM, dataset: tf.data.Dataset) -> Tuple[float, int]:
  """Total NLL and predicted-token count over a dataset (exact perplexity).

  Like training, the softmax is computed only where a token is predicted:
  evaluation cost then follows the real tokens, not the padded length.
  """

  @tf.function(reduce_retracing=True)
  def batch_nll(inputs, targets):
    nll = model.predicted_nll(inputs, targets)
    return tf.reduce_sum(nll), tf.cast(tf.size(nll), tf.float32)

  total, count = 0.0, 0.0
  for inputs, targets in dataset:
    nll, n = batch_nll(inputs, targets)
    total += float(nll)
    count += float(n)
  return total, int(count)


class EpochLogger(keras.callbacks.Callback):
  """Logs train loss, eval loss and eval perplexity after each epoch.

  Per epoch it scores a fixed sample of the eval split (`eval_captions` of
  them; all of a small split), so the cost of watching training does not grow
  with the data; the final perplexity is computed on the whole split.

  Early stopping: after `patience` epochs without a better eval loss,
  training stops and the best epoch's weights are restored. On the full
  val2017 captions the loss falls every epoch, so nothing changes there; on a
  small sample (data/) it keeps a model that memorised its 800 captions from
  being exported.
  """

  def __init__(self, eval_dataset: tf.data.Dataset, eval_captions: int, steps_per_epoch: int,
               patience: int):
    super().__init__()
    self._eval = eval_dataset
    self._eval_captions = eval_captions
    self._steps = steps_per_epoch
    self._patience = patience
    self.history: List[Dict[str, float]] = []
    self.best_epoch = 0
    self._best_loss = math.inf
    self._best_weights = None
    self._start = time.time()

  def on_train_end(self, logs=None):
    if self._best_weights is not None and self.best_epoch != len(self.history):
      self.model.set_weights(self._best_weights)
      log.info('restored the weights of epoch %d (lowest eval loss)', self.best_epoch)

  def on_epoch_end(self, epoch, logs=None):
    total, count = corpus_nll(self.model, self._eval)
    eval_loss = total / max(count, 1)
    row = {
        'epoch': epoch + 1,
        'step': (epoch + 1) * self._steps,
        'train_loss': round(float(logs['loss']), 4),
        'eval_loss': round(eval_loss, 4),
        'eval_perplexity': round(math.exp(eval_loss), 3),
        'eval_captions': self._eval_captions,
        'seconds': round(time.time() - self._start, 1),
    }
    self.history.append(row)
    log.info('epoch %(epoch)d step %(step)d: train loss %(train_loss).3f, '
             'eval loss %(eval_loss).3f, eval perplexity %(eval_perplexity).2f '
             '(%(seconds).0fs)', row)
    if eval_loss < self._best_loss:
      self._best_loss, self.best_epoch = eval_loss, epoch + 1
      self._best_weights = self.model.get_weights()
    elif epoch + 1 - self.best_epoch >= self._patience:
      log.info('no better eval loss for %d epochs: stopping early', self._patience)
      self.model.stop_training = True


# ------------------------------------------------------------------ export
def _raw_features(captions: tf.Tensor, raw_spec: Dict[str, Any]) -> Dict[str, Any]:
  """Raw-feature dict for the transform layer from bare caption strings.

  Ids are not known at serving time; zeros stand in for the passthrough
  columns. Each value takes the dense or sparse form the raw schema expects.
  """
  n = tf.shape(captions, out_type=tf.int64)[0]
  zeros = tf.zeros([n], tf.int64)
  columns = {config.CAPTION_KEY: captions, config.IMAGE_ID_KEY: zeros,
             config.CAPTION_ID_KEY: zeros}
  features = {}
  for key, values in columns.items():
    if isinstance(raw_spec[key], tf.io.VarLenFeature):
      indices = tf.stack([tf.range(n), tf.zeros([n], tf.int64)], axis=1)
      features[key] = tf.SparseTensor(indices, values, [n, 1])
    else:
      features[key] = tf.reshape(values, [-1, 1])
  return features


def _serving_parse_spec(raw_spec: Dict[str, Any]) -> Dict[str, Any]:
  """Parse spec for serving tf.Examples: only what preprocessing_fn reads,
  with defaults so a request carrying just a caption is accepted."""
  defaults = {config.CAPTION_KEY: '', config.IMAGE_ID_KEY: 0, config.CAPTION_ID_KEY: 0}
  spec = {}
  for key, default in defaults.items():
    feature = raw_spec[key]
    if isinstance(feature, tf.io.FixedLenFeature):
      feature = tf.io.FixedLenFeature(feature.shape, feature.dtype,
                                      default_value=[default] * max(1, int(np.prod(feature.shape))))
    spec[key] = feature
  return spec


def export_model(model: keras.Model, tft_output: tft.TFTransformOutput,
                 export_dir: str) -> None:
  """Saves a SavedModel with the transform graph and two signatures.

  `score_captions`: raw caption strings -> log-likelihood and perplexity.
  `serving_default`: serialized tf.Examples (as CsvExampleGen writes them).
  """
  model.tft_layer = tft_output.transform_features_layer()
  raw_spec = tft_output.raw_feature_spec()
  parse_spec = _serving_parse_spec(raw_spec)

  def score_transformed(transformed):
    inputs, targets = lm_inputs_and_targets(
        transformed[config.TOKEN_IDS_KEY], transformed[config.NUM_TOKENS_KEY])
    nll, mask = token_nll(targets, model(inputs, training=False))
    total = tf.reduce_sum(nll, axis=1)
    count = tf.reduce_sum(mask, axis=1)
    return {
        'log_likelihood': -total,
        'perplexity': tf.exp(total / count),
        'num_predicted_tokens': tf.cast(count, tf.int64),
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='captions')])
  def score_captions(captions):
    return score_transformed(model.tft_layer(_raw_features(captions, raw_spec)))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(serialized):
    parsed = tf.io.parse_example(serialized, parse_spec)
    return score_transformed(model.tft_layer(parsed))

  tf.saved_model.save(model, export_dir, signatures={
      'serving_default': serve_examples,
      SCORE_SIGNATURE: score_captions,
  })


# ------------------------------------------------------------------ run_fn
def _fit_schedule(train_steps: int, steps_per_epoch: int) -> Tuple[int, int]:
  """Epochs and steps per epoch whose product is the requested step count
  (rounded up to a whole epoch)."""
  epochs = max(1, round(train_steps / max(1, steps_per_epoch)))
  return epochs, math.ceil(train_steps / epochs)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """TFX Trainer entry point: trains, measures against baselines, exports."""
  hp = dict(config.trainer_config(), **(fn_args.custom_config or {}))
  keras.utils.set_random_seed(hp['seed'])
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  num_classes = (config.FIRST_WORD_ID + config.NUM_OOV_BUCKETS
                 + tft_output.vocabulary_size_by_name(config.VOCAB_NAME))

  train = _load_split(fn_args, fn_args.train_files, tft_output)
  evals = _load_split(fn_args, fn_args.eval_files, tft_output)
  log.info('loaded %d train / %d eval captions, %d classes',
           len(train[config.NUM_TOKENS_KEY]), len(evals[config.NUM_TOKENS_KEY]),
           num_classes)

  baseline_start = time.time()
  train_seqs, eval_seqs = sequences(train), sequences(evals)
  baseline_ppl = {
      'unigram_add_one': baselines.unigram_perplexity(train_seqs, eval_seqs, num_classes),
      'kneser_ney_trigram': baselines.kneser_ney_perplexity(train_seqs, eval_seqs, num_classes),
  }
  log.info('baselines: unigram perplexity %.2f, Kneser-Ney trigram %.2f (%.1fs)',
           baseline_ppl['unigram_add_one'], baseline_ppl['kneser_ney_trigram'],
           time.time() - baseline_start)

  eval_dataset = _lm_dataset(evals, EVAL_BATCH, training=False, seed=hp['seed'])
  if fn_args.eval_steps:
    eval_dataset = eval_dataset.take(fn_args.eval_steps)
  num_eval = len(eval_seqs)
  sample_batches = max(1, hp['epoch_eval_captions'] // EVAL_BATCH)
  epoch_eval = eval_dataset.take(sample_batches)
  epoch_eval_captions = min(num_eval, sample_batches * EVAL_BATCH)
  epochs, steps_per_epoch = _fit_schedule(fn_args.train_steps, hp['steps_per_epoch'])

  model = build_model(num_classes, hp['embed_dim'], hp['gru_units'], hp['dropout'],
                      output_bias=unigram_log_probs(train, num_classes))
  schedule = WarmupCosine(hp['learning_rate'], hp['warmup_steps'], epochs * steps_per_epoch)
  model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=1.0))
  epoch_logger = EpochLogger(epoch_eval, epoch_eval_captions, steps_per_epoch,
                             hp['patience'])
  train_start = time.time()
  model.fit(_lm_dataset(train, hp['batch_size'], training=True, seed=hp['seed']),
            epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
            callbacks=[epoch_logger])
  train_seconds = time.time() - train_start

  best = epoch_logger.history[epoch_logger.best_epoch - 1]
  if epoch_eval_captions == num_eval and not fn_args.eval_steps:
    eval_ppl = best['eval_perplexity']
  else:
    total, count = corpus_nll(model, eval_dataset)
    eval_ppl = round(math.exp(total / max(count, 1)), 3)
  metrics = {
      'eval_perplexity': eval_ppl,
      'baselines': {k: round(v, 3) for k, v in baseline_ppl.items()},
      'ratio_to_kneser_ney_trigram': round(eval_ppl / baseline_ppl['kneser_ney_trigram'], 4),
      'ratio_to_unigram': round(eval_ppl / baseline_ppl['unigram_add_one'], 4),
      'history': epoch_logger.history,
      'train_seconds': round(train_seconds, 1),
      'train_steps': len(epoch_logger.history) * steps_per_epoch,
      'best_epoch': epoch_logger.best_epoch,
      'num_train_captions': len(train_seqs),
      'num_eval_captions': len(eval_seqs),
      'num_eval_tokens': sum(len(s) + 1 for s in eval_seqs),
      'num_classes': num_classes,
      'hyperparameters': hp,
  }
  log.info('eval perplexity %.2f = %.2f x Kneser-Ney trigram, %.3f x unigram; '
           'trained %d steps in %.0fs', eval_ppl, metrics['ratio_to_kneser_ney_trigram'],
           metrics['ratio_to_unigram'], metrics['train_steps'], train_seconds)

  export_model(model, tft_output, fn_args.serving_model_dir)
  metrics_path = os.path.join(os.path.dirname(fn_args.serving_model_dir.rstrip('/')),
                              'metrics.json')
  tf.io.gfile.makedirs(os.path.dirname(metrics_path))
  with tf.io.gfile.GFile(metrics_path, 'w') as f:
    json.dump(metrics, f, indent=2)
