"""Running the pipeline on this machine: LocalDagRunner + SQLite ML Metadata.

`main(build)` is what `local_runner.py` calls with its pipeline factory:
- reads the settings once (a malformed one: one line naming it, exit 2);
- checks the ML Metadata store first (pipeline/artifacts/store_health.py: a
  damaged or locked one is one line, and nothing under the root is touched);
- keeps the console readable (one line per component; TensorFlow, Beam and
  pip go to `<pipeline root>/logs/run-*.log` unless COCO_VERBOSE=1);
- runs the whole DAG or, with COCO_RUN_TO, a TFX partial run of a node and
  everything upstream of it (nodes from the pipeline itself);
- one run at a time per pipeline root (`run_lock`): a second run waits,
  saying so, then finds the first one's results cached; executions a killed
  run left RUNNING are marked CANCELED first;
- Ctrl-C marks the running execution CANCELED and exits 130 at once;
- a full disk or a store locked mid-run ends it with one line naming the
  component and the path (pipeline/orchestration/faults.py);
- builds the sdist the portable and Flink modes stage for their workers once,
  outside the checkout, and waits for Beam's in-process (LOOPBACK) workers
  before it exits (pipeline/orchestration/workers.py);
- ends with the summary of this run's outputs and, with COCO_REPORT=1 (or
  `--report`), the HTML report.

Under `tfx pipeline create/update` the CLI patches LocalDagRunner.run to only
read the pipeline; then the pipeline is handed over and nothing else runs.
"""

import contextlib
import os
import signal
import sys
import time
from typing import Callable, List, Optional, Set

from pipeline.orchestration import console, workers
from pipeline.settings import PIPELINE_NAME, Settings, SettingsError

INTERRUPTED = ('Interrupted: finished components stay cached, the interrupted one is marked '
               'CANCELED in ML Metadata; run again to resume.')


def first_lines(error: BaseException, limit: int = 6) -> str:
  """The head of an error message: Beam appends whole stack traces to it."""
  lines = [l for l in str(error).splitlines() if l.strip()]
  text = '\n  '.join(lines[:limit])
  return f'{type(error).__name__}: {text}' + ('\n  ...' if len(lines) > limit else '')


def nodes_to_run(tfx_pipeline, last: str) -> Set[str]:
  """`last` and everything upstream of it: what a partial run executes."""
  by_id = {c.id: c for c in tfx_pipeline.components}
  todo, found = [last], set()
  while todo:
    node = todo.pop()
    if node not in found:
      found.add(node)
      todo.extend(u.id for u in by_id[node].upstream_nodes)
  return found


def last_node(tfx_pipeline, run_to: Optional[str]) -> str:
  """The node a run stops after: COCO_RUN_TO, checked against the pipeline's
  own nodes, or its last one."""
  nodes = [c.id for c in tfx_pipeline.components]
  if run_to and run_to not in nodes:
    raise SettingsError(f'COCO_RUN_TO={run_to!r}; choose one of {", ".join(nodes)}')
  return run_to or nodes[-1]


def interrupt_handler(db: str, stream) -> Callable:
  """The SIGINT handler of a run: record it and leave at once with 130.

  A KeyboardInterrupt raised in the middle of Beam and TensorFlow is not
  reliably seen (a thread or a broad handler may swallow it, and the run then
  carries on); exiting here is as safe as a kill, which the next run
  resumes from, and the execution is marked CANCELED first. `stream` is the
  real console (fd 2 may point at the run's log).
  """
  def handle(*_):
    from pipeline.artifacts import metadata  # pylint: disable=g-import-not-at-top
    try:
      metadata.cancel_unfinished(metadata.open_store(db))
    finally:
      stream.write(INTERRUPTED + '\n')
      stream.flush()
      os._exit(130)  # pylint: disable=protected-access
  return handle


@contextlib.contextmanager
def run_lock(db: str, stream, console_err):
  """One run at a time per metadata DB: a second run started meanwhile waits
  (saying so), then finds the first one's results cached. Runs that died
  without finishing are marked CANCELED first; Ctrl-C is handled while held."""
  import fcntl  # pylint: disable=g-import-not-at-top
  from pipeline.artifacts import metadata  # pylint: disable=g-import-not-at-top
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
    previous = signal.signal(signal.SIGINT, interrupt_handler(db, console_err))
    try:
      yield
    finally:
      signal.signal(signal.SIGINT, previous)


def write_report(settings: Settings, log_path: str, progress) -> int:
  """Writes the run's HTML report and adds its path to the summary. TensorFlow
  loads the model for it, so its console noise goes to the run's log too."""
  from pipeline import report  # pylint: disable=g-import-not-at-top
  quiet = (contextlib.nullcontext() if settings.run.verbose
           else console.quiet_output(log_path, progress))
  try:
    with quiet:
      path, missing = report.write_report(settings.run.pipeline_root,
                                          metadata_file=settings.run.metadata_file,
                                          output=settings.run.report_file)
  except Exception as error:  # pylint: disable=broad-except
    print(f'error: report: {first_lines(error)}', file=sys.stderr)
    return 1
  print(f'report:        {path}')
  for line in missing:
    print(f'               (without {line})')
  return 0


def execute(tfx_pipeline, settings: Settings, progress, log_path: str, console_err) -> None:
  """Runs the pipeline (or its partial run up to COCO_RUN_TO) under the lock."""
  from tfx.orchestration import pipeline as pipeline_module  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
  last = last_node(tfx_pipeline, settings.run.run_to)
  full = last == tfx_pipeline.components[-1].id
  progress.total = (len(tfx_pipeline.components) if full
                    else len(nodes_to_run(tfx_pipeline, last)))
  executor = tfx_pipeline.components[0].executor_spec.executor_class
  progress.stream.write(
      f'Running {PIPELINE_NAME} on {settings.run.data_root} with Beam '
      f'{settings.beam.mode}; log: {"console" if settings.run.verbose else log_path}\n'
      f'ExampleGen executor: {executor.__module__}.{executor.__name__}\n')
  runner = LocalDagRunner()
  with run_lock(settings.run.metadata_file, progress.stream, console_err):
    if full:
      runner.run(tfx_pipeline)
    else:  # a TFX partial run: `last` and everything upstream of it
      runner.run(tfx_pipeline, run_options=pipeline_module.RunOptions(to_nodes=[last]))


def record_engines(tfx_pipeline, settings: Settings) -> None:
  """Writes into ML Metadata which engine ran each execution of this run and,
  on Flink, its Flink job ids (asked from the cluster's REST API: the jobs
  named after the component that started while it ran). Cached executions ran
  nothing and get no record."""
  from tfx.dsl.components.base.base_beam_component import BaseBeamComponent  # pylint: disable=g-import-not-at-top
  from pipeline.artifacts import metadata  # pylint: disable=g-import-not-at-top
  from pipeline.beam_args import engine_name, job_name  # pylint: disable=g-import-not-at-top
  from pipeline.orchestration import flink  # pylint: disable=g-import-not-at-top
  beam_nodes = {c.id for c in tfx_pipeline.components if isinstance(c, BaseBeamComponent)}
  run = metadata.load_run(settings.run.metadata_file)
  known = flink.jobs(settings.beam.flink_rest) if settings.beam.mode == 'flink' else []
  engines = {}
  for r in run.components:
    if r.state in ('CACHED', 'NEW', 'UNKNOWN') or r.engine:
      continue
    if r.component not in beam_nodes:
      engines[r.execution_id] = ('in process', ())
      continue
    found = flink.jobs_of(known, job_name(PIPELINE_NAME, r.component), r.start_ms, r.end_ms)
    engines[r.execution_id] = (engine_name(settings.beam), [j.jid for j in found])
  metadata.record_engines(run.store, engines)


def record_engines_quietly(tfx_pipeline, settings: Settings) -> None:
  """`record_engines`, after a finished or failed run: a record it cannot make
  (no store yet, the cluster gone) is said in the log, never fails the run."""
  try:
    record_engines(tfx_pipeline, settings)
  except Exception as error:  # pylint: disable=broad-except
    import logging  # pylint: disable=g-import-not-at-top
    logging.getLogger('absl').warning('could not record where components ran: %s', error)


def main(build: Callable[[Settings], object], argv: Optional[List[str]] = None) -> int:
  """Builds the pipeline with `build(settings)` and runs it; the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  try:
    settings = Settings.from_env()
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  if settings.beam.mode == 'flink':
    from pipeline.orchestration import flink  # pylint: disable=g-import-not-at-top
    try:
      flink.check_reachable(settings.beam)
    except flink.EngineUnavailable as error:
      print(f'error: {error}', file=sys.stderr)
      return 1
  from pipeline.artifacts import store_health  # pylint: disable=g-import-not-at-top
  try:   # before anything under the root is written: a log, the run lock
    store_health.check(settings.run.metadata_file)
  except store_health.StoreUnusable as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  progress = console.setup(verbose=settings.run.verbose)
  console_err = os.fdopen(os.dup(2), 'w')
  log_path = os.path.join(settings.run.log_dir, time.strftime('run-%Y%m%d-%H%M%S.log'))
  quiet = (contextlib.nullcontext() if settings.run.verbose
           else console.quiet_output(log_path, progress))
  try:
    with quiet:
      from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
      tfx_pipeline = build(settings)
      if hasattr(LocalDagRunner.run, '__wrapped__'):
        # `tfx pipeline create/update` patched run() to only read the pipeline.
        LocalDagRunner().run(tfx_pipeline)
        return 0
      workers.build_package_if_shipped(settings)
      try:
        execute(tfx_pipeline, settings, progress, log_path, console_err)
      finally:
        record_engines_quietly(tfx_pipeline, settings)
        workers.wait_for_in_process_workers()
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # before the run started (e.g. while waiting for the lock)
    print(INTERRUPTED, file=sys.stderr)
    return 130
  except Exception as error:  # pylint: disable=broad-except
    from pipeline.orchestration import faults  # pylint: disable=g-import-not-at-top
    known = faults.explain(error, progress.running, settings.run.pipeline_root,
                           settings.run.metadata_file)
    if known:   # one line, the log's path at its end
      print(f'error: {known}' + ('' if settings.run.verbose else f' Log: {log_path}'),
            file=sys.stderr)
      return 1
    print(f'error: {first_lines(error)}', file=sys.stderr)
    if not settings.run.verbose:
      print(f'full log: {log_path} (or rerun with COCO_VERBOSE=1)', file=sys.stderr)
    return 1
  print(f'Done in {time.time() - progress.started:.0f}s.')
  from pipeline.orchestration.summary import summary_lines  # pylint: disable=g-import-not-at-top
  print('\n'.join(summary_lines(settings.run.pipeline_root, settings.run.metadata_file)))
  if settings.run.report or '--report' in argv:
    return write_report(settings, log_path, progress)
  return 0
