"""tf.Transform preprocessing of COCO captions (and their images, when present).

`clean_captions` is the one home of the text cleaning: written in TensorFlow
string ops so the same code runs inside the transform graph (and therefore in
the exported model) and can be called on batches from any Beam stage
(`clean_caption_texts`, used by the image stage in pipeline/images/).
`decode_and_resize` is likewise the one home of image decoding: the image
stage resizes with it, and a model decodes the transformed examples' JPEG
bytes with it (`normalized_images`: the Trainer's input pipeline,
`modules.inputs.image_dataset`, and the exported serving graph).
"""

from typing import Any, Dict, List, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_transform as tft

from modules import constants, features

# Apostrophes are deleted rather than split on, so "man's" stays one token.
_APOSTROPHES = "['\u2019]"
# Anything that is neither a letter nor a digit separates tokens.
_SEPARATORS = r'[^\p{L}\p{N}]+'


def clean_captions(captions: tf.Tensor) -> tf.Tensor:
  """Lowercases and normalises punctuation/whitespace of a string tensor.

  Punctuation carries no meaning for a caption language model and would make
  perplexity look better than it is (almost every caption ends in '.'), so
  every run of non-alphanumeric characters becomes a single space.
  """
  text = tf.strings.lower(captions, encoding='utf-8')
  text = tf.strings.regex_replace(text, _APOSTROPHES, '')
  text = tf.strings.regex_replace(text, _SEPARATORS, ' ')
  return tf.strings.strip(text)


def clean_caption_texts(captions: Sequence[Union[str, bytes]]) -> List[str]:
  """`clean_captions` on a Python list, eagerly: one TensorFlow call per batch,
  so a Beam stage cleans exactly as the transform graph does."""
  if not captions:
    return []
  cleaned = clean_captions(tf.constant(list(captions), dtype=tf.string)).numpy()
  return [text.decode('utf-8') for text in cleaned.tolist()]


def decode_and_resize(data: tf.Tensor, size: int) -> tf.Tensor:
  """Encoded image bytes (JPEG, PNG, GIF, BMP) -> float32 [size, size, 3] in [0, 1].

  Grey and RGBA images become RGB; the whole frame is scaled to a square
  (aspect ratio not kept, nothing cropped: a caption may name anything in the
  picture), with antialiasing so downscaling does not alias. Raises
  tf.errors.InvalidArgumentError for bytes that are not a decodable image.
  """
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image = tf.image.convert_image_dtype(image, tf.float32)
  image = tf.image.resize(image, [size, size], method='bilinear', antialias=True)
  return tf.clip_by_value(image, 0.0, 1.0)


def normalized_images(images: tf.Tensor, size: int) -> tf.Tensor:
  """[batch] image bytes -> float32 [batch, size, size, 3] in [0, 1].

  Where a model reads pictures, this is how it decodes the JPEG bytes the
  transformed examples carry. Empty bytes (an example without an image) give
  a black image rather than an error.
  """
  def one(data):
    return tf.cond(tf.strings.length(data) > 0,
                   lambda: decode_and_resize(data, size),
                   lambda: tf.zeros([size, size, 3], tf.float32))
  return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def tokenize(captions: tf.Tensor) -> tf.RaggedTensor:
  """Cleans a [batch] string tensor and splits it into a ragged [batch, None]."""
  return tf.strings.split(clean_captions(captions))


def _dense_column(tensor: Any, default: Any) -> tf.Tensor:
  """Turns a [batch, 1] dense or sparse raw feature into a [batch] tensor.

  SchemaGen with `infer_feature_shape=True` makes always-present columns dense
  and the others sparse; handling both keeps the function schema-agnostic.
  """
  if isinstance(tensor, tf.sparse.SparseTensor):
    tensor = tf.sparse.to_dense(
        tf.sparse.reset_shape(tensor, [tf.shape(tensor, out_type=tf.int64)[0], 1]),
        default_value=default)
  return tf.reshape(tensor, [-1])


# Ids passed through when the raw data has them (the pipeline's CSV does; the
# Beam docs' standalone example feeds captions alone).
_PASSTHROUGH_IDS = ((features.IMAGE_ID_KEY, features.TRANSFORMED_IMAGE_ID_KEY),
                    (features.CAPTION_ID_KEY, features.TRANSFORMED_CAPTION_ID_KEY))


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Dict[str, Any]] = None
                     ) -> Dict[str, tf.Tensor]:
  """Raw caption rows -> fixed-length token ids plus a full-pass length feature.

  Outputs (names in `modules.features`):
    token_ids:    int64 [MAX_TOKENS]; vocabulary ids shifted by FIRST_WORD_ID,
                  the OOV bucket after them, PAD_ID after the caption's end.
    num_tokens:   int64; tokens kept after truncation (the model's target count).
    length_ratio: float32; untruncated token count / mean count over the
                  analysed (train) data, a full-pass statistic.
    image_id, caption_id: passed through for joins and the split check, when
                  the raw data has them (a caption-only input has neither).
    image:        string; only when the raw examples carry images
                  (ImageExampleGen's output). The example's picture, still
                  encoded: the IMAGE_SIZE x IMAGE_SIZE RGB JPEG ImageExampleGen
                  wrote, byte for byte (b'' when the example has none).

  The image stays encoded because decoded pixels are ~30x the JPEG (196 KB of
  float32 per caption at 128x128, five captions per COCO image) and would be
  written by Transform and read back by the Trainer for every caption. A
  model decodes where it reads, with `normalized_images`: the Trainer's input
  pipeline (`modules.inputs.image_dataset`) and the exported serving graph
  (the `decoded_images` signature), so serving takes raw JPEG bytes and both
  see the same pixels.
  """
  custom_config = custom_config or {}
  vocab_size = custom_config.get('vocab_size', constants.VOCAB_SIZE)
  max_tokens = custom_config.get('max_tokens', constants.MAX_TOKENS)

  captions = _dense_column(inputs[features.CAPTION_KEY], default='')
  tokens = tokenize(captions)
  word_ids = tft.compute_and_apply_vocabulary(
      tokens,
      top_k=vocab_size,
      num_oov_buckets=constants.NUM_OOV_BUCKETS,
      vocab_filename=constants.VOCAB_NAME)
  kept = word_ids[:, :max_tokens] + constants.FIRST_WORD_ID
  token_ids = kept.to_tensor(
      default_value=constants.PAD_ID, shape=[None, max_tokens])

  full_length = tf.cast(tokens.row_lengths(), tf.float32)
  outputs = {
      features.TOKEN_IDS_KEY: token_ids,
      features.NUM_TOKENS_KEY: kept.row_lengths(),
      features.LENGTH_RATIO_KEY: full_length / tft.mean(full_length),
  }
  for raw_key, key in _PASSTHROUGH_IDS:
    if raw_key in inputs:
      outputs[key] = _dense_column(inputs[raw_key], default=tf.constant(-1, tf.int64))
  if features.IMAGE_KEY in inputs:
    outputs[features.TRANSFORMED_IMAGE_KEY] = _dense_column(inputs[features.IMAGE_KEY], default='')
  return outputs
