"""The project's pipeline run only up to one component (bench/run.py's driver).

    python bench/_data_stages.py [--to Transform|CsvExampleGen|...]

Same environment as local_runner.py (COCO_DATA_ROOT, COCO_OUTPUT_DIR,
COCO_BEAM_MODE, COCO_BEAM_WORKERS, COCO_EXAMPLEGEN), same pipeline
(local_runner.build()), but a TFX partial run that stops at `--to`: the Beam
mode and ExampleGen scenarios of the benchmark measure the data stages without
paying the Trainer each time. Durations come from ML Metadata afterwards, as
for a full run.
"""

import argparse
import contextlib
import os
import sys
import time

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT_DIR)

import local_runner  # noqa: E402
from pipeline import config, logs  # noqa: E402
from pipeline.beam import beam_mode  # noqa: E402

DATA_STAGES = ('CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'Transform')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--to', default='Transform', help='last component to run (default: %(default)s)')
  args = parser.parse_args()
  verbose = config.env('VERBOSE', '0') not in ('', '0', 'false')
  total = DATA_STAGES.index(args.to) + 1 if args.to in DATA_STAGES else 0
  progress = logs.setup(verbose=verbose, total_components=total)
  pipeline_root = config.local_pipeline_root()
  log_dir = os.path.join(os.path.dirname(config.local_metadata_path(pipeline_root)), 'logs')
  log_path = os.path.join(log_dir, time.strftime('partial-%Y%m%d-%H%M%S.log'))
  quiet = contextlib.nullcontext() if verbose else logs.quiet_output(log_path, progress)
  try:
    with quiet:
      from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
      from tfx.orchestration import pipeline as pipeline_py  # pylint: disable=g-import-not-at-top
      progress.stream.write(
          f'Running {config.PIPELINE_NAME} up to {args.to} on {config.data_root()} with Beam '
          f'{beam_mode()}, ExampleGen {config.example_gen_executor()}; log: {log_path}\n')
      tfx_pipeline = local_runner.build()
      # Which executor CsvExampleGen really got: the harness reports it, so a
      # COCO_EXAMPLEGEN value the pipeline ignored cannot pass unnoticed.
      spec = tfx_pipeline.components[0].executor_spec
      executor = getattr(spec, 'executor_class', None)
      progress.stream.write(f'ExampleGen executor: {executor.__module__}.{executor.__name__}\n'
                            if executor else f'ExampleGen executor: {spec!r}\n')
      # Partial run: every node upstream of (and including) `to`, nothing after it.
      tfx.orchestration.LocalDagRunner().run(
          tfx_pipeline, run_options=pipeline_py.RunOptions(to_nodes=[args.to]))
  except Exception as error:  # pylint: disable=broad-except
    # One short message first: the harness reports the head of stderr.
    print(f'error: {local_runner._first_lines(error)}', file=sys.stderr)  # pylint: disable=protected-access
    print(f'full log: {log_path}', file=sys.stderr)
    return 1
  print(f'Done in {time.time() - progress.started:.0f}s.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
