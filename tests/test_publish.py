"""What is published stays whole under faults: real runs of local_runner.py
killed mid-Evaluator and mid-push, a pipeline root and a serving directory on
a file system that fills up. Each is checked against ML Metadata and the
serving directory, and against a run that never failed.

The evaluate-and-push runs use tests/test_evaluation.py's continuous-training
settings (5,000 captions, a 1,000-token vocabulary, 200 steps: the smallest
run that is blessed and pushed). The two kills share one root, one after the
other: killed in the Evaluator, then killed in the Pusher by the run after it
(its pushes slowed by tests/faults/sitecustomize.py), then a normal run; the
end is compared with an uninterrupted run of the same settings. The full disk is a size-limited tmpfs the
test mounts (root only; these machines run tests as root). The damaged and
locked ML Metadata store is tests/test_store_health.py's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from bench import compare_transform
from pipeline import settings as settings_lib
from pipeline.artifacts import metadata
from pipeline.components import pusher
from tests.conftest import E2E_TRAIN_STEPS, file_tree, run_local, settings_of
from tests.test_evaluation import CT_CAPTIONS, CT_STEPS, CT_VOCAB, SHIPPED, write_subset

pytestmark = pytest.mark.slow
FAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'faults')  # sitecustomize.py
SLOW_PUSH_SECONDS = 0.5          # per file: a push of the model then takes a few seconds
BEFORE_TRAINER = ['CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'Transform']


def ct_env(output_dir, **extra):
  data = write_subset(SHIPPED, os.path.join(output_dir, 'data'), CT_CAPTIONS)
  return dict(os.environ, COCO_OUTPUT_DIR=output_dir, COCO_DATA_ROOT=data, COCO_IMAGES='0',
              COCO_REPORT='0', COCO_TRAIN_STEPS=str(CT_STEPS), COCO_STEPS_PER_EPOCH=str(CT_STEPS),
              COCO_VOCAB_SIZE=str(CT_VOCAB), **extra)


def start(env):
  return subprocess.Popen([sys.executable, os.path.join(settings_lib.PROJECT_DIR, 'local_runner.py')],
                          env=env, cwd=settings_lib.PROJECT_DIR, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True)


def kill(process):
  os.killpg(process.pid, signal.SIGKILL)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL


def wait_for(process, condition, what, timeout=600):
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, f'the run ended before {what}: {process.communicate()}'
    if condition():
      return
    time.sleep(0.05)
  raise AssertionError(f'never saw {what}')


def states(env, run_index=-1):
  store = metadata.open_store(settings_of(env).run.metadata_file)
  run_id = metadata.run_ids(store)[run_index]
  return {r.component: r.state for r in metadata.component_runs(store, run_id)}


def running(env, component):
  db = settings_of(env).run.metadata_file
  if not os.path.exists(db):
    return False
  try:
    runs = metadata.component_runs(metadata.open_store(db))
  except Exception:  # pylint: disable=broad-except  # the store is being created
    return False
  return any(r.component == component and r.state == 'RUNNING' for r in runs)


def model_identity(version_dir):
  """What makes two pushed versions the same model: their files, and the
  fingerprint's hashes of the graph, the signatures, the object graph and
  the weights (its saved_model_checksum also covers paths written into the
  SavedModel, which differ between pipeline roots)."""
  from tensorflow.core.protobuf import fingerprint_pb2  # pylint: disable=g-import-not-at-top
  with open(os.path.join(version_dir, pusher.FINGERPRINT_FILE), 'rb') as f:
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(f.read())
  names = sorted(os.path.relpath(os.path.join(d, n), version_dir)
                 for d, _, ns in os.walk(version_dir) for n in ns)
  return (names, fingerprint.graph_def_program_hash, fingerprint.signature_def_hash,
          fingerprint.saved_object_graph_hash, fingerprint.checkpoint_hash)


def published(env):
  """The decision and what is in the serving directory: (blessed, [each
  version's model identity]); anything there besides whole versions fails."""
  settings = settings_of(env)
  base = settings.serving.model_dir(settings.run)
  run = metadata.load_run(settings.run.metadata_file)
  blessed = run.artifact('Evaluator', 'blessing').custom_properties['blessed'].int_value == 1
  names = sorted(os.listdir(base)) if os.path.isdir(base) else []
  assert names == pusher.versions(base), f'not only versions in {base}: {names}'
  return blessed, [model_identity(os.path.join(base, v)) for v in names]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  env = ct_env(str(tmp_path_factory.mktemp('uninterrupted')))
  result = run_local(env)
  assert result.returncode == 0, result.stdout + result.stderr
  found = published(env)
  assert found[0] and len(found[1]) == 1, f'the reference run must bless and push: {found}'
  return found


def slowed(env):
  """The run's environment with each file of a push slowed (tests/faults)."""
  return dict(env, PYTHONPATH=os.pathsep.join(filter(None, [FAULTS, env.get('PYTHONPATH')])),
              SLOW_PUSH_SECONDS=str(SLOW_PUSH_SECONDS))


@pytest.fixture(scope='module')
def killed_twice(tmp_path_factory):
  """One root, three runs: SIGKILLed while its Evaluator runs; run again with
  slow pushes and SIGKILLed while its Pusher copies; run again as usual.
  Returns the environment and what each step left."""
  env = ct_env(str(tmp_path_factory.mktemp('killed')))
  base = settings_of(env).serving.model_dir(settings_of(env).run)
  seen = {}
  run = start(env)
  wait_for(run, lambda: running(env, 'Evaluator'), 'the Evaluator running')
  kill(run)
  seen['evaluator killed'] = states(env), pusher.versions(base)

  def copying():
    staging = [p for p in pusher.leftovers(base) if pusher.STAGING_PREFIX in p]
    return staging and any(names for _, _, names in os.walk(staging[0]))
  run = start(slowed(env))
  wait_for(run, copying, 'the Pusher copying')
  kill(run)
  seen['pusher killed'] = states(env), pusher.versions(base), pusher.leftovers(base)
  seen['resumed'] = run_local(env)
  return env, seen


def test_sigkill_during_the_evaluator_then_the_next_run_decides_as_if_uninterrupted(
    killed_twice, uninterrupted):
  env, seen = killed_twice
  killed, versions = seen['evaluator killed']
  assert killed['Evaluator'] == 'RUNNING' and 'Pusher' not in killed and versions == []
  after, _, _ = seen['pusher killed']       # the run after it, up to its Pusher
  assert [after[c] for c in BEFORE_TRAINER + ['Trainer']] == ['CACHED'] * 5
  assert after['Evaluator'] == 'COMPLETE'
  db = settings_of(env).run.metadata_file
  store = metadata.open_store(db)
  first_two = metadata.run_ids(store)[:2]
  assert [r.state for run_id in first_two for r in metadata.component_runs(store, run_id)
          if r.component == 'Evaluator'] == ['CANCELED', 'COMPLETE']
  second = metadata.load_run(db, first_two[1])
  blessing = second.artifact('Evaluator', 'blessing').custom_properties['blessed'].int_value
  assert (blessing == 1) == uninterrupted[0]    # the decision of the run after the kill


def test_sigkill_while_the_pusher_copies_then_the_next_run_pushes_the_model_whole(
    killed_twice, uninterrupted):
  env, seen = killed_twice
  killed, versions, leftovers = seen['pusher killed']
  assert killed['Pusher'] == 'RUNNING'
  assert versions == []                                       # no numbered, incomplete version
  (leftover,) = leftovers
  assert os.path.basename(leftover).startswith(pusher.STAGING_PREFIX)
  resumed = seen['resumed']
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'Marked unfinished executions of an earlier run CANCELED: Pusher' in resumed.stdout
  after = states(env)
  assert after['Pusher'] == 'COMPLETE'
  assert [after[c] for c in BEFORE_TRAINER + ['Trainer']] == ['CACHED'] * 5
  base = settings_of(env).serving.model_dir(settings_of(env).run)
  assert pusher.leftovers(base) == []                          # removed, not left to grow
  assert published(env) == uninterrupted                       # decision and serving directory


# ------------------------------------------------------------------ a full disk
@pytest.fixture
def small_disk(tmp_path):
  """Mounts a tmpfs of `size` at a new directory; unmounted afterwards."""
  if os.geteuid() != 0:
    pytest.skip('mounting a size-limited tmpfs needs root (the project machines run tests as root)')
  mounted = []

  def mount(name, size):
    path = tmp_path / name
    path.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                            capture_output=True, text=True)
    if result.returncode:
      pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    mounted.append(path)
    return str(path)
  yield mount
  for path in mounted:
    subprocess.run(['umount', '-l', str(path)], check=False)


def remount(path, size):
  subprocess.run(['mount', '-o', f'remount,size={size}', path], check=True)


def test_a_disk_that_fills_during_the_trainer_stops_the_run_in_one_line_then_it_resumes(
    small_disk, pipeline_run):
  """3 MiB holds everything up to the Trainer (~0.7 MiB on the tests' sample),
  not its model (~9 MiB)."""
  root = small_disk('root', '3m')
  env = dict(pipeline_run.env, COCO_OUTPUT_DIR=root, COCO_RUN_TO='Trainer', COCO_REPORT='0')
  failed = run_local(env)
  assert failed.returncode == 1
  assert 'Traceback' not in failed.stdout + failed.stderr
  (line,) = failed.stderr.strip().splitlines()
  assert line.startswith(f'error: Trainer: no space left on device writing {root}/'), line
  assert f'the file system at {root} has' in line
  store = metadata.open_store(settings_of(env).run.metadata_file)
  trainer = [r for r in metadata.component_runs(store) if r.component == 'Trainer']
  assert [r.state for r in trainer] == ['FAILED']
  outputs = [e.artifact_id for e in store.get_events_by_execution_ids([trainer[0].execution_id])
             if e.type == metadata_store_pb2.Event.OUTPUT]
  assert [a for a in store.get_artifacts_by_id(outputs)
          if a.state == metadata_store_pb2.Artifact.LIVE] == []

  remount(root, '64m')
  resumed = run_local(env)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  after = states(env)
  assert [after[c] for c in BEFORE_TRAINER] == ['CACHED'] * 4 and after['Trainer'] == 'COMPLETE'
  resumed_root = settings_of(env).run.pipeline_root
  assert compare_transform.differences(compare_transform.transform_outputs(pipeline_run.pipeline_root),
                                       compare_transform.transform_outputs(resumed_root)) == []
  metrics = [json.load(open(os.path.join(
      metadata.load_run(settings_of(e).run.metadata_file).output('Trainer', 'model'),
      'metrics.json'))) for e in (pipeline_run.env, env)]
  assert metrics[0]['train_steps'] == metrics[1]['train_steps'] == E2E_TRAIN_STEPS
  assert metrics[0]['eval_perplexity'] == metrics[1]['eval_perplexity']


def test_a_serving_directory_that_fills_during_a_push_leaves_the_previous_version_serving(
    small_disk, killed_twice):
  """The resumed run's model, pushed again into a small file system that
  holds an older version (its fingerprint changed: another model) and not
  room for a second one."""
  env = killed_twice[0]
  settings = settings_of(env)
  (version,) = pusher.versions(settings.serving.model_dir(settings.run))
  model = os.path.join(settings.serving.model_dir(settings.run), version)
  size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(model) for n in ns)
  serving = small_disk('serving', f'{int(size * 1.5) // 1024}k')
  env = dict(env, COCO_SERVING_DIR=serving)
  base = settings_of(env).serving.model_dir(settings_of(env).run)
  shutil.copytree(model, os.path.join(base, '1'))
  with open(os.path.join(base, '1', pusher.FINGERPRINT_FILE), 'ab') as f:
    f.write(b'an older model')
  before = file_tree(base)

  result = run_local(env)
  assert result.returncode == 1
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f'error: Pusher: no space left on device writing {base}/'), line
  assert 'Traceback' not in result.stdout + result.stderr
  assert file_tree(base) == before and os.listdir(base) == ['1']   # no staging left behind
  assert states(env)['Pusher'] == 'FAILED'
