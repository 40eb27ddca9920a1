"""Run the pipeline on this machine: LocalDagRunner + SQLite ML Metadata.

    python local_runner.py            # or: make run

Takes no arguments (the `tfx` CLI runs this file without any); override with
environment variables, all read in pipeline/config.py and pipeline/beam.py:
COCO_DATA_ROOT, COCO_OUTPUT_DIR, COCO_BEAM_MODE, COCO_BEAM_WORKERS,
COCO_TRAIN_STEPS, COCO_EXAMPLEGEN, COCO_VERBOSE=1, COCO_RUN_TO=<component>
for a partial run that stops after that component (e.g. Transform),
COCO_IMAGES=1 with COCO_IMAGE_DIR=<directory|gs://prefix|url> for images, and
COCO_REPORT=1 to write the run's HTML report (pipeline/report.py) afterwards;
run directly, `python local_runner.py --report` does the same.
"""

import contextlib
import os
import signal
import sys
import time

from pipeline import config, logs
from pipeline.beam import beam_mode

MODULE_FILE = os.path.join(config.PROJECT_DIR, 'modules', 'captions_module.py')
COMPONENTS = config.components()   # with ImageExampleGen when COCO_IMAGES=1


def build():
  """The local pipeline; `tfx pipeline create` calls this through run()."""
  from pipeline import beam, metadata  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top
  pipeline_root = config.local_pipeline_root()
  return create_pipeline(
      pipeline_name=config.PIPELINE_NAME,
      pipeline_root=pipeline_root,
      data_root=config.data_root(),
      module_file=MODULE_FILE,
      train_steps=config.train_steps(),
      eval_steps=config.eval_steps(),
      metadata_connection_config=metadata.connection_config(
          config.local_metadata_path(pipeline_root)),
      enable_cache=config.env('CACHE', '1') != '0',
      beam_pipeline_args=beam.beam_pipeline_args(),
  )


def summary(pipeline_root: str) -> str:
  """Final lines, from this run's own outputs in ML Metadata: input checks,
  anomalies, the model and its quality (a partial run shows what it made)."""
  import json  # pylint: disable=g-import-not-at-top
  from pipeline import fast_csv, metadata, validate  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(config.local_metadata_path(pipeline_root))
  outputs = metadata.run_outputs(store)
  lines = [f'pipeline root: {pipeline_root}']
  examples_uri = outputs.get('CsvExampleGen', {}).get('examples')
  input_report = examples_uri and fast_csv.read_input_report(examples_uri)
  if input_report:
    counts = validate.input_counts(input_report)
    lines.append(f'input:         {counts.rejected} rows rejected, {counts.repairs} repairs '
                 f'(listed in {os.path.join(examples_uri, fast_csv.INPUT_REPORT)})')
  dead_letter_uri = outputs.get(config.IMAGE_COMPONENT, {}).get('dead_letter')
  images_path = dead_letter_uri and os.path.join(dead_letter_uri, config.IMAGE_SUMMARY_NAME)
  if images_path and os.path.exists(images_path):
    with open(images_path) as f:
      lines.append(f'images:        {json.load(f)["summary"].split(": ", 1)[-1]}')
  anomalies_uri = outputs.get('ExampleValidator', {}).get('anomalies')
  if anomalies_uri:
    found = metadata.anomalies(anomalies_uri)
    listed = '; '.join(f'{split}: {", ".join(items)}' for split, items in found.items() if items)
    lines.append(f'anomalies:     {listed or "none against the schema"}')
  model_uri = outputs.get('Trainer', {}).get('model')
  if model_uri:
    lines.append(f'model:         {os.path.join(model_uri, "Format-Serving")}')
    metrics_path = os.path.join(model_uri, 'metrics.json')
    if os.path.exists(metrics_path):
      with open(metrics_path) as f:
        m = json.load(f)
      lines.append(
          f'quality:       eval perplexity {m["eval_perplexity"]:.2f} '
          f'(Kneser-Ney trigram {m["baselines"]["kneser_ney_trigram"]:.2f}, '
          f'unigram {m["baselines"]["unigram_add_one"]:.2f}; '
          f'ratio {m["ratio_to_kneser_ney_trigram"]:.2f})')
  return '\n'.join(lines)


def _first_lines(error: BaseException, limit: int = 6) -> str:
  """The head of an error message: Beam appends whole stack traces to it."""
  lines = [l for l in str(error).splitlines() if l.strip()]
  text = '\n  '.join(lines[:limit])
  return f'{type(error).__name__}: {text}' + ('\n  ...' if len(lines) > limit else '')


def report_requested(argv=None) -> bool:
  """COCO_REPORT=1, or `--report` when this file is run directly (the tfx CLI
  passes no arguments, so the variable is the way that always works)."""
  return config.report_requested() or '--report' in (sys.argv[1:] if argv is None else argv)


def write_report(pipeline_root: str, log_path: str, progress, verbose: bool) -> int:
  """Writes the run's HTML report and adds its path to the summary. TensorFlow
  loads the model for it, so its console noise goes to the run's log too."""
  from pipeline import report  # pylint: disable=g-import-not-at-top
  try:
    with contextlib.nullcontext() if verbose else logs.quiet_output(log_path, progress):
      path, missing = report.write_report(pipeline_root)
  except Exception as error:  # pylint: disable=broad-except
    print(f'error: report: {_first_lines(error)}', file=sys.stderr)
    return 1
  print(f'report:        {path}')
  for line in missing:
    print(f'               (without {line})')
  return 0


def run_to() -> str:
  """The last component to run (COCO_RUN_TO; default: all of them)."""
  last = config.env('RUN_TO') or COMPONENTS[-1]
  if last not in COMPONENTS:
    raise ValueError(f'{config.ENV_PREFIX}RUN_TO={last!r}; choose one of {COMPONENTS}')
  return last


def nodes_to_run(tfx_pipeline, last: str) -> set:
  """`last` and everything upstream of it: what a partial run executes."""
  by_id = {c.id: c for c in tfx_pipeline.components}
  todo, found = [last], set()
  while todo:
    node = todo.pop()
    if node not in found:
      found.add(node)
      todo.extend(u.id for u in by_id[node].upstream_nodes)
  return found


@contextlib.contextmanager
def run_lock(pipeline_root: str, stream):
  """One run at a time per pipeline root and metadata DB: a second run
  started meanwhile waits (saying so), then finds the first one's results
  cached. Runs that died without finishing are marked CANCELED first."""
  import fcntl  # pylint: disable=g-import-not-at-top
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  db = config.local_metadata_path(pipeline_root)
  os.makedirs(os.path.dirname(db), exist_ok=True)
  with open(db + '.lock', 'a+') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      stream.write(f'Waiting for another run of this pipeline (pid {lock.read().strip() or "?"}) '
                   f'to finish; it uses {db}\n')
      stream.flush()
      fcntl.flock(lock, fcntl.LOCK_EX)
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    if os.path.exists(db):
      stale = metadata.cancel_unfinished(metadata.open_store(db))
      if stale:
        stream.write(f'Marked unfinished executions of an earlier run CANCELED: {", ".join(stale)}\n')
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted(db))
    try:
      yield
    finally:
      signal.signal(signal.SIGINT, previous)


INTERRUPTED = ('Interrupted: finished components stay cached, the interrupted one is marked '
               'CANCELED in ML Metadata; run again to resume.')
_console_err = None   # the real stderr while quiet_output() points fd 2 at the log


def interrupted(db: str) -> None:
  """Ctrl-C while components run: record it and leave at once with 130.

  A KeyboardInterrupt raised in the middle of Beam and TensorFlow is not
  reliably seen (a thread or a broad handler may swallow it, and the run then
  carries on); exiting here is as safe as a kill, which the next run
  resumes from, and the execution is marked CANCELED first.
  """
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  try:
    metadata.cancel_unfinished(metadata.open_store(db))
  finally:
    stream = _console_err or sys.stderr
    stream.write(INTERRUPTED + '\n')
    stream.flush()
    os._exit(130)  # pylint: disable=protected-access


def main() -> int:
  verbose = config.env('VERBOSE', '0') not in ('', '0', 'false')
  try:
    last = run_to()
  except ValueError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  progress = logs.setup(verbose=verbose, total_components=COMPONENTS.index(last) + 1)
  global _console_err  # pylint: disable=global-statement
  _console_err = os.fdopen(os.dup(2), 'w')
  pipeline_root = config.local_pipeline_root()
  log_dir = os.path.join(os.path.dirname(config.local_metadata_path(pipeline_root)), 'logs')
  log_path = os.path.join(log_dir, time.strftime('run-%Y%m%d-%H%M%S.log'))
  quiet = contextlib.nullcontext() if verbose else logs.quiet_output(log_path, progress)
  try:
    with quiet:
      from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
      runner = tfx.orchestration.LocalDagRunner()
      if hasattr(type(runner).run, '__wrapped__'):
        # `tfx pipeline create/update` patched run() to only read the pipeline.
        runner.run(build())
        return 0
      from tfx.orchestration import pipeline as pipeline_module  # pylint: disable=g-import-not-at-top
      tfx_pipeline = build()
      full = last == COMPONENTS[-1]
      progress.total = len(COMPONENTS) if full else len(nodes_to_run(tfx_pipeline, last))
      executor = tfx_pipeline.components[0].executor_spec.executor_class
      progress.stream.write(
          f'Running {config.PIPELINE_NAME} on {config.data_root()} with Beam '
          f'{beam_mode()}; log: {"console" if verbose else log_path}\n'
          f'ExampleGen executor: {executor.__module__}.{executor.__name__}\n')
      with run_lock(pipeline_root, progress.stream):
        if full:
          runner.run(tfx_pipeline)
        else:  # a TFX partial run: `last` and everything upstream of it
          runner.run(tfx_pipeline, run_options=pipeline_module.RunOptions(to_nodes=[last]))
  except KeyboardInterrupt:  # before the run started (e.g. while waiting for the lock)
    print(INTERRUPTED, file=sys.stderr)
    return 130
  except Exception as error:  # pylint: disable=broad-except
    print(f'error: {_first_lines(error)}', file=sys.stderr)
    if not verbose:
      print(f'full log: {log_path} (or rerun with COCO_VERBOSE=1)', file=sys.stderr)
    return 1
  print(f'Done in {time.time() - progress.started:.0f}s.')
  print(summary(pipeline_root))
  if report_requested():
    return write_report(pipeline_root, log_path, progress, verbose)
  return 0


if __name__ == '__main__':
  sys.exit(main())
