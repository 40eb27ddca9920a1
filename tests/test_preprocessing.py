"""preprocessing_fn run standalone with tft_beam.AnalyzeAndTransformDataset."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from modules.preprocessing import clean_captions, preprocessing_fn
from modules import constants, features


CAPTIONS = [
    (1, 10, 'A Man riding a horse.'),
    (2, 11, "The man's HORSE,  eats   grass!"),
    (3, 12, 'Café — naïve dog\n'),
]
SMALL = {'vocab_size': 5, 'max_tokens': 4}


def analyze_and_transform(rows, feature_spec, custom_config):
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))
  output_dir = tempfile.mkdtemp()
  with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
    (transformed, _), transform_fn = (
        (rows, metadata)
        | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, custom_config)))
    _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
  return sorted(transformed, key=lambda r: r['caption_id']), tft.TFTransformOutput(output_dir)


@pytest.fixture(scope='module')
def transformed():
  spec = {'caption': tf.io.FixedLenFeature([1], tf.string),
          'image_id': tf.io.FixedLenFeature([1], tf.int64),
          'id': tf.io.FixedLenFeature([1], tf.int64)}
  rows = [{'image_id': [i], 'id': [c], 'caption': [t.encode()]} for i, c, t in CAPTIONS]
  return analyze_and_transform(rows, spec, SMALL)


def test_vocabulary_is_top_k_by_frequency_then_token(transformed):
  _, output = transformed
  # 'a' and 'horse' occur twice; ties are broken by descending token bytes.
  assert output.vocabulary_by_name(constants.VOCAB_NAME) == [
      b'horse', b'a', b'the', b'riding', 'naïve'.encode()]


def test_token_ids_lowercased_truncated_padded_with_oov(transformed):
  rows, _ = transformed
  # ids: horse=2 a=3 the=4 riding=5 naïve=6, OOV=7, PAD=0 (vocab id + FIRST_WORD_ID)
  assert [list(r[features.TOKEN_IDS_KEY]) for r in rows] == [
      [3, 7, 5, 3],   # a man riding a | horse (truncated to 4)
      [4, 7, 2, 7],   # the mans horse eats | grass
      [7, 6, 7, 0],   # café naïve dog, padded
  ]
  assert [r[features.NUM_TOKENS_KEY] for r in rows] == [4, 4, 3]


def test_length_ratio_uses_full_pass_mean_of_untruncated_lengths(transformed):
  rows, _ = transformed
  mean = (5 + 5 + 3) / 3
  np.testing.assert_allclose([r[features.LENGTH_RATIO_KEY] for r in rows],
                             [5 / mean, 5 / mean, 3 / mean], rtol=1e-6)


def test_ids_pass_through(transformed):
  rows, _ = transformed
  assert [(r['image_id'], r['caption_id']) for r in rows] == [(1, 10), (2, 11), (3, 12)]


def test_sparse_caption_column_and_empty_caption():
  """A caption column SchemaGen marks optional arrives as a SparseTensor."""
  spec = {'caption': tf.io.VarLenFeature(tf.string),
          'image_id': tf.io.FixedLenFeature([1], tf.int64),
          'id': tf.io.FixedLenFeature([1], tf.int64)}
  rows = [{'image_id': [1], 'id': [1], 'caption': [b'a dog']},
          {'image_id': [2], 'id': [2], 'caption': []}]
  out, _ = analyze_and_transform(rows, spec, SMALL)
  assert [r[features.NUM_TOKENS_KEY] for r in out] == [2, 0]
  assert list(out[1][features.TOKEN_IDS_KEY]) == [0, 0, 0, 0]


def test_beam_docs_standalone_snippet_captions_alone():
  """The Apache Beam docs' own check of preprocessing_fn: three captions, a
  feature spec of `caption` alone (a scalar string), default config. There
  are no ids to pass through, so none come out (it raised KeyError: 'image_id')."""
  raw_data = [{'caption': 'A bicycle replica with a clock as the front wheel.'},
              {'caption': 'A black Honda motorcycle parked in front of a garage.'},
              {'caption': 'A room with blue walls and a white sink and door.'}]
  feature_spec = dict(caption=tf.io.FixedLenFeature([], tf.string))
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))
  with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
    (transformed, _), _ = (
        (raw_data, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
  assert sorted(transformed[0]) == [
      features.LENGTH_RATIO_KEY, features.NUM_TOKENS_KEY, features.TOKEN_IDS_KEY]
  assert [int(r[features.NUM_TOKENS_KEY]) for r in transformed] == [10, 10, 11]
  assert all(len(r[features.TOKEN_IDS_KEY]) == constants.MAX_TOKENS for r in transformed)
  assert np.isclose(np.mean([r[features.LENGTH_RATIO_KEY] for r in transformed]), 1.0)


@pytest.mark.parametrize('raw, clean', [
    ('A Man riding a horse.', 'a man riding a horse'),
    ("The man's  dog\n", 'the mans dog'),
    ('ÉCOLE ; Café—naïve', 'école café naïve'),
    ('  2 dogs,3 cats  ', '2 dogs 3 cats'),
    ('"Quoted"  caption ', 'quoted caption'),
    ('It\u2019s', 'its'),
    ('...', ''),
])
def test_clean_captions(raw, clean):
  assert clean_captions(tf.constant([raw])).numpy()[0].decode() == clean
