"""The whole default DAG with every Beam stage on a real Apache Flink cluster.

`tools/flink.sh up` starts a JobManager and a TaskManager (separate JVMs, 2
slots), Beam's Flink job server and the SDK worker pool. One run of the whole
pipeline with COCO_BEAM_MODE=flink, on the same data and settings as the
shared DirectRunner run (`pipeline_run`), is then checked:
- evidence from Flink itself (its REST API): each Beam stage (CsvExampleGen,
  StatisticsGen, Transform, Evaluator) is a finished Flink job named after it,
  at parallelism 2, with records read and written; the job ids are in ML
  Metadata, the run summary and the report;
- the same results as DirectRunner (bench/compare_engines.py): examples per
  split, statistics counts, vocabulary bytes, transformed examples, TFMA's
  perplexity and the blessing decision;
- a fault: while Transform's Flink job runs, its TaskManager is killed
  (SIGKILL) and started again; Flink's restart strategy
  (tools/flink/flink-conf.yaml) reruns the job, the run completes with the
  results above, and ML Metadata holds one Transform execution, COMPLETE;
- images on: CsvExampleGen and ImageExampleGen on coco-mini (159 real COCO
  images, from ../shared) as finished Flink jobs, with the same image examples
  and dead letter as the same run on DirectRunner.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from bench import compare_engines
from pipeline import settings
from pipeline.artifacts import metadata
from pipeline.orchestration import flink
from tests.conftest import PROJECT_DIR, run_local, settings_of
from tests.test_images import COCO_MINI, ingest_coco_mini

pytestmark = pytest.mark.slow
FLINK_SH = os.path.join(settings.PROJECT_DIR, 'tools', 'flink.sh')
BEAM_STAGES = ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')
IMAGE_STAGES = ('CsvExampleGen', 'ImageExampleGen')
KILLED_DURING = 'Transform'
REST = settings.Settings.from_env({}).beam.flink_rest


def flink_sh(*args, timeout=1200) -> subprocess.CompletedProcess:
  return subprocess.run(['bash', FLINK_SH, *args], capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope='module')
def flink_cluster():
  up = flink_sh('up')
  assert up.returncode == 0, up.stdout + up.stderr[-3000:]
  try:
    yield flink.rest(REST, '/overview')
  finally:
    flink_sh('down', timeout=120)


def running_job(name: str, deadline: float):
  """The RUNNING Flink job named `name` once its tasks run, or None at the deadline."""
  while time.time() < deadline:
    for job in flink.jobs(REST):
      if job.name == name and job.state == 'RUNNING':
        details = flink.rest(REST, f'/jobs/{job.jid}')
        if any(v['status'] == 'RUNNING' for v in details['vertices']):
          return job
    time.sleep(0.5)
  return None


def worker_starts() -> int:
  """How many Python SDK workers the cluster's worker pool has started."""
  with open(flink_sh('log', 'workers').stdout.strip(), errors='replace') as f:
    return f.read().count('Starting worker with command')


class FlinkRun:
  """The whole DAG on Flink, with the TaskManager killed during Transform."""

  def __init__(self, env, output_dir: str):
    self.env = dict(env, COCO_OUTPUT_DIR=output_dir, COCO_BEAM_MODE='flink')
    self.pipeline_root = settings_of(self.env).run.pipeline_root
    out, err = (open(os.path.join(output_dir, name), 'w+') for name in ('stdout', 'stderr'))
    workers_before = worker_starts()
    run = subprocess.Popen([sys.executable, os.path.join(PROJECT_DIR, 'local_runner.py')],
                           env=self.env, cwd=PROJECT_DIR, text=True, stdout=out, stderr=err)
    job = running_job(f'{settings.PIPELINE_NAME}-{KILLED_DURING}', time.time() + 600)
    self.killed_job, self.restarted = (job.jid if job else None), None
    if job:
      time.sleep(3)   # mid-job: its tasks have started reading
      os.kill(int(flink_sh('pid', 'taskmanager').stdout), signal.SIGKILL)
      time.sleep(2)
      self.restarted = flink_sh('up')   # starts what is missing: the TaskManager
    self.returncode = run.wait(timeout=1200)
    self.worker_starts = worker_starts() - workers_before
    self.stdout, self.stderr = (f.seek(0) or f.read() for f in (out, err))
    out.close()
    err.close()
    self.run = metadata.load_run(settings_of(self.env).run.metadata_file)
    self.flink_jobs = {r.component: r.jobs for r in self.run.components if r.jobs}


@pytest.fixture(scope='module')
def flink_run(flink_cluster, pipeline_run, tmp_path_factory):
  del flink_cluster
  run = FlinkRun(pipeline_run.env, str(tmp_path_factory.mktemp('flink')))
  assert run.returncode == 0, run.stdout + run.stderr[-3000:]
  return run


def test_the_cluster_is_a_jobmanager_and_a_taskmanager_with_two_slots(flink_cluster):
  assert flink_cluster['taskmanagers'] == 1 and flink_cluster['slots-total'] == 2
  assert flink_cluster['flink-version'] == '1.16.3'


def test_each_beam_stage_ran_as_a_finished_flink_job_at_parallelism_2(flink_run):
  assert sorted(flink_run.flink_jobs) == sorted(BEAM_STAGES)
  for stage, job_ids in flink_run.flink_jobs.items():
    assert len(job_ids) == 1, (stage, job_ids)
    job = flink.rest(REST, f'/jobs/{job_ids[0]}')
    assert job['name'] == f'{settings.PIPELINE_NAME}-{stage}'
    assert job['state'] == 'FINISHED', stage
    assert {v['parallelism'] for v in job['vertices']} == {2}, stage
    assert sum(v['metrics']['read-records'] for v in job['vertices']) > 0, stage
    assert sum(v['metrics']['write-records'] for v in job['vertices']) > 0, stage
  others = {r.engine for r in flink_run.run.components if r.component not in BEAM_STAGES}
  assert others == {'in process'}


def test_each_job_keeps_its_python_workers_from_stage_to_stage(flink_run):
  # A job's stages run one after another; each new set of workers imports
  # TensorFlow again (~4 s each). Without the environment cache (Beam's
  # classes on the TaskManager's classpath) this run started 21 workers.
  restarted_transform = 1
  assert 0 < flink_run.worker_starts <= len(BEAM_STAGES) + restarted_transform, (
      flink_run.worker_starts)


def test_the_summary_and_the_report_name_the_engine_and_the_job_ids(flink_run):
  for stage, (job_id,) in flink_run.flink_jobs.items():
    assert f'{stage} on Flink at {REST}: job {job_id}' in flink_run.stdout
  with open(os.path.join(flink_run.pipeline_root, settings.REPORT_FILE)) as f:
    report = f.read()
  assert all(f'job <code>{job_id}</code>' in report for (job_id,) in flink_run.flink_jobs.values())


def test_the_results_equal_the_direct_runners(flink_run, pipeline_run):
  checks = compare_engines.checks(pipeline_run.pipeline_root, flink_run.pipeline_root)
  assert [what for what, equal, _ in checks if not equal] == [], checks
  assert len(checks) == 5


def test_a_taskmanager_killed_during_transform_is_recovered_by_flinks_restart(flink_run):
  assert flink_run.killed_job, 'Transform\'s Flink job was never seen running'
  assert flink_run.restarted is not None and flink_run.restarted.returncode == 0, flink_run.restarted.stderr
  assert flink_run.flink_jobs['Transform'] == (flink_run.killed_job,)
  job = flink.rest(REST, f'/jobs/{flink_run.killed_job}')
  assert job['state'] == 'FINISHED' and job['timestamps']['RESTARTING'] > 0   # it restarted
  history = flink.rest(REST, f'/jobs/{flink_run.killed_job}/exceptions')['exceptionHistory']
  assert any('is no longer reachable' in e['stacktrace'] for e in history['entries']), history
  # ML Metadata: one Transform execution, COMPLETE, its outputs LIVE.
  store = metadata.open_store(settings_of(flink_run.env).run.metadata_file)
  transforms = [r for r in flink_run.run.components if r.component == 'Transform']
  assert [r.state for r in transforms] == ['COMPLETE']
  outputs = [store.get_artifacts_by_uri(uri)[0] for uri in flink_run.run.outputs['Transform'].values()]
  assert {a.state for a in outputs} == {outputs[0].LIVE}


@pytest.fixture(scope='module')
def image_runs(flink_cluster, tmp_path_factory):
  """CsvExampleGen -> ImageExampleGen on coco-mini, on DirectRunner and on Flink."""
  del flink_cluster
  root = tmp_path_factory.mktemp('flink-images')
  if not os.path.isdir(os.path.join(COCO_MINI, 'annotations')):
    pytest.skip(f'{COCO_MINI} is absent (159 real COCO images with their captions; '
                'the shared data sets live in ../shared/data)')
  captions = ingest_coco_mini(str(root / 'captions'))
  base = {k: v for k, v in os.environ.items() if not k.startswith(settings.ENV_PREFIX)}
  base.update(COCO_DATA_ROOT=captions, COCO_IMAGES='1', COCO_RUN_TO=IMAGE_STAGES[-1],
              COCO_IMAGE_DIR=os.path.join(COCO_MINI, '{folder}'))
  runs = {}
  for engine in ('in_memory', 'flink'):
    env = dict(base, COCO_OUTPUT_DIR=str(root / engine), COCO_BEAM_MODE=engine)
    result = run_local(env)
    assert result.returncode == 0, engine + result.stdout + result.stderr[-3000:]
    runs[engine] = settings_of(env).run.pipeline_root, metadata.load_run(
        settings_of(env).run.metadata_file), result.stdout
  return runs


def test_with_images_imageexamplegen_is_a_finished_flink_job_too(image_runs):
  _, run, stdout = image_runs['flink']
  jobs = {r.component: r.jobs for r in run.components if r.jobs}
  assert sorted(jobs) == sorted(IMAGE_STAGES)
  (job_id,) = jobs['ImageExampleGen']
  job = flink.rest(REST, f'/jobs/{job_id}')
  assert job['name'] == f'{settings.PIPELINE_NAME}-ImageExampleGen' and job['state'] == 'FINISHED'
  assert {v['parallelism'] for v in job['vertices']} == {2}
  assert sum(v['metrics']['write-records'] for v in job['vertices']) > 0
  assert f'ImageExampleGen on Flink at {REST}: job {job_id}' in stdout


def test_with_images_the_image_examples_equal_the_direct_runners(image_runs):
  checks = compare_engines.checks(image_runs['in_memory'][0], image_runs['flink'][0])
  assert [what for what, _, _ in checks] == ['examples per split', 'image examples',
                                             'image dead letter']
  assert [what for what, equal, _ in checks if not equal] == [], checks
  kept = compare_engines.image_examples(metadata.load_run(
      os.path.join(image_runs['flink'][0], 'metadata.db')))
  assert set(kept) == {'train', 'eval'} and all(kept.values())
