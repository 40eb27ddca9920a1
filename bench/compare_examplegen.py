"""Proves the fast ExampleGen executor writes the same examples as the stock one.

    .venv/bin/python bench/compare_examplegen.py DATA_DIR [--work DIR]

Runs TFX's stock CsvExampleGen executor and pipeline/components/csv_example_gen.py on the same
CSV directory (the pipeline's own split config), then compares every split as
a multiset of examples (decoded, re-serialized deterministically: file order
and shuffling differ by design). Prints per-split counts, seconds of each
executor, and EQUAL or the first differences; exits 1 when they differ.
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # noqa: E402
from tfx.components.example_gen.csv_example_gen import executor as stock  # noqa: E402
from tfx.proto import example_gen_pb2  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402
from tfx.utils import proto_utils  # noqa: E402

from pipeline.artifacts import files  # noqa: E402
from pipeline.components import csv_example_gen  # noqa: E402
from pipeline.pipeline import example_gen_output_config  # noqa: E402


def run_executor(executor_class, input_base: str, output_dir: str,
                 custom_config: dict = None) -> float:
  """Runs one ExampleGen executor as the component would (with `custom_config`
  the checked executor's values, e.g. {'max_rejected_fraction': 1.0}); returns seconds."""
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
  if custom_config:
    exec_properties['custom_config'] = proto_utils.proto_to_json(
        csv_example_gen.custom_config_proto(custom_config))
  start = time.time()
  executor_class().Do({}, {'examples': [examples]}, exec_properties)
  return time.time() - start


def read_splits(uri: str) -> dict:
  """Split name -> Counter of deterministically re-serialized examples."""
  result = {}
  for split in files.split_dirs(uri):
    result[split] = collections.Counter(
        tf.train.Example.FromString(r).SerializeToString(deterministic=True)
        for r in files.read_records(uri, split))
  return result


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('data_dir')
  parser.add_argument('--work', default=None)
  args = parser.parse_args()
  work = args.work or tempfile.mkdtemp(prefix='compare_examplegen_')
  seconds, outputs = {}, {}
  for name, executor in (('stock', stock.Executor), ('fast', csv_example_gen.Executor)):
    outputs[name] = os.path.join(work, name)
    shutil.rmtree(outputs[name], ignore_errors=True)
    seconds[name] = run_executor(executor, args.data_dir, outputs[name])
  splits = {name: read_splits(uri) for name, uri in outputs.items()}
  counts = {name: {s: sum(c.values()) for s, c in sp.items()} for name, sp in splits.items()}
  print(f'stock: {counts["stock"]} in {seconds["stock"]:.1f}s; '
        f'fast: {counts["fast"]} in {seconds["fast"]:.1f}s')
  if splits['stock'] == splits['fast']:
    print('EQUAL: same examples in every split')
    code = 0
  else:
    for split in sorted(set(splits['stock']) | set(splits['fast'])):
      only_stock = splits['stock'].get(split, collections.Counter()) - splits['fast'].get(split, collections.Counter())
      only_fast = splits['fast'].get(split, collections.Counter()) - splits['stock'].get(split, collections.Counter())
      print(f'DIFFERENT in {split}: {sum(only_stock.values())} only in stock, '
            f'{sum(only_fast.values())} only in fast')
      for example in list(only_stock)[:1] + list(only_fast)[:1]:
        print(tf.train.Example.FromString(example))
    code = 1
  if not args.work:
    shutil.rmtree(work, ignore_errors=True)
  return code


if __name__ == '__main__':
  sys.exit(main())
