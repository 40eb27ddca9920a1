"""The tfx CLI drives local_runner.py (`--engine local`)."""

import os
import subprocess
import sys

import pytest

from pipeline.artifacts import metadata
from pipeline import settings
from tests.conftest import COMPONENTS, RESOLVER

pytestmark = pytest.mark.slow
TFX = os.path.join(os.path.dirname(sys.executable), 'tfx')


def tfx_cli(args, env):
  return subprocess.run([TFX, *args], capture_output=True, text=True, env=env,
                        cwd=settings.PROJECT_DIR, timeout=900)


def test_pipeline_create_and_run_create_local(pipeline_run, tmp_path):
  """Reuses the shared run's outputs, so `tfx run create` is a fully cached run."""
  env = dict(os.environ, LOCAL_HOME=str(tmp_path / 'local_home'),
             COCO_OUTPUT_DIR=pipeline_run.output_dir,
             COCO_DATA_ROOT=pipeline_run.env['COCO_DATA_ROOT'],
             COCO_TRAIN_STEPS=pipeline_run.env['COCO_TRAIN_STEPS'],
             COCO_STEPS_PER_EPOCH=pipeline_run.env['COCO_STEPS_PER_EPOCH'])
  created = tfx_cli(['pipeline', 'create', '--engine', 'local',
                     '--pipeline_path', 'local_runner.py'], env)
  assert created.returncode == 0, created.stdout + created.stderr
  assert f'Pipeline "{settings.PIPELINE_NAME}" created successfully' in created.stdout
  assert os.path.isdir(tmp_path / 'local_home' / settings.PIPELINE_NAME)

  store = metadata.open_store(pipeline_run.metadata_path)
  runs_before = len(metadata.run_ids(store))
  ran = tfx_cli(['run', 'create', '--engine', 'local', '--pipeline_name', settings.PIPELINE_NAME], env)
  assert ran.returncode == 0, ran.stdout + ran.stderr
  store = metadata.open_store(pipeline_run.metadata_path)
  assert len(metadata.run_ids(store)) == runs_before + 1
  states = {r.component: r.state for r in metadata.component_runs(store)}
  assert set(states) == set(COMPONENTS)
  # Everything cached but the resolver, which looks up the latest blessed model every run.
  assert {c: s for c, s in states.items() if s != 'CACHED'} == {RESOLVER: 'COMPLETE'}
