"""Export: a plain TF SavedModel carrying the transform graph, so it answers
raw caption strings (and serialized tf.Examples) with TensorFlow alone.

Besides each caption's scores, both scoring signatures return the
Kneser-Ney trigram perplexity the Trainer measured on the same split: the
model carries the baseline it must beat, which is how the Evaluator's gate
(modules/evaluation.py) learns it. A third signature, `transformed_features`,
gives TFMA the caption-length slice of each example. With images on, a
fourth, `decoded_images`, takes tf.Examples carrying raw JPEG bytes and
returns the pixels a model reads (the transformed examples keep the JPEG; it
is decoded here, in the serving graph, as in the Trainer's input pipeline).

As in the TFX penguin template, the serving functions attach the TFT layer:
what the model is served is what it was trained on, preprocessing included.
"""

from typing import Any, Dict

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from modules import constants, features
from modules.model import lm_inputs_and_targets
from modules.preprocessing import normalized_images


def _raw_features(captions: tf.Tensor, raw_spec: Dict[str, Any]) -> Dict[str, Any]:
  """Raw-feature dict for the transform layer from bare caption strings.

  Ids are not known at serving time; zeros stand in for the passthrough
  columns. Each value takes the dense or sparse form the raw schema expects.
  """
  n = tf.shape(captions, out_type=tf.int64)[0]
  zeros = tf.zeros([n], tf.int64)
  columns = {features.CAPTION_KEY: captions, features.IMAGE_ID_KEY: zeros,
             features.CAPTION_ID_KEY: zeros}
  raw = {}
  for key, values in columns.items():
    if key not in raw_spec:
      continue
    if isinstance(raw_spec[key], tf.io.VarLenFeature):
      indices = tf.stack([tf.range(n), tf.zeros([n], tf.int64)], axis=1)
      raw[key] = tf.SparseTensor(indices, values, [n, 1])
    else:
      raw[key] = tf.reshape(values, [-1, 1])
  return raw


def _serving_parse_spec(raw_spec: Dict[str, Any], with_image: bool = False) -> Dict[str, Any]:
  """Parse spec for serving tf.Examples: only what preprocessing_fn reads,
  with defaults so a request carrying just a caption is accepted. The image
  is parsed only `with_image`: scoring never reads it, and the Evaluator
  scores every eval example."""
  defaults = {features.CAPTION_KEY: '', features.IMAGE_ID_KEY: 0, features.CAPTION_ID_KEY: 0}
  if with_image:
    defaults[features.IMAGE_KEY] = ''
  spec = {}
  for key, default in defaults.items():
    if key not in raw_spec:
      continue
    feature = raw_spec[key]
    if isinstance(feature, tf.io.FixedLenFeature):
      feature = tf.io.FixedLenFeature(feature.shape, feature.dtype,
                                      default_value=[default] * max(1, int(np.prod(feature.shape))))
    spec[key] = feature
  return spec


def length_buckets(num_tokens: tf.Tensor) -> tf.Tensor:
  """[batch] kept token counts -> [batch] names of constants.LENGTH_BUCKETS."""
  num_tokens = tf.reshape(tf.cast(num_tokens, tf.int64), [-1])
  names = tf.constant([name for _, name in constants.LENGTH_BUCKETS])
  index = tf.zeros_like(num_tokens)
  for bound, _ in constants.LENGTH_BUCKETS[:-1]:
    index += tf.cast(num_tokens > bound, tf.int64)
  return tf.gather(names, index)


def _signature(input_name: str):
  """A serving function of one [batch] string tensor named `input_name`.
  AutoGraph is off: nothing in them branches on a tensor in Python, and
  converting the Keras layers' source is most of the cost of tracing."""
  return tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=input_name)],
                     autograph=False)


def export_model(model: keras.Model, tft_output: tft.TFTransformOutput,
                 export_dir: str, kneser_ney_perplexity: float,
                 image_size: int = constants.IMAGE_SIZE) -> None:
  """Saves a SavedModel with the transform graph and its signatures.

  `score_captions`: raw caption strings -> log-likelihood and perplexity.
  `serving_default`: serialized tf.Examples (as CsvExampleGen writes them).
  `transformed_features`: serialized tf.Examples -> the length slice (TFMA).
  `decoded_images` (images on): serialized tf.Examples with JPEG bytes ->
  float32 [batch, image_size, image_size, 3].
  """
  model.tft_layer = tft_output.transform_features_layer()
  raw_spec = tft_output.raw_feature_spec()
  parse_spec = _serving_parse_spec(raw_spec)
  baseline = tf.constant(kneser_ney_perplexity, tf.float32)

  def score_transformed(transformed):
    inputs, targets = lm_inputs_and_targets(
        transformed[features.TOKEN_IDS_KEY], transformed[features.NUM_TOKENS_KEY])
    nll, mask = model.position_nll(inputs, targets)
    total = tf.reduce_sum(nll, axis=1)
    count = tf.reduce_sum(mask, axis=1)
    return {
        constants.LOG_LIKELIHOOD_OUTPUT: -total,
        constants.PERPLEXITY_OUTPUT: tf.exp(total / count),
        constants.PREDICTED_TOKENS_OUTPUT: tf.cast(count, tf.int64),
        constants.KNESER_NEY_OUTPUT: tf.fill(tf.shape(total), baseline),
    }

  @_signature('captions')
  def score_captions(captions):
    return score_transformed(model.tft_layer(_raw_features(captions, raw_spec)))

  @_signature('examples')
  def serve_examples(serialized):
    parsed = tf.io.parse_example(serialized, parse_spec)
    return score_transformed(model.tft_layer(parsed))

  @_signature('examples')
  def transformed_features(serialized):
    transformed = model.tft_layer(tf.io.parse_example(serialized, parse_spec))
    return {features.LENGTH_BUCKET_KEY: length_buckets(transformed[features.NUM_TOKENS_KEY])}

  signatures = {
      constants.SERVING_SIGNATURE: serve_examples,
      constants.SCORE_SIGNATURE: score_captions,
      constants.TRANSFORM_SIGNATURE: transformed_features,
  }
  if features.TRANSFORMED_IMAGE_KEY in tft_output.transformed_feature_spec():
    image_parse_spec = _serving_parse_spec(raw_spec, with_image=True)

    @_signature('examples')
    def decoded_images(serialized):
      transformed = model.tft_layer(tf.io.parse_example(serialized, image_parse_spec))
      images = tf.reshape(transformed[features.TRANSFORMED_IMAGE_KEY], [-1])
      return {features.TRANSFORMED_IMAGE_KEY: normalized_images(images, image_size)}
    signatures[constants.IMAGE_SIGNATURE] = decoded_images
  model.save(export_dir, save_format='tf', signatures=signatures, include_optimizer=False,
             save_traces=False)
