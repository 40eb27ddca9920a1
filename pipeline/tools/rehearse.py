"""Rehearse the Kubeflow Pipelines / Vertex AI pipeline here: compile it, then
execute the compiled spec's tasks one by one as a KFP v2 backend would.

    python -m pipeline.tools.rehearse             # or: make rehearse
    python -m pipeline.tools.rehearse --dataflow  # then: the Beam stages' Dataflow jobs, offline

1. Compiles the pipeline the way `kubeflow_runner.py` does (the same
   `kubeflow_pipeline` and `compile_pipeline`), with the roots pointed at
   local directories under `<COCO_OUTPUT_DIR>/rehearsal/`: the pipeline root,
   the input `COCO_DATA_ROOT`, Beam on the in-memory DirectRunner inside each
   task (`COCO_KFP_BEAM_MODE=in_memory`) and the Pusher writing to
   `rehearsal/serving` (`COCO_KFP_SERVING_DIR`) instead of Vertex AI. All other
   settings are the usual ones (README "Settings").
2. Makes or updates the virtualenv `COCO_IMAGE_VENV` the way the Dockerfile
   makes the image (pipeline/orchestration/image_env.py) and checks that a
   task imports this project from there, not from the checkout.
3. Runs every task (pipeline/orchestration/rehearsal.py says exactly what is
   and is not emulated), one line per task with its seconds, then the
   Evaluator's decision and what was pushed.

Each run is a new job in the same record, so a second rehearsal's resolver
finds the first one's blessed model, as on Vertex. Contacts nothing.

`--dataflow` compiles the spec as `kubeflow_runner.py` does for GCP (the
COCO_GCP_*, COCO_GCS_ROOT, COCO_IMAGE and COCO_DATAFLOW_* settings, Beam on
Dataflow) and has each Beam stage of it build its Dataflow job, with the
inputs of the latest rehearsed job, without submitting anything
(pipeline/orchestration/dataflow_jobs.py); one line per stage, the jobs in
`<COCO_OUTPUT_DIR>/rehearsal/dataflow/<stage>/dataflow_job.json`.
"""

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional

from pipeline.settings import PROJECT_DIR, Settings, SettingsError

SPEC_FILE = 'pipeline.json'
PIPELINE_ROOT = 'pipeline_root'
SERVING = 'serving'
DATAFLOW = 'dataflow'
IMAGE = 'coco-captions-tfx:rehearsal'   # never pulled: the image venv stands in for it


def rehearsal_settings(settings: Settings) -> Settings:
  """The settings compiled for a rehearsal: local roots, in-memory Beam, local push."""
  root = settings.run.rehearsal_dir
  gcp = dataclasses.replace(
      settings.gcp, kfp_pipeline_root=os.path.join(root, PIPELINE_ROOT),
      kfp_data_root=settings.run.data_root, kfp_beam_mode='in_memory',
      kfp_serving_dir=os.path.join(root, SERVING), kfp_image_dir=settings.images.location,
      image=settings.gcp.image or IMAGE)
  return dataclasses.replace(settings, gcp=gcp)


def dataflow_settings(settings: Settings) -> Settings:
  """The settings compiled for `--dataflow`: the user's GCP ones, Beam on Dataflow."""
  return dataclasses.replace(settings, gcp=dataclasses.replace(settings.gcp,
                                                               kfp_beam_mode='dataflow'))


def compile_spec(settings: Settings, output_dir: str) -> str:
  """Compiles with the code kubeflow_runner.py uses; returns the spec's path."""
  from pipeline.orchestration.kubeflow import compile_pipeline  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import kubeflow_pipeline  # pylint: disable=g-import-not-at-top
  return compile_pipeline(kubeflow_pipeline(settings), settings, output_dir=output_dir,
                          filename=SPEC_FILE)


def workdir() -> str:
  """A fresh working directory outside the checkout, as a container's."""
  path = tempfile.mkdtemp(prefix='coco-rehearsal-')
  if os.path.realpath(path).startswith(os.path.realpath(PROJECT_DIR) + os.sep):
    raise SettingsError(f'the temporary directory {path} lies inside the checkout; set TMPDIR')
  return path


def decision_lines(results) -> List[str]:
  """The Evaluator's decision and the push, from the tasks' own outputs."""
  from pipeline.artifacts import files  # pylint: disable=g-import-not-at-top
  outputs = {r.task: r.outputs for r in results}
  lines = []
  if 'Evaluator' in outputs:
    evaluator = outputs['Evaluator']
    found = files.evaluation(evaluator['evaluation'][0]['uri'], evaluator['blessing'][0]['uri'])
    lines.append(f'evaluation:    {found.decision()}')
  if 'Pusher' in outputs:
    pushed = outputs['Pusher']['pushed_model'][0]['metadata']
    lines.append('pushed:        ' + (pushed.get('pushed_destination')
                                      if pushed.get('pushed') else 'nothing (not blessed)'))
  return lines


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m pipeline.tools.rehearse',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--dataflow', action='store_true',
                      help="build the Beam stages' Dataflow jobs offline from the latest "
                           'rehearsed job (needs COCO_GCP_PROJECT and COCO_GCS_ROOT)')
  args = parser.parse_args(argv)
  try:
    user = Settings.from_env()
    settings = rehearsal_settings(user)
    if args.dataflow:
      user.gcp.require('project', 'gcs_root', purpose='Building Dataflow jobs')
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  from pipeline.orchestration import console  # pylint: disable=g-import-not-at-top
  if not settings.run.verbose:
    console.quiet_libraries()
    logging.getLogger('tensorflow').setLevel(logging.ERROR)
  root = settings.run.rehearsal_dir
  os.makedirs(root, exist_ok=True)
  start = time.monotonic()
  try:
    spec = (compile_spec(dataflow_settings(user), os.path.join(root, DATAFLOW)) if args.dataflow
            else compile_spec(settings, root))
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'compiled:      {spec} ({time.monotonic() - start:.1f}s)')
  return (dataflow_jobs(settings, spec) if args.dataflow else rehearse(settings, spec))


def task_environment(settings: Settings):
  """(env, working directory) of the tasks, or None after printing why not."""
  from pipeline.orchestration import image_env  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  log = os.path.join(settings.run.rehearsal_dir, 'image-env.log')
  try:
    venv = image_env.venv_of(settings.run)
    bin_dir = image_env.build(venv, log)
    cwd = workdir()
    env = image_env.task_env(bin_dir)
    found = image_env.imported_from(env, cwd, venv)
  except image_env.ImageEnvError as error:
    print(f'error: {error}', file=sys.stderr)
    return None
  print(f'environment:   {venv} ({time.monotonic() - start:.1f}s); '
        f'tasks import pipeline from {os.path.dirname(os.path.dirname(found["pipeline"]))}, '
        f'working directory {cwd}')
  return env, cwd


def rehearse(settings: Settings, spec: str) -> int:
  from pipeline.orchestration import rehearsal  # pylint: disable=g-import-not-at-top
  made = task_environment(settings)
  if made is None:
    return 1
  env, cwd = made
  root = settings.run.rehearsal_dir

  job = rehearsal.Rehearsal(spec, os.path.join(root, PIPELINE_ROOT), env, cwd)
  print(f'job:           {job.job_id} (logs and outputs in {job.job_dir})')
  start = time.monotonic()
  try:
    results = job.run()
  except (rehearsal.TaskFailed, rehearsal.kfp_spec.SpecError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  finally:
    shutil.rmtree(cwd, ignore_errors=True)
  print(f'Done in {time.monotonic() - start:.0f}s.')
  for line in decision_lines(results):
    print(line)
  return 0


def dataflow_jobs(settings: Settings, spec: str) -> int:
  # pylint: disable=g-import-not-at-top
  from pipeline.orchestration import dataflow_jobs as jobs, rehearsal
  root = settings.run.rehearsal_dir
  record = rehearsal.Record(os.path.join(root, PIPELINE_ROOT, rehearsal.RECORD_FILE))
  done = [j['job_id'] for j in record.data['jobs'] if j['status'] == 'SUCCEEDED']
  if not done:
    print(f'error: no rehearsed job in {record.path}; run `make rehearse` first', file=sys.stderr)
    return 1
  made = task_environment(settings)
  if made is None:
    return 1
  env, cwd = made
  print(f'inputs:        rehearsed job {done[-1]}')
  try:
    built = jobs.build_jobs(spec, os.path.join(root, PIPELINE_ROOT, done[-1]),
                            os.path.join(root, DATAFLOW), env, cwd)
  except jobs.NotBuilt as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  finally:
    shutil.rmtree(cwd, ignore_errors=True)
  for task, path in built.items():
    unsupported = jobs.unsupported_transforms(jobs.load(path))
    if unsupported:
      print(f'error: {task}: transforms Dataflow Runner v2 does not accept: {unsupported}',
            file=sys.stderr)
      return 1
  print(f'built {len(built)} Dataflow jobs, none submitted: {os.path.join(root, DATAFLOW)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
