"""The pyarrow ExampleGen executor writes exactly what the stock one writes."""

import gzip
import os

import pytest
from tfx.components.example_gen.csv_example_gen import executor as stock

from bench import compare_examplegen as compare
from pipeline.components import csv_example_gen
from pipeline.csv_input import checks, reader

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
  compare.run_executor(executor_class, input_base, output_dir)
  return compare.read_splits(output_dir)


def write_shards(directory, shards, compressed=()):
  """part-{i}.csv, or part-{i}.csv.gz for the shards numbered in `compressed`."""
  os.makedirs(directory)
  for i, rows in enumerate(shards):
    path = os.path.join(directory, f'part-{i}.csv' + ('.gz' if i in compressed else ''))
    with (gzip.open(path, 'wt', encoding='utf-8', newline='') if i in compressed
          else open(path, 'w', encoding='utf-8', newline='')) as f:
      f.write(HEADER + ''.join(rows))


@pytest.mark.parametrize('shards', [[ROWS], [ROWS[:3], ROWS[3:]]], ids=['one-file', 'two-shards'])
def test_fast_equals_stock(tmp_path, shards):
  data = str(tmp_path / 'data')
  write_shards(data, shards)
  expected = run_executor(stock.Executor, data, str(tmp_path / 'stock'))
  got = run_executor(csv_example_gen.Executor, data, str(tmp_path / 'fast'))
  assert set(expected) == {'train', 'eval'}
  assert sum(sum(c.values()) for c in expected.values()) == 6
  assert got == expected


@pytest.mark.parametrize('shards,compressed', [([ROWS], [0]), ([ROWS[:3], ROWS[3:]], [1])],
                         ids=['one-file', 'a-plain-and-a-gzip-shard'])
def test_gzip_input_gives_the_examples_of_the_same_plain_csv(tmp_path, shards, compressed):
  plain, packed = str(tmp_path / 'plain'), str(tmp_path / 'gz')
  write_shards(plain, shards)
  write_shards(packed, shards, compressed)
  expected = run_executor(csv_example_gen.Executor, plain, str(tmp_path / 'from-plain'))
  got = run_executor(csv_example_gen.Executor, packed, str(tmp_path / 'from-gz'))
  assert sum(sum(c.values()) for c in got.values()) == 6
  assert got == expected


def test_column_types_follow_tfx_inference(tmp_path):
  data = str(tmp_path / 'data')
  write_shards(data, [ROWS])
  columns = HEADER.strip().split(',')
  blocks = reader.checked_blocks(os.path.join(data, 'part-0.csv'), checks.Header(columns, True))
  types = reader.infer_types(blocks, columns)
  T = reader.ColumnType
  assert types == {'image_id': T.INT, 'id': T.INT, 'caption': T.STRING, 'url': T.STRING,
                   'score': T.FLOAT, 'empty': T.UNKNOWN, 'license': T.STRING}


def test_a_split_nothing_hashed_into_still_has_a_file(tmp_path):
  data = str(tmp_path / 'data')
  write_shards(data, [ROWS[:1]])
  splits = run_executor(csv_example_gen.Executor, data, str(tmp_path / 'out'))
  assert sorted(sum(c.values()) for c in splits.values()) == [0, 1]


def test_errors_name_the_file(tmp_path):
  data = tmp_path / 'data'
  write_shards(str(data), [ROWS, ['7,16,too,many,fields,here,x,y\n']])
  with pytest.raises(Exception, match='part-1.csv'):
    run_executor(csv_example_gen.Executor, str(data), str(tmp_path / 'out'))


def test_a_corrupt_gzip_shard_stops_the_run_naming_it(tmp_path):
  data = tmp_path / 'data'
  write_shards(str(data), [ROWS, ROWS[:1]], compressed=[1])
  packed = (data / 'part-1.csv.gz').read_bytes()
  (data / 'part-1.csv.gz').write_bytes(packed[:len(packed) - 6])
  with pytest.raises(checks.CsvFormatError,
                     match=r'part-1\.csv\.gz: not a readable gzip file \(Truncated'):
    run_executor(csv_example_gen.Executor, str(data), str(tmp_path / 'out'))
