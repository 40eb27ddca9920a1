"""The Trainer's data: transformed examples -> arrays -> tf.data pipelines.

The token features of a split are a few MB even at 400k captions, so they are
read into memory once; training shuffles and repeats them, evaluation reads
them in order, and the count baselines see exactly the same tokens.

Images (with images on) stay JPEG bytes in the transformed examples and are
decoded where a model reads them: `image_dataset` is that input pipeline.
The language model reads only the tokens, so `run_fn` does not call it.
"""

from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.public import tfxio
from tensorflow_metadata.proto.v0 import schema_pb2

from modules import features
from modules.model import lm_inputs_and_targets
from modules.preprocessing import normalized_images


def schema_subset(schema: schema_pb2.Schema, keys) -> schema_pb2.Schema:
  """The schema's features named in `keys` only, so reading parses just those
  (with images on, each example also holds its JPEG)."""
  subset = schema_pb2.Schema()
  subset.CopyFrom(schema)
  del subset.feature[:]
  subset.feature.extend(f for f in schema.feature if f.name in keys)
  return subset


def load_split(fn_args: FnArgs, files: List[str],
                tft_output: tft.TFTransformOutput) -> Dict[str, np.ndarray]:
  """Reads the token features of one split of transformed examples into
  memory (a few MB), in caption-id order: the model then depends on the
  examples alone, not on how many files an engine wrote them to or in which
  order (DirectRunner writes one, Flink one per parallel task, in its own
  order), so the same data trains the same model on every Beam runner."""
  keys = (features.TOKEN_IDS_KEY, features.NUM_TOKENS_KEY, features.TRANSFORMED_CAPTION_ID_KEY)
  dataset = fn_args.data_accessor.tf_dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(batch_size=4096, num_epochs=1, shuffle=False),
      schema_subset(tft_output.transformed_metadata.schema, keys))
  parts = {key: [] for key in keys}
  for batch in dataset:
    for key in keys:
      parts[key].append(batch[key].numpy())
  if not parts[features.TOKEN_IDS_KEY]:
    raise ValueError(f'No transformed examples in {files}')
  order = np.argsort(np.concatenate(parts[features.TRANSFORMED_CAPTION_ID_KEY]).reshape(-1),
                     kind='stable')
  return {
      features.TOKEN_IDS_KEY: np.concatenate(parts[features.TOKEN_IDS_KEY])[order],
      features.NUM_TOKENS_KEY: np.concatenate(parts[features.NUM_TOKENS_KEY]).reshape(-1)[order],
  }


def image_dataset(dataset_factory, files: List[str], tft_output: tft.TFTransformOutput,
                  batch_size: int, size: int) -> tf.data.Dataset:
  """Transformed examples -> batches of {image_id, image float32 [b, size, size, 3]}.

  The input pipeline of a model that reads pictures: it parses only the ids
  and the JPEG bytes and decodes them here, with the serving graph's function
  (`normalized_images`), so training and serving see the same pixels.
  `dataset_factory` is the Trainer's `fn_args.data_accessor.tf_dataset_factory`.
  """
  keys = (features.TRANSFORMED_IMAGE_ID_KEY, features.TRANSFORMED_IMAGE_KEY)
  dataset = dataset_factory(
      files,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=False),
      schema_subset(tft_output.transformed_metadata.schema, keys))

  def decode(batch):
    flat = {key: tf.reshape(batch[key], [-1]) for key in keys}
    return dict(flat, **{features.TRANSFORMED_IMAGE_KEY: normalized_images(
        flat[features.TRANSFORMED_IMAGE_KEY], size)})
  return dataset.map(decode)


def lm_dataset(split: Dict[str, np.ndarray], batch_size: int,
               training: bool, seed: int, bucketed: bool = False) -> tf.data.Dataset:
  """(inputs, targets) batches: shuffled and repeated for training, in order
  for evaluation. `bucketed` (training): each batch holds captions of one
  length bucket and is cut to its longest caption, so the GRU runs over
  about the real tokens instead of the padded length (the mean caption keeps
  10.4 of 16 tokens)."""
  token_ids, num_tokens = split[features.TOKEN_IDS_KEY], split[features.NUM_TOKENS_KEY]
  dataset = tf.data.Dataset.from_tensor_slices((token_ids, num_tokens))
  if training:
    dataset = dataset.shuffle(len(num_tokens), seed=seed, reshuffle_each_iteration=True).repeat()
  if training and bucketed:
    bounds = length_bucket_bounds(token_ids.shape[1])
    dataset = dataset.bucket_by_sequence_length(
        lambda ids, n: tf.cast(n, tf.int32), bounds, [batch_size] * (len(bounds) + 1),
        drop_remainder=True, no_padding=True)
    dataset = dataset.map(lambda ids, n: lm_inputs_and_targets(ids[:, :tf.reduce_max(n)], n))
  else:
    dataset = dataset.batch(batch_size, drop_remainder=training).map(lm_inputs_and_targets)
  return dataset.prefetch(2).with_options(_NO_AUTOTUNE)


# The in-memory token arrays need no tuning, and with autotuning on, destroying
# the spent training iterator at the end of fit joins tf.data's `tf_data_model`
# thread: seen waiting ~23 s in the Trainer (the last epoch at 68 s, fit
# returning at 91 s; py-spy: RootDataset::Iterator::~Iterator).
_NO_AUTOTUNE = tf.data.Options()
_NO_AUTOTUNE.autotune.enabled = False


def length_bucket_bounds(max_tokens: int) -> List[int]:
  """One bucket per length over the top half of the kept lengths, one for
  the shorter ones: COCO captions cluster at 8-12 tokens, so most batches
  are cut by several positions while short, rare lengths still fill a batch."""
  return list(range(max(2, max_tokens // 2 + 1), max_tokens))


def sequences(split: Dict[str, np.ndarray]) -> List[List[int]]:
  """The kept token ids of each caption, without padding (for the baselines)."""
  return [list(row[:n]) for row, n in
          zip(split[features.TOKEN_IDS_KEY].tolist(), split[features.NUM_TOKENS_KEY].tolist())]
