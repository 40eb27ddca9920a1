"""The pipeline's Beam stages on a real Apache Flink cluster (`tools/flink.sh`).

`tools/flink.sh up` starts a JobManager and a TaskManager (separate JVMs, 2
slots), Beam's Flink job server and the SDK worker pool; a partial run up to
Transform with COCO_BEAM_MODE=flink then runs CsvExampleGen, StatisticsGen
and Transform as Flink jobs. Evidence from Flink itself (its REST API): one
finished job per Beam stage, parallelism 2, records read and written. The
results equal the shared DirectRunner run's (same data, same settings).
"""

import json
import os
import subprocess
import urllib.request

import pytest

from bench import compare_transform
from pipeline import settings
from tests.conftest import DATA_ROOT, run_local, settings_of

pytestmark = pytest.mark.slow
FLINK_SH = os.path.join(settings.PROJECT_DIR, 'tools', 'flink.sh')
REST = 'http://localhost:8081'
BEAM_STAGES = ('CsvExampleGen', 'StatisticsGen', 'Transform')


def rest(path: str) -> dict:
  with urllib.request.urlopen(REST + path, timeout=30) as answer:
    return json.load(answer)


@pytest.fixture(scope='module')
def flink_cluster():
  up = subprocess.run(['bash', FLINK_SH, 'up'], capture_output=True, text=True, timeout=1200)
  assert up.returncode == 0, up.stdout + up.stderr[-3000:]
  try:
    yield rest('/overview')
  finally:
    subprocess.run(['bash', FLINK_SH, 'down'], capture_output=True, text=True, timeout=120)


def test_the_cluster_is_a_jobmanager_and_a_taskmanager_with_two_slots(flink_cluster):
  assert flink_cluster['taskmanagers'] == 1 and flink_cluster['slots-total'] == 2
  assert flink_cluster['flink-version'] == '1.16.3'


def test_beam_stages_run_as_flink_jobs_with_the_direct_runners_results(
    flink_cluster, pipeline_run, tmp_path):
  before = {j['jid'] for j in rest('/jobs/overview')['jobs']}
  env = dict(os.environ, COCO_OUTPUT_DIR=str(tmp_path), COCO_DATA_ROOT=DATA_ROOT,
             COCO_BEAM_MODE='flink', COCO_RUN_TO='Transform')
  result = run_local(env)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert 'with Beam flink' in result.stdout
  for stage in BEAM_STAGES:
    assert f'] {stage}' in result.stdout and 'ran' in result.stdout

  jobs = [rest(f'/jobs/{j["jid"]}') for j in rest('/jobs/overview')['jobs']
          if j['jid'] not in before]
  assert len(jobs) >= len(BEAM_STAGES), [j['name'] for j in jobs]
  for job in jobs:
    assert job['state'] == 'FINISHED', job['name']
    assert {v['parallelism'] for v in job['vertices']} == {2}, job['name']
    assert sum(v['metrics']['read-records'] for v in job['vertices']) > 0, job['name']
    assert sum(v['metrics']['write-records'] for v in job['vertices']) > 0, job['name']

  # The same vocabulary bytes and transformed examples as the DirectRunner run.
  on_flink = compare_transform.transform_outputs(settings_of(env).run.pipeline_root)
  direct = compare_transform.transform_outputs(pipeline_run.pipeline_root)
  assert sum(len(s) for s in on_flink[1].values()) == sum(len(s) for s in direct[1].values()) > 0
  assert compare_transform.differences(direct, on_flink) == []
