"""The pyarrow ExampleGen executor writes exactly what the stock one writes."""

import glob
import json
import os

import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as stock
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from pipeline import fast_csv
from pipeline.pipeline import example_gen_output_config

HEADER = 'image_id,id,caption,url,score,empty,license\n'
ROWS = [
    '1,10,"A man, a plan",http://x/1.jpg,0.5,,"Attribution License"\n',
    '2,11,"She said ""hi""",,1,,\n',
    '3,12,"Two lines\nin one caption ",http://x/3.jpg, 2 ,,x\n',
    '4,13,Crème brûlée — 東京,http://x/4.jpg,1_0,,\n',
    '\n',
    '5,14,"trailing spaces   ",u,1e3,,\n',
    '6,15,"""",u,-7,,\n',
]


def run_executor(executor_class, input_base, output_dir):
  examples = standard_artifacts.Examples()
  examples.uri = output_dir
  exec_properties = {
      'input_base': input_base,
      'input_config': proto_utils.proto_to_json(example_gen_pb2.Input(
          splits=[example_gen_pb2.Input.Split(name='single_split', pattern='*')])),
      'output_config': proto_utils.proto_to_json(example_gen_output_config()),
      'output_data_format': example_gen_pb2.FORMAT_TF_EXAMPLE,
      'output_file_format': example_gen_pb2.FORMAT_TFRECORDS_GZIP,
  }
  executor_class().Do({}, {'examples': [examples]}, exec_properties)
  return read_splits(output_dir)


def read_splits(uri):
  result = {}
  for split_dir in sorted(glob.glob(os.path.join(uri, 'Split-*'))):
    records = tf.data.TFRecordDataset(glob.glob(os.path.join(split_dir, '*')), compression_type='GZIP')
    result[os.path.basename(split_dir)] = sorted(
        tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True) for r in records)
  return result


def write_shards(directory, shards):
  os.makedirs(directory)
  for i, rows in enumerate(shards):
    with open(os.path.join(directory, f'part-{i}.csv'), 'w', encoding='utf-8', newline='') as f:
      f.write(HEADER + ''.join(rows))


@pytest.mark.parametrize('shards', [[ROWS], [ROWS[:3], ROWS[3:]]], ids=['one-file', 'two-shards'])
def test_fast_equals_stock(tmp_path, shards):
  data = str(tmp_path / 'data')
  write_shards(data, shards)
  expected = run_executor(stock.Executor, data, str(tmp_path / 'stock'))
  got = run_executor(fast_csv.Executor, data, str(tmp_path / 'fast'))
  assert set(expected) == {'Split-train', 'Split-eval'}
  assert sum(len(v) for v in expected.values()) == 6
  assert got == expected


def test_column_types_follow_tfx_inference(tmp_path):
  data = str(tmp_path / 'data')
  write_shards(data, [ROWS])
  types = fast_csv.infer_types(os.path.join(data, 'part-0.csv'), HEADER.strip().split(','))
  T = fast_csv.ColumnType
  assert types == {'image_id': T.INT, 'id': T.INT, 'caption': T.STRING, 'url': T.STRING,
                   'score': T.FLOAT, 'empty': T.UNKNOWN, 'license': T.STRING}


def test_errors_name_the_file(tmp_path):
  data = tmp_path / 'data'
  write_shards(str(data), [ROWS, ['7,16,too,many,fields,here,x,y\n']])
  with pytest.raises(Exception, match='part-1.csv'):
    run_executor(fast_csv.Executor, str(data), str(tmp_path / 'out'))
