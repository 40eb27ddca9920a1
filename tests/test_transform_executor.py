"""The batched-I/O Transform executor writes exactly what the stock one writes."""

import os

import pytest
import tensorflow as tf

from bench import compare_transform as compare
from pipeline.components import transform_executor
from tests.conftest import settings_of, DATA_ROOT


def write_records(path, records):
  with tf.io.TFRecordWriter(path, options='GZIP' if path.endswith('.gz') else '') as writer:
    for record in records:
      writer.write(record)


@pytest.mark.parametrize('name', ['part.gz', 'part.tfrecord'])
def test_reads_every_record_in_order_and_in_batches(tmp_path, name):
  records = [f'record {i}'.encode() for i in range(25)]
  path = str(tmp_path / name)
  write_records(path, records)
  batches = list(transform_executor.read_record_batches(path, 10))
  assert [len(b) for b in batches] == [10, 10, 5]
  assert [r for b in batches for r in b] == records


def test_commit_names_files_like_the_stock_sink_and_drops_the_temp_dir(tmp_path):
  temp = tmp_path / '.temp-x'
  temp.mkdir()
  for name, records in (('b.gz', [b'2']), ('a.gz', [b'1']), ('failed-attempt.gz', [b'x'])):
    write_records(str(temp / name), records)
  out = str(tmp_path / 'transformed_examples')
  assert transform_executor.commit_files([str(temp / 'b.gz'), str(temp / 'a.gz')], out, str(temp)) == 2
  assert sorted(os.listdir(tmp_path)) == ['transformed_examples-00000-of-00002.gz',
                                          'transformed_examples-00001-of-00002.gz']
  first = tf.data.TFRecordDataset(out + '-00000-of-00002.gz', compression_type='GZIP')
  assert [r.numpy() for r in first] == [b'1']


def test_an_empty_split_still_gets_one_empty_file(tmp_path):
  out = str(tmp_path / 'Split-eval' / 'transformed_examples')
  os.makedirs(os.path.dirname(out))
  assert transform_executor.commit_files([], out, str(tmp_path / 'Split-eval' / '.temp-y')) == 1
  assert os.listdir(tmp_path / 'Split-eval') == ['transformed_examples-00000-of-00001.gz']


def test_the_pipeline_uses_it_by_default_and_stock_on_request():
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top
  def transform(**kwargs):
    p = create_pipeline('t', '/tmp/root', '/tmp/data', module_file=__file__,
                        serving_model_dir='/tmp/serving', **kwargs)
    return [c for c in p.components if c.id == 'Transform'][0]
  assert transform().executor_spec.executor_class is transform_executor.Executor
  assert 'tfx.components.transform' in transform(
      transform_executor='stock').executor_spec.executor_class.__module__
  with pytest.raises(ValueError, match='unknown Transform executor'):
    transform(transform_executor='quick')


@pytest.mark.slow
def test_same_vocabulary_and_transformed_examples_as_stock(pipeline_run, tmp_path):
  """The e2e run used the fast executor; one stock run on the same data."""
  fast = compare.transform_outputs(pipeline_run.pipeline_root)
  compare.run_to_transform(DATA_ROOT, str(tmp_path), 'stock')
  stock = compare.transform_outputs(settings_of({'COCO_OUTPUT_DIR': str(tmp_path)}).run.pipeline_root)
  assert sum(len(s) for s in stock[1].values()) > 1000
  assert compare.differences(stock, fast) == []


def test_differences_are_found_and_named():
  ex = {'train': {1: (('caption_id', (1,)), ('token_ids', (5, 6)))}, 'eval': {}}
  changed = {'train': {1: (('caption_id', (1,)), ('token_ids', (5, 7)))}, 'eval': {2: ()}}
  assert compare.differences((b'v', ex), (b'v', ex)) == []
  found = compare.differences((b'v', ex), (b'w', changed))
  assert found[0] == 'vocabulary files differ'
  assert 'eval: 0 vs 1 examples' in found and any('caption id 1' in f for f in found)
