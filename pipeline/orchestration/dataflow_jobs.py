"""Dataflow jobs built offline: each Beam stage of the compiled Kubeflow/Vertex
spec constructs its Dataflow job with Beam's own DataflowRunner, and the job
is written to a file instead of being submitted.

How: a stage's task runs as in the rehearsal (rehearsal.py: the spec's
command, the image-like environment, the `ExecutorInput` of a rehearsed job,
so the inputs are real artifacts; outputs go to a scratch directory) with
the Beam arguments of the *Dataflow* spec, except `--runner`: it names
`OfflineDataflowRunner` below, Beam's DataflowRunner whose `run_pipeline`
first checks the options as Beam checks them for the service (project id,
job name, region, gs:// temp and staging locations; not the soft-delete
policy of the bucket, which Beam looks up over the network), then is Beam's
own with `--dry_run` (the Runner v2 pipeline proto and the Job), plus the
job's `Environment` as Beam's `create_job_description` builds it (worker
pool, SDK container image, temp storage, experiments, pipeline options)
without the uploads. It writes the job and the pipeline proto to Beam's
`--dataflow_job_file` and ends the task: nothing ran, so nothing after the
Beam pipeline (an executor's post-run steps) can.

`summary` and `unsupported_transforms` read such a file: the settings a
Dataflow job carries and the transforms Dataflow Runner v2 would refuse.
"""

import json
import os
from typing import Any, Dict, List, Mapping

from apache_beam.options import pipeline_options
from apache_beam.portability import common_urns
from apache_beam.runners.dataflow import dataflow_runner

JOB_FILE_OPTION = '--dataflow_job_file'   # Beam's own: where a job's JSON is written
RUNNER = f'{__name__}.OfflineDataflowRunner'

# What a Dataflow Runner v2 job may contain: Beam's standard primitive and
# composite transforms, the phases of combiners and of splittable DoFns
# (the Beam model's URNs, which the portable runners, Dataflow's among them,
# execute). Python-only primitives (`beam:transform:read:v1` and the like)
# and transforms without a URN are not in it: Beam replaces them for
# Dataflow, and a job that still has one would fail at submission.
RUNNER_V2_URNS = frozenset(
    urn.urn for group in (common_urns.primitives, common_urns.composites,
                          common_urns.combine_components, common_urns.sdf_components)
    for urn in vars(group).values() if hasattr(urn, 'urn')) - {
        common_urns.deprecated_primitives.READ.urn, common_urns.primitives.TEST_STREAM.urn}


def _staged_names(proto_pipeline) -> List[str]:
  """The files Beam would stage for the workers (setup.py's sdist, ...)."""
  from apache_beam.portability.api import beam_runner_api_pb2  # pylint: disable=g-import-not-at-top
  names = []
  for environment in proto_pipeline.components.environments.values():
    for dependency in environment.dependencies:
      payload = beam_runner_api_pb2.ArtifactStagingToRolePayload()
      payload.ParseFromString(dependency.role_payload)
      names.append(payload.staged_name)
  return sorted(set(names))


def validate(options, runner) -> None:
  """Beam's checks of a service job's options, without its network lookups."""
  from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator  # pylint: disable=g-import-not-at-top
  cloud = options.view_as(pipeline_options.GoogleCloudOptions)
  validator = PipelineOptionsValidator(options, runner)
  errors = (validator.validate_gcs_path(cloud, 'temp_location')
            + validator.validate_gcs_path(cloud, 'staging_location')
            + validator.validate_cloud_options(cloud))
  if not cloud.region:
    errors.append('Missing required option: region.')
  if errors:
    raise ValueError('invalid Dataflow options: ' + '; '.join(errors))


class OfflineDataflowRunner(dataflow_runner.DataflowRunner):  # pylint: disable=abstract-method
  """Beam's DataflowRunner that builds the job and writes it, never submits."""

  def run_pipeline(self, pipeline, options, pipeline_proto=None):
    # pylint: disable=g-import-not-at-top
    from apache_beam.runners.dataflow.internal import apiclient
    from apache_beam.runners.internal import names
    from google.protobuf import json_format
    path = options.view_as(pipeline_options.DebugOptions).dataflow_job_file
    if not path:
      raise ValueError(f'{RUNNER} needs {JOB_FILE_OPTION}=PATH')
    validate(options, self)
    options.view_as(pipeline_options.TestOptions).dry_run = True
    super().run_pipeline(pipeline, options, pipeline_proto)
    job = self.job
    staging = job.google_cloud_options.staging_location.rstrip('/')
    job.proto.environment = apiclient.Environment(
        packages=_staged_names(job.proto_pipeline), options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,  # pylint: disable=protected-access
        proto_pipeline_staged_url=f'{staging}/{names.STAGED_PIPELINE_FILENAME}',
        proto_pipeline=job.proto_pipeline).proto
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      json.dump({'job': json.loads(job.json()),
                 'pipeline': json_format.MessageToDict(job.proto_pipeline)}, f, indent=1)
    print(f'Dataflow job built offline, not submitted: {path}', flush=True)
    raise SystemExit(0)


# ------------------------------------------------------------------ reading a built job
def load(path: str) -> Dict[str, Any]:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def pipeline_options_of(built: Mapping[str, Any]) -> Dict[str, Any]:
  """The pipeline options the job hands the workers (sdkPipelineOptions)."""
  props = built['job']['environment']['sdkPipelineOptions']
  return props['options']


def leaf_transforms(built: Mapping[str, Any]) -> Dict[str, str]:
  """unique name -> URN of every transform that has no subtransforms (what runs)."""
  transforms = built['pipeline']['components']['transforms']
  return {t['uniqueName']: t.get('spec', {}).get('urn', '')
          for t in transforms.values() if not t.get('subtransforms')}


def unsupported_transforms(built: Mapping[str, Any]) -> Dict[str, str]:
  """Leaf transforms Dataflow Runner v2 would not accept (name -> URN or '')."""
  return {name: urn for name, urn in leaf_transforms(built).items() if urn not in RUNNER_V2_URNS}


def summary(built: Mapping[str, Any]) -> Dict[str, Any]:
  """What a person checks before submitting: where, on what, with which code."""
  environment = built['job']['environment']
  pool = environment['workerPools'][0]
  options = pipeline_options_of(built)
  return {
      'project': options.get('project'),
      'region': options.get('region'),
      'temp_location': options.get('temp_location'),
      'staging_location': options.get('staging_location'),
      'machine_type': pool.get('machineType'),
      'max_workers': pool.get('autoscalingSettings', {}).get('maxNumWorkers'),
      'disk_size_gb': pool.get('diskSizeGb'),
      'images': sorted({i['containerImage'] for i in pool.get('sdkHarnessContainerImages', [])}),
      'staged': [p['name'] for p in pool.get('packages', [])],
      'experiments': environment.get('experiments', []),
      'transforms': len(leaf_transforms(built)),
  }


# ------------------------------------------------------------------ building every stage's job
class NotBuilt(RuntimeError):
  """A stage could not build its job; the message names the stage and its log."""


def is_beam_stage(args: List[str]) -> bool:
  """Whether a task's executor runs Beam pipelines (a TFX BaseBeamExecutor)."""
  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.base import base_beam_executor
  from tfx.utils import import_utils
  if '--executor_class_path' not in args:
    return False
  executor = import_utils.import_class_by_path(args[args.index('--executor_class_path') + 1])
  return issubclass(executor, base_beam_executor.BaseBeamExecutor)


def offline_args(args: List[str], job_file: str) -> List[str]:
  """The spec's arguments with the offline runner in place of DataflowRunner."""
  if '--runner=DataflowRunner' not in args:
    raise NotBuilt('the spec was not compiled for Dataflow (COCO_KFP_BEAM_MODE=dataflow)')
  return [f'--runner={RUNNER}' if a == '--runner=DataflowRunner' else a
          for a in args] + [f'{JOB_FILE_OPTION}={job_file}']


def build_job(spec, task: str, given, out_dir: str, env: Mapping[str, str], workdir: str) -> str:
  """Builds one stage's Dataflow job from its ExecutorInput `given` (outputs
  are moved under `out_dir/<task>`); returns the job file."""
  # pylint: disable=g-import-not-at-top
  from pipeline.orchestration import kfp_spec, rehearsal
  container = kfp_spec.executor(spec, task).container
  task_dir = os.path.join(out_dir, task)
  for key, listed in given.outputs.artifacts.items():
    for artifact in listed.artifacts:
      artifact.uri = os.path.join(task_dir, key)
      os.makedirs(artifact.uri, exist_ok=True)
  given.outputs.output_file = os.path.join(task_dir, rehearsal.EXECUTOR_OUTPUT_FILE)
  job_file = os.path.join(task_dir, 'dataflow_job.json')
  log = os.path.join(task_dir, rehearsal.LOG_FILE)
  try:
    rehearsal.run_command(task, [*container.command, *offline_args(list(container.args), job_file)],
                          given, env, workdir, log)
  except rehearsal.TaskFailed as error:
    raise NotBuilt(str(error)) from None
  if not os.path.exists(job_file):
    raise NotBuilt(f'{task}: the stage ended without building a Dataflow job (log: {log})')
  return job_file


def build_jobs(spec_path: str, rehearsed_job_dir: str, out_dir: str, env: Mapping[str, str],
               workdir: str, report=print) -> Dict[str, str]:
  """Builds the Dataflow job of every Beam stage of the spec at `spec_path`;
  returns task -> job file. Each stage takes the ExecutorInput its task had
  in the rehearsed job (its real input artifacts and parameters)."""
  # pylint: disable=g-import-not-at-top
  import time
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2 as pb
  from pipeline.orchestration import kfp_spec, rehearsal
  spec = kfp_spec.load(spec_path)
  built = {}
  for task in kfp_spec.task_order(spec):
    executor = kfp_spec.executor(spec, task)
    if executor.WhichOneof('spec') != 'container' or not is_beam_stage(list(executor.container.args)):
      continue
    rehearsed = os.path.join(rehearsed_job_dir, task, rehearsal.EXECUTOR_INPUT_FILE)
    if not os.path.exists(rehearsed):
      raise NotBuilt(f'{task}: no rehearsed ExecutorInput at {rehearsed} (rehearse first, '
                     'with the same settings)')
    given = pb.ExecutorInput()
    with open(rehearsed, encoding='utf-8') as f:
      json_format.Parse(f.read(), given)
    start = time.monotonic()
    built[task] = build_job(spec, task, given, out_dir, env, workdir)
    found = summary(load(built[task]))
    report(f'{task:<16} {time.monotonic() - start:5.1f}s  {found["transforms"]} transforms, '
           f'{found["machine_type"]} x <= {found["max_workers"]}, {found["region"]}, '
           f'image {", ".join(found["images"])}')
  return built
