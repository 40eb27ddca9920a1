"""Real runs being killed, interrupted, run twice at once, and repeated.

Each test starts local_runner.py in its own process on the shipped data/, as
a user would, and checks ML Metadata rather than the console where it can.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from bench import compare_transform
from pipeline.artifacts import metadata
from tests.conftest import csv_rows, run_local
from pipeline import settings
from tests.conftest import settings_of, DATA_ROOT

pytestmark = pytest.mark.slow
# What a partial run up to the Trainer runs before Transform (ExampleValidator
# is not upstream of the Trainer, so it is not in it).
UPSTREAM = ['CsvExampleGen', 'StatisticsGen', 'SchemaGen']


# The resumed Trainer only has to run on the new Transform's outputs: a few
# steps prove that (what it learns is tests/test_e2e.py's and test_evaluation.py's).
TRAIN_STEPS = 10


def env_for(output_dir):
  # Up to the Trainer (a partial run): what these tests kill and resume is
  # Transform; evaluation is tests/test_evaluation.py's.
  return dict(os.environ, COCO_OUTPUT_DIR=str(output_dir), COCO_DATA_ROOT=DATA_ROOT,
              COCO_RUN_TO='Trainer',
              COCO_TRAIN_STEPS=str(TRAIN_STEPS), COCO_STEPS_PER_EPOCH=str(TRAIN_STEPS))


def start(output_dir):
  return subprocess.Popen([sys.executable, os.path.join(settings.PROJECT_DIR, 'local_runner.py')],
                          env=env_for(output_dir), cwd=settings.PROJECT_DIR, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def db_of(output_dir):
  return settings_of({'COCO_OUTPUT_DIR': str(output_dir)}).run.metadata_file


def wait_until_running(process, output_dir, component, timeout=600):
  """Polls ML Metadata until `component` has a RUNNING execution."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, f'the run ended early: {process.communicate()}'
    if os.path.exists(db_of(output_dir)):
      try:
        runs = metadata.component_runs(metadata.open_store(db_of(output_dir)))
      except Exception:  # pylint: disable=broad-except  # the DB is being created
        runs = []
      if any(r.component == component and r.state == 'RUNNING' for r in runs):
        return
    time.sleep(0.1)
  raise AssertionError(f'{component} never ran')


def states(output_dir, run_index=-1):
  store = metadata.open_store(db_of(output_dir))
  run_id = metadata.run_ids(store)[run_index]
  return [(r.component, r.state) for r in metadata.component_runs(store, run_id)]


def assert_resumed(output_dir, result):
  assert result.returncode == 0, result.stdout + result.stderr
  assert states(output_dir) == [(c, 'CACHED') for c in UPSTREAM] + [
      ('Transform', 'COMPLETE'), ('Trainer', 'COMPLETE')]
  assert 'Marked unfinished executions of an earlier run CANCELED: Transform' in result.stdout


def assert_nothing_half_published(output_dir, interrupted_id):
  """The interrupted Transform published no output, and the resumed Trainer
  read the new Transform's outputs."""
  store = metadata.open_store(db_of(output_dir))
  events = store.get_events_by_execution_ids([interrupted_id])
  assert [e for e in events if e.type == metadata_store_pb2.Event.OUTPUT] == []
  runs = {r.component: r for r in metadata.component_runs(store)}
  transform_outputs = {e.artifact_id for e in store.get_events_by_execution_ids(
      [runs['Transform'].execution_id]) if e.type == metadata_store_pb2.Event.OUTPUT}
  trainer_inputs = {e.artifact_id for e in store.get_events_by_execution_ids(
      [runs['Trainer'].execution_id]) if e.type == metadata_store_pb2.Event.INPUT}
  assert len(transform_outputs & trainer_inputs) == 2  # transform_graph, transformed_examples
  for artifact in store.get_artifacts_by_id(list(trainer_inputs)):
    assert artifact.state == metadata_store_pb2.Artifact.LIVE
    assert f'/{interrupted_id}/' not in artifact.uri + '/'


def transform_execution(output_dir):
  return [r for r in metadata.component_runs(metadata.open_store(db_of(output_dir)))
          if r.component == 'Transform'][0]


def test_sigkill_during_transform_then_the_next_run_resumes(tmp_path):
  run = start(tmp_path)
  wait_until_running(run, tmp_path, 'Transform')
  os.killpg(run.pid, signal.SIGKILL)
  run.communicate(timeout=60)
  assert run.returncode == -signal.SIGKILL
  killed = transform_execution(tmp_path)
  assert killed.state == 'RUNNING'   # what ML Metadata says of a killed run
  assert states(tmp_path)[:len(UPSTREAM)] == [(c, 'COMPLETE') for c in UPSTREAM]

  resumed = run_local(env_for(tmp_path))
  assert_resumed(tmp_path, resumed)
  assert_nothing_half_published(tmp_path, killed.execution_id)
  store = metadata.open_store(db_of(tmp_path))
  assert [e.last_known_state for e in store.get_executions_by_id([killed.execution_id])] == [
      metadata_store_pb2.Execution.CANCELED]


def test_ctrl_c_during_transform_exits_cleanly_then_the_next_run_resumes(tmp_path):
  run = start(tmp_path)
  wait_until_running(run, tmp_path, 'Transform')
  run.send_signal(signal.SIGINT)
  out, err = run.communicate(timeout=120)
  assert run.returncode == 130
  assert 'Interrupted: finished components stay cached' in err
  assert 'Traceback' not in out + err
  interrupted = transform_execution(tmp_path)
  assert interrupted.state == 'CANCELED'

  resumed = run_local(env_for(tmp_path))
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert states(tmp_path) == [(c, 'CACHED') for c in UPSTREAM] + [
      ('Transform', 'COMPLETE'), ('Trainer', 'COMPLETE')]
  assert_nothing_half_published(tmp_path, interrupted.execution_id)


def test_two_runs_at_once_on_one_root_both_complete(tmp_path):
  runs = [start(tmp_path), start(tmp_path)]
  results = [r.communicate(timeout=900) for r in runs]
  assert [r.returncode for r in runs] == [0, 0], results
  waited = [out for out, _ in results if 'Waiting for another run of this pipeline' in out]
  assert len(waited) == 1
  store = metadata.open_store(db_of(tmp_path))  # still readable
  assert len(metadata.run_ids(store)) == 2
  assert {s for _, s in states(tmp_path, 0)} == {'COMPLETE'}
  assert {s for _, s in states(tmp_path, 1)} == {'CACHED'}


def test_same_input_twice_gives_the_same_vocabulary_and_examples(pipeline_run, tmp_path):
  """A second, independent run (fresh root) against the shared e2e run."""
  compare_transform.run_to_transform(DATA_ROOT, str(tmp_path), 'fast')
  first = compare_transform.transform_outputs(pipeline_run.pipeline_root)
  second = compare_transform.transform_outputs(settings_of({'COCO_OUTPUT_DIR': str(tmp_path)}).run.pipeline_root)
  assert len(first[0].splitlines()) > 100
  assert sum(len(s) for s in first[1].values()) == len(csv_rows(DATA_ROOT))
  assert compare_transform.differences(first, second) == []
