"""Proves the fast Transform executor writes the same outputs as the stock one.

    .venv/bin/python bench/compare_transform.py DATA_DIR [--work DIR]

Runs the pipeline up to Transform twice on the same CSV directory, with
COCO_TRANSFORM=stock and =fast, then compares the vocabulary files byte for
byte and every split's transformed examples decoded, as a mapping keyed by
caption id (file names, sharding and gzip headers differ by design). Prints
per-split counts, Transform's seconds from ML Metadata for each, and EQUAL or
the first differences; exits 1 when they differ.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from modules import features as keys  # noqa: E402
from pipeline import settings  # noqa: E402
from pipeline.artifacts import files, metadata  # noqa: E402

Decoded = Dict[int, Tuple]


def run_to_transform(data_dir: str, output_dir: str, executor: str) -> float:
  """One partial run (ExampleGen..Transform) in a fresh process; Transform's seconds."""
  env = dict(os.environ, COCO_DATA_ROOT=data_dir, COCO_OUTPUT_DIR=output_dir,
             COCO_RUN_TO='Transform', COCO_TRANSFORM=executor)
  result = subprocess.run([sys.executable, os.path.join(settings.PROJECT_DIR, 'local_runner.py')],
                          env=env, capture_output=True, text=True, cwd=settings.PROJECT_DIR)
  if result.returncode != 0:
    raise RuntimeError(f'{executor} run failed:\n{result.stdout}\n{result.stderr}')
  store = metadata.open_store(settings.Settings.from_env({'COCO_OUTPUT_DIR': output_dir}).run.metadata_file)
  return [r.seconds for r in metadata.component_runs(store) if r.component == 'Transform'][0]


def transform_outputs(pipeline_root: str) -> Tuple[bytes, Dict[str, Decoded]]:
  """The latest run's Transform vocabulary file and transformed examples per
  split, each example decoded to sorted (feature, values) pairs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(os.path.join(pipeline_root, 'metadata.db'))
  outputs = metadata.run_outputs(store)['Transform']
  with open(files.vocabulary_path(outputs['transform_graph']), 'rb') as f:
    vocabulary = f.read()
  examples_uri = outputs['transformed_examples']
  splits = {}
  for split in files.split_dirs(examples_uri):
    decoded = {}
    for record in files.read_records(examples_uri, split):
      features = tf.train.Example.FromString(record).features.feature
      key = features[keys.TRANSFORMED_CAPTION_ID_KEY].int64_list.value[0]
      if key in decoded:
        raise ValueError(f'{files.split_dir(examples_uri, split)}: caption id {key} appears twice')
      decoded[key] = tuple(
          (name, tuple(v.int64_list.value) or tuple(v.float_list.value)
           or tuple(v.bytes_list.value)) for name, v in sorted(features.items()))
    splits[split] = decoded
  return vocabulary, splits


def differences(a: Tuple[bytes, Dict[str, Decoded]], b: Tuple[bytes, Dict[str, Decoded]],
                limit: int = 5) -> list:
  """Human-readable differences between two transform_outputs() results."""
  found = []
  if a[0] != b[0]:
    found.append('vocabulary files differ')
  for split in sorted(set(a[1]) | set(b[1])):
    left, right = a[1].get(split, {}), b[1].get(split, {})
    if len(left) != len(right):
      found.append(f'{split}: {len(left)} vs {len(right)} examples')
    for key in sorted(set(left) | set(right)):
      if left.get(key) != right.get(key) and len(found) < limit:
        found.append(f'{split}: caption id {key}: {left.get(key)} vs {right.get(key)}')
  return found


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('data_dir')
  parser.add_argument('--work', help='keep outputs here (default: a temp dir)')
  args = parser.parse_args()
  work = args.work or tempfile.mkdtemp(prefix='compare-transform-')
  outputs, seconds = {}, {}
  for executor in ('stock', 'fast'):
    out = os.path.join(work, executor)
    shutil.rmtree(out, ignore_errors=True)
    seconds[executor] = run_to_transform(os.path.abspath(args.data_dir), out, executor)
    outputs[executor] = transform_outputs(settings.Settings.from_env({'COCO_OUTPUT_DIR': out}).run.pipeline_root)
  for split, decoded in outputs['stock'][1].items():
    print(f'{split}: {len(decoded)} stock, {len(outputs["fast"][1].get(split, {}))} fast')
  print(f'Transform seconds: stock {seconds["stock"]:.1f}, fast {seconds["fast"]:.1f}')
  found = differences(outputs['stock'], outputs['fast'])
  print('EQUAL' if not found else 'DIFFERENT:\n  ' + '\n  '.join(found))
  if not args.work:
    shutil.rmtree(work, ignore_errors=True)
  return 1 if found else 0


if __name__ == '__main__':
  sys.exit(main())
