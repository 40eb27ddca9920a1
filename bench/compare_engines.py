"""Whether two runs of the pipeline on the same data, on two Beam engines, gave
the same results (DirectRunner vs Flink: tests/test_flink.py, bench/run.py).

    .venv/bin/python bench/compare_engines.py PIPELINE_ROOT_A PIPELINE_ROOT_B

Compares the latest run under each root, stage by stage:
- CsvExampleGen: examples per split (records counted in the files);
- ImageExampleGen (images on): the serialized examples per split, as sorted
  lists, and the dead letter's counts;
- StatisticsGen: per split, the example count and each feature's counts
  (present, missing, min/max/total values): sketch-based top-k and unique
  estimates may merge in another order and are left out;
- Transform: vocabulary bytes and transformed examples (bench/compare_transform);
- Trainer and Evaluator: TFMA's perplexity (relative difference at most
  `PERPLEXITY_TOLERANCE`) and the blessing decision.
Prints one line per check and exits 1 when any differs.
"""

import os
import sys
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from bench import compare_transform  # noqa: E402
from pipeline.artifacts import files, metadata  # noqa: E402

PERPLEXITY_TOLERANCE = 1e-3   # "within 0.1%"


def latest_run(pipeline_root: str) -> metadata.Run:
  return metadata.load_run(os.path.join(pipeline_root, 'metadata.db'))


def example_counts(run: metadata.Run) -> Dict[str, int]:
  """CsvExampleGen's examples per split, counted in its files."""
  uri = run.output('CsvExampleGen', 'examples')
  return {split: sum(1 for _ in files.read_records(uri, split)) for split in files.split_dirs(uri)}


def statistics_counts(run: metadata.Run) -> Dict[str, Dict[str, Any]]:
  """StatisticsGen's counts per split: examples, and per feature what is exact
  whatever the engine's merge order."""
  found = {}
  for split, stats in files.statistics(run.output('StatisticsGen', 'statistics')).items():
    counts = {'num_examples': stats.num_examples}
    for feature in stats.features:
      common = (feature.num_stats.common_stats if feature.HasField('num_stats')
                else feature.string_stats.common_stats)
      counts[feature.path.step[0] if feature.path.step else feature.name] = (
          common.num_non_missing, common.num_missing, common.min_num_values,
          common.max_num_values, common.tot_num_values)
    found[split] = counts
  return found


def evaluation(run: metadata.Run) -> Tuple[float, bool, str]:
  """TFMA's perplexity over the whole eval split, blessed or not, and the decision line."""
  found = files.evaluation(run.output('Evaluator', 'evaluation'), run.output('Evaluator', 'blessing'))
  return found.overall['perplexity'], found.blessed, found.decision()


def image_examples(run: metadata.Run) -> Dict[str, List[bytes]]:
  """ImageExampleGen's examples per split, as sorted serialized records: the
  JPEG bytes, sizes and captions must be equal, whatever order the engine
  wrote them in. Re-serialized deterministically: protobuf writes a
  tf.Example's feature map in no fixed order, so equal examples written by
  two processes can differ byte for byte."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  canonical = lambda record: tf.train.Example.FromString(record).SerializeToString(
      deterministic=True)
  uri = run.output('ImageExampleGen', 'examples')
  return {split: sorted(map(canonical, files.read_records(uri, split)))
          for split in files.split_dirs(uri)}


def dead_letter_counts(run: metadata.Run) -> Dict[str, Any]:
  """The image stage's counts (kept, failed per reason), without its wall time."""
  summary = files.image_summary(run.output('ImageExampleGen', 'dead_letter'))
  return {k: v for k, v in summary.items() if k not in ('seconds', 'summary')}


def _examples_row(a: metadata.Run, b: metadata.Run):
  counts = example_counts(a), example_counts(b)
  return 'examples per split', counts[0] == counts[1], f'{counts[0]} vs {counts[1]}'


def _image_rows(a: metadata.Run, b: metadata.Run):
  records = image_examples(a), image_examples(b)
  rows = [('image examples', records[0] == records[1] and bool(records[0]),
           f'{ {s: len(r) for s, r in records[0].items()} } vs '
           f'{ {s: len(r) for s, r in records[1].items()} }, '
           f'{sum(len(x) for r in records[0].values() for x in r):,} bytes')]
  letters = dead_letter_counts(a), dead_letter_counts(b)
  rows.append(('image dead letter', letters[0] == letters[1], f'{letters[0]} vs {letters[1]}'))
  return rows


def _statistics_row(a: metadata.Run, b: metadata.Run):
  stats = statistics_counts(a), statistics_counts(b)
  unequal = sorted(f'{split}/{key}' for split in set(stats[0]) | set(stats[1])
                   for key in set(stats[0].get(split, {})) | set(stats[1].get(split, {}))
                   if stats[0].get(split, {}).get(key) != stats[1].get(split, {}).get(key))
  return ('statistics counts', not unequal and bool(stats[0]),
          f'{sum(len(s) for s in stats[0].values())} counts per run'
          + (f'; differ: {", ".join(unequal[:5])}' if unequal else ''))


def _transform_row(a_root: str, b_root: str):
  transformed = (compare_transform.transform_outputs(a_root),
                 compare_transform.transform_outputs(b_root))
  differences = compare_transform.differences(*transformed)
  return ('vocabulary bytes and transformed examples', not differences,
          f'{len(transformed[0][0])} vocabulary bytes, '
          f'{sum(len(s) for s in transformed[0][1].values())} examples'
          + (f'; {differences[:3]}' if differences else ''))


def _evaluator_rows(a: metadata.Run, b: metadata.Run):
  (ppl_a, blessed_a, decision_a), (ppl_b, blessed_b, decision_b) = evaluation(a), evaluation(b)
  relative = abs(ppl_a - ppl_b) / ppl_a
  return [('TFMA perplexity', relative <= PERPLEXITY_TOLERANCE,
           f'{ppl_a:.4f} vs {ppl_b:.4f} (relative difference {relative:.2e})'),
          ('blessing decision', blessed_a == blessed_b, f'{decision_a} | {decision_b}')]


# (component, output key that shows it ran, check rows of (runs, roots)); in DAG order.
STAGES = (
    ('CsvExampleGen', 'examples', lambda runs, roots: [_examples_row(*runs)]),
    ('ImageExampleGen', 'examples', lambda runs, roots: _image_rows(*runs)),
    ('StatisticsGen', 'statistics', lambda runs, roots: [_statistics_row(*runs)]),
    ('Transform', 'transform_graph', lambda runs, roots: [_transform_row(*roots)]),
    ('Evaluator', 'evaluation', lambda runs, roots: _evaluator_rows(*runs)),
)


def checks(a_root: str, b_root: str) -> List[Tuple[str, bool, str]]:
  """(what, equal, detail) per check, A against B, for each stage A's latest
  run has: a run to ImageExampleGen is compared as far as it went, and a stage
  B lacks is a difference, not a pass."""
  a, b = latest_run(a_root), latest_run(b_root)
  rows = []
  for component, key, compare in STAGES:
    if not a.has(component, key):
      continue
    if not b.has(component, key):
      rows.append((component, False, f'ran in {a_root}, not in {b_root}'))
      continue
    rows += compare((a, b), (a_root, b_root))
  return rows


def main() -> int:
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger('tensorflow').setLevel(logging.ERROR)   # TFMA's deprecation notes
  if len(sys.argv) != 3:
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  rows = checks(sys.argv[1], sys.argv[2])
  for what, equal, detail in rows:
    print(f'{"EQUAL " if equal else "DIFFER"} {what}: {detail}')
  return 0 if all(equal for _, equal, _ in rows) else 1


if __name__ == '__main__':
  sys.exit(main())
