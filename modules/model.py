"""The caption language model: a tied-embedding GRU interpolated with a
Kneser-Ney model of its own train split, its schedule, its loss and the
epoch callback that evaluates it and stops early.

Keras 2 (`tf_keras`) on purpose: TFT 1.16's transform layer is a tf_keras
layer, and mixing it with Keras 3 fails (see modules/__init__.py).
"""

import hashlib
import logging
import math
import time
import weakref
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from modules import constants, features

log = logging.getLogger('coco_captions.trainer')


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
  boundary = tf.fill([batch, 1], constants.BOUNDARY_ID)
  inputs = tf.concat([boundary, token_ids], axis=1)
  padded = tf.concat([token_ids, tf.fill([batch, 1], constants.PAD_ID)], axis=1)
  end_marker = tf.one_hot(num_tokens, length, dtype=tf.int32) * constants.BOUNDARY_ID
  return inputs, padded + end_marker


def tokens_before(inputs: tf.Tensor) -> tf.Tensor:
  """The token before each input token (the boundary before the first)."""
  return tf.concat([tf.fill([tf.shape(inputs)[0], 1], constants.BOUNDARY_ID), inputs[:, :-1]],
                   axis=1)


def histories(inputs: tf.Tensor, length: int) -> List[tf.Tensor]:
  """The `length` tokens before each target, oldest first (the last is the
  input itself), boundary-padded as `baselines.ngrams` pads a caption with
  start markers: what a Kneser-Ney model of order `length + 1` conditions on."""
  found = []
  for _ in range(length):
    found.insert(0, inputs)
    inputs = tokens_before(inputs)
  return found


def label_nll(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """-log softmax(logits)[label], as log-sum-exp minus the label's logit: the
  same number as `sparse_softmax_cross_entropy_with_logits`, which also
  computes every probability (for its gradient). Of the 3.8 s that scoring
  the eval split took, that op was 2.3 s; log-sum-exp takes 0.9."""
  logits = tf.cast(logits, tf.float32)
  picked = tf.gather(logits, labels, batch_dims=labels.shape.rank)
  return tf.reduce_logsumexp(logits, axis=-1) - picked


def token_nll(targets: tf.Tensor, logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Per-position negative log-likelihood and the mask of predicted positions."""
  nll = label_nll(targets, logits)
  mask = tf.cast(tf.not_equal(targets, constants.PAD_ID), tf.float32)
  return nll * mask, mask


class _ContentNamedInitializer(tf.lookup.KeyValueTensorInitializer):
  """A key-value initializer whose table is shared under a name made of its
  content. The stock one, built eagerly, names the table after a process-wide
  counter, so the exported graph (and its fingerprint) depended on how much
  the process had built before the Trainer: two runs of one model published
  different `graph_def_program_hash`es. Tables with equal names hold equal
  contents, so sharing one between two loaded models is harmless."""

  def __init__(self, keys: np.ndarray, values: np.ndarray):
    keys, values = np.asarray(keys, np.int64), np.asarray(values, np.float32)
    digest = hashlib.sha256(keys.tobytes() + values.tobytes()).hexdigest()[:32]
    self._content_name = f'kneser_ney_{digest}'
    super().__init__(tf.constant(keys), tf.constant(values))

  @property
  def _shared_name(self):
    return self._content_name


class KneserNeyLayer(keras.layers.Layer):
  """A fitted `baselines.KneserNey` as lookup tables, so the exported model
  computes P(w | history) in TensorFlow exactly as the baseline does:

    p1(w)         unigram level (dense)
    pn(ctx, w)  = an[ctx, w] + bn[ctx] * p(n-1)(ctx minus its oldest token, w)

  where an is a context's discounted count share (0 where unseen) and bn its
  interpolation weight (1 for an unseen context: all mass to the lower order).
  """

  def __init__(self, tables: Dict[str, np.ndarray], num_classes: int, **kwargs):
    super().__init__(trainable=False, **kwargs)
    self.num_classes = num_classes
    self.order = 1 + sum(1 for name in tables if name.startswith('b') and name.endswith('_keys'))
    self.p1 = tf.constant(tables['p1'], tf.float32)
    self.shares = [self._table(tables[f'a{n}_keys'], tables[f'a{n}'], 0.0)
                   for n in range(2, self.order + 1)]
    self.backoffs = [self._table(tables[f'b{n}_keys'], tables[f'b{n}'], 1.0)
                     for n in range(2, self.order + 1)]

  @staticmethod
  def _table(keys, values, default):
    return tf.lookup.StaticHashTable(_ContentNamedInitializer(keys, values), default)

  def call(self, history: List[tf.Tensor], w: tf.Tensor) -> tf.Tensor:
    """Probabilities of tokens `w` after `history` (`order - 1` int tensors
    of w's shape, oldest first; `histories`)."""
    n = tf.constant(self.num_classes, tf.int64)
    w = tf.cast(w, tf.int64)
    p = tf.gather(self.p1, w)
    context, scale = tf.zeros_like(w), tf.ones_like(w)   # the empty context's key
    for token, shares, backoff in zip(reversed(history), self.shares, self.backoffs):
      context += tf.cast(token, tf.int64) * scale        # one token older
      scale *= n
      p = shares.lookup(context * n + w) + backoff.lookup(context) * p
    return p


class CaptionLM(keras.Model):
  """Tied-embedding GRU language model over caption token ids, interpolated
  with a Kneser-Ney model of its train split.

  The output layer reuses the input embedding matrix (weight tying: half the
  parameters, better generalisation on a small corpus). PAD can never be
  predicted (its logit is pinned very low), so the distribution covers the
  same classes as the count baselines. Training computes the 5k-way softmax
  only at the positions that are predicted (or a sampled estimate of it,
  `sampled_softmax`), which on CPU is most of the cost.

  Scoring (evaluation, serving) mixes the GRU's full softmax with the n-gram
  model, P = (1 - k) P_gru + k P_kn with k = `kneser_ney_weight`, once
  `attach_kneser_ney` gave it one: both are normalised over the same classes,
  so the mixture is too and its perplexity stays exact: with the 4-gram,
  ~4.4% lower than the same GRU's alone (bench/results/trainer-ablation-2026-12-07.md).
  Training fits the GRU alone.
  """

  def __init__(self, num_classes: int, embed_dim: int, gru_units: int,
               dropout: float, output_bias: np.ndarray = None, sampled_softmax: int = 0,
               sampler_weights: np.ndarray = None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    # A vocabulary of no more classes than that is trained on the full softmax
    # (the sampler draws distinct classes: it cannot draw more than there are,
    # PAD aside).
    self.sampled_softmax = sampled_softmax if sampled_softmax < num_classes - 1 else 0
    self._sampler_weights = (None if sampler_weights is None
                             else [float(w) for w in sampler_weights])
    self.kneser_ney = None
    self.kneser_ney_weight = 0.0
    self.embedding = keras.layers.Embedding(num_classes, embed_dim, name='embedding')
    self.dropout = keras.layers.Dropout(dropout)
    self.gru = keras.layers.GRU(gru_units, return_sequences=True, name='gru')
    self.project = (keras.layers.Dense(embed_dim, name='project')
                    if gru_units != embed_dim else None)
    initial_bias = (keras.initializers.Constant(output_bias) if output_bias is not None
                    else 'zeros')
    self.output_bias = self.add_weight(name='output_bias', shape=[num_classes],
                                       initializer=initial_bias)
    self._pad_logit = tf.one_hot(constants.PAD_ID, num_classes, on_value=-1e9, off_value=0.0)
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

  def attach_kneser_ney(self, tables: Dict[str, np.ndarray], weight: float) -> None:
    """Scores from now on mix in the model of `baselines.KneserNey.tables`
    (weight 0: the GRU alone)."""
    if weight > 0:
      self.kneser_ney = KneserNeyLayer(tables, self.num_classes, name='kneser_ney')
      self.kneser_ney_weight = float(weight)

  def _mix(self, gru_nll, history, w):
    """NLL of `w` after `history` under (1 - k) P_gru + k P_kn."""
    k = self.kneser_ney_weight
    return -tf.reduce_logsumexp(tf.stack([
        math.log(1.0 - k) - gru_nll,
        math.log(k) + tf.math.log(self.kneser_ney(history, w))]), axis=0)

  def _histories(self, inputs):
    return histories(inputs, self.kneser_ney.order - 1)

  def position_nll(self, inputs, targets):
    """[batch, time] NLL of every target under the model (0 at PAD) and the
    mask of predicted positions: what the exported signatures score."""
    nll, mask = token_nll(targets, self(inputs, training=False))
    if self.kneser_ney is None:
      return nll, mask
    return self._mix(nll, self._histories(inputs), targets) * mask, mask

  def predicted_nll(self, inputs, targets, training=False):
    """NLL of every predicted (non-PAD) target, as a flat vector: the softmax
    is computed only there, which on CPU is most of the cost. Training scores
    the GRU alone; otherwise the n-gram model is mixed in (`position_nll`'s
    numbers, in its row-major order)."""
    predicted = tf.not_equal(targets, constants.PAD_ID)
    hidden = tf.boolean_mask(self.hidden(inputs, training=training), predicted)
    labels = tf.boolean_mask(targets, predicted)
    nll = label_nll(labels, self.logits(hidden))
    if training or self.kneser_ney is None:
      return nll
    return self._mix(nll, [tf.boolean_mask(h, predicted) for h in self._histories(inputs)],
                     labels)

  @property
  def metrics(self):
    return [self.loss_tracker]

  def sampled_nll(self, inputs, targets):
    """Training's estimate of `predicted_nll` from `sampled_softmax` distinct
    classes, with the same tied weights and bias; scoring and the export keep
    the full softmax. The classes are drawn in proportion to their weights
    when the model was given them (`sampler_weights`), else log-uniformly
    (vocabulary ids are in frequency order)."""
    predicted = tf.not_equal(targets, constants.PAD_ID)
    hidden = tf.boolean_mask(self.hidden(inputs, training=True), predicted)
    labels = tf.cast(tf.boolean_mask(targets, predicted), tf.int64)[:, None]
    sampled = None
    if self._sampler_weights is not None:
      sampled = tf.random.fixed_unigram_candidate_sampler(
          labels, num_true=1, num_sampled=self.sampled_softmax, unique=True,
          range_max=self.num_classes, unigrams=self._sampler_weights)
    return tf.nn.sampled_softmax_loss(
        weights=self.embedding.embeddings, biases=self.output_bias, labels=labels,
        inputs=hidden, num_sampled=self.sampled_softmax, num_classes=self.num_classes,
        sampled_values=sampled, remove_accidental_hits=True)

  # Not converted by AutoGraph: nothing here or below branches on a tensor,
  # and converting the Keras layers' Python source took ~6.5 s of a ~9 s
  # first step (measured with cProfile), in every Trainer run.
  @tf.autograph.experimental.do_not_convert
  def train_step(self, data):
    inputs, targets = data
    with tf.GradientTape() as tape:
      nll = (self.sampled_nll(inputs, targets) if self.sampled_softmax
             else self.predicted_nll(inputs, targets, training=True))
      loss = tf.reduce_mean(nll)
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


def target_counts(split: Dict[str, np.ndarray], num_classes: int) -> np.ndarray:
  """How often each class is a target in `split` (PAD: never)."""
  _, targets = lm_inputs_and_targets(split[features.TOKEN_IDS_KEY], split[features.NUM_TOKENS_KEY])
  counts = np.bincount(targets.numpy().ravel(), minlength=num_classes).astype(np.float64)
  counts[constants.PAD_ID] = 0
  return counts


def unigram_log_probs(counts: np.ndarray) -> np.ndarray:
  """Add-one log frequencies of the targets: the output bias starts at the
  unigram model instead of uniform, which shortens the first epoch's work."""
  return np.log((counts + 1.0) / (counts + 1.0).sum()).astype(np.float32)


def sampler_weights(counts: np.ndarray, distortion: float) -> np.ndarray:
  """How likely the sampled softmax draws each class: its add-one target count
  to the power `distortion` (PAD: never). Drawn by their counts (1.0), the
  sample holds the classes most of the softmax's normaliser is made of, so
  training's estimate is closer to the full softmax: 1.2% lower perplexity
  than log-uniform draws at the same step cost; flatter (0.75, 0.5) was worse
  (bench/results/trainer-ablation-2026-12-07.md)."""
  weights = (counts + 1.0) ** distortion
  weights[constants.PAD_ID] = 0.0
  return weights


def build_model(num_classes: int, embed_dim: int, gru_units: int, dropout: float,
                output_bias: np.ndarray = None, sampled_softmax: int = 0,
                sampler_weights: np.ndarray = None) -> CaptionLM:
  model = CaptionLM(num_classes, embed_dim, gru_units, dropout, output_bias,
                    sampled_softmax=sampled_softmax, sampler_weights=sampler_weights,
                    name='caption_lm')
  model(tf.zeros([1, 1], tf.int32))  # create the variables
  return model



# ------------------------------------------------------------------ eval
_BATCH_NLL = weakref.WeakKeyDictionary()   # model -> its traced batch NLL function


def _batch_nll(model: CaptionLM):
  """The model's batch NLL as one tf.function, traced once with unknown batch
  and length: per-epoch evaluation then reuses the graph instead of tracing
  the GRU again every epoch (and for every new masked shape)."""
  if model not in _BATCH_NLL:
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec], autograph=False)
    def batch_nll(inputs, targets):
      nll = model.predicted_nll(inputs, targets)
      return tf.reduce_sum(nll), tf.cast(tf.size(nll), tf.float32)
    _BATCH_NLL[model] = batch_nll
  return _BATCH_NLL[model]


def batch_nlls(model: CaptionLM, dataset: tf.data.Dataset) -> List[Tuple[float, int]]:
  """(Total NLL, predicted-token count) of each batch of a dataset.

  Like training, the softmax is computed only where a token is predicted:
  evaluation cost then follows the real tokens, not the padded length.
  """
  batch_nll = _batch_nll(model)
  found = []
  for inputs, targets in dataset:
    nll, n = batch_nll(tf.cast(inputs, tf.int32), tf.cast(targets, tf.int32))
    found.append((float(nll), int(n)))
  return found


def corpus_nll(model: CaptionLM, dataset: tf.data.Dataset) -> Tuple[float, int]:
  """Total NLL and predicted-token count over a dataset (exact perplexity)."""
  return _summed(batch_nlls(model, dataset))


def _summed(batches: List[Tuple[float, int]]) -> Tuple[float, int]:
  return sum(b[0] for b in batches), sum(b[1] for b in batches)


class EpochLogger(keras.callbacks.Callback):
  """Logs train loss, eval loss and eval perplexity after each epoch.

  Per epoch it scores a fixed sample of the eval split (`eval_captions` of
  them; all of a small split), so the cost of watching training does not grow
  with the data; the final perplexity is computed on the whole split. Given
  that split (`whole`, whose first `sample_batches` batches are the sample),
  the last epoch scores it once and takes the sample's loss from its first
  batches: the final perplexity is then `whole_score`, and the sample is not
  scored twice.

  Early stopping: after `patience` epochs without a better eval loss,
  training stops and the best epoch's weights are restored. On the full
  val2017 captions the loss falls every epoch, so nothing changes there; on a
  small sample (data/) it keeps a model that memorised its 800 captions from
  being exported.
  """

  def __init__(self, eval_dataset: tf.data.Dataset, eval_captions: int, steps_per_epoch: int,
               patience: int, whole: tf.data.Dataset = None, sample_batches: int = 0):
    super().__init__()
    self._eval = eval_dataset
    self._whole, self._sample_batches = whole, sample_batches
    self.whole_score = None       # (NLL, tokens) of the whole split after the last epoch
    self._eval_captions = eval_captions
    self._steps = steps_per_epoch
    self.steps_per_epoch = steps_per_epoch
    self.train_seconds = 0.0      # set by the caller when fit() returns
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
    if self._whole is not None and epoch + 1 == self.params['epochs']:
      batches = batch_nlls(self.model, self._whole)
      self.whole_score = _summed(batches)
      total, count = _summed(batches[:self._sample_batches])
    else:
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
    log.info('epoch %(epoch)d step %(step)d: train loss %(train_loss).3f%(sampled)s; on '
             '%(eval_captions)s eval captions: loss %(eval_loss).3f, perplexity '
             '%(eval_perplexity).2f (%(seconds).0fs)',
             dict(row, eval_captions=f'{self._eval_captions:,}', sampled=(
                 f' (GRU, {self.model.sampled_softmax}-class sampled softmax)'
                 if self.model.sampled_softmax else '')))
    if eval_loss < self._best_loss:
      self._best_loss, self.best_epoch = eval_loss, epoch + 1
      self._best_weights = self.model.get_weights()
    elif epoch + 1 - self.best_epoch >= self._patience:
      log.info('no better eval loss for %d epochs: stopping early', self._patience)
      self.model.stop_training = True
