"""Beam pipeline arguments, keyed by runner mode (`COCO_BEAM_MODE`).

- `in_memory`: DirectRunner in this process (fastest on a laptop-sized run).
- `multi_processing`: DirectRunner with `COCO_BEAM_WORKERS` worker processes.
- `portable`: PortableRunner against a Beam job service at
  `COCO_BEAM_JOB_ENDPOINT` (the Job API path Flink, Spark and Dataflow Runner v2
  use), workers in `COCO_BEAM_ENVIRONMENT` (default LOOPBACK: in this process).
- `dataflow`: DataflowRunner on GCP; project, region and bucket from the GCP
  settings. Code reaches the workers through the component image
  (`--sdk_container_image`, recommended: workers then run the locked
  dependencies) or, with `COCO_DATAFLOW_SHIP=setup_file`, through `setup.py`
  plus `COCO_DATAFLOW_REQUIREMENTS` (see `shipping_args`).

Every mode names how our code ships (`--setup_file`, a package or an image).
Without one, TFX builds and stages an sdist of TFX itself in every Beam
component. The modes whose Beam stages our code for its workers (`portable`,
`flink` with EXTERNAL workers: `ships_package`) get the sdist that the run
builds once, outside the checkout (`--extra_package`,
pipeline/orchestration/workers.py): Beam's `--setup_file` would run `setup.py
sdist` in the checkout for every stage, and two runs at once race on it. The
DirectRunner modes stage nothing, so `--setup_file` only names the code. Inside
the component image (Kubeflow/Vertex: `in_image`) the code is installed
already and no checkout exists, so it ships as the image: a `--setup_file`
there would name a path of the machine that compiled the spec (the local
rehearsal found that, pipeline/orchestration/rehearsal.py).
"""

from typing import List, Optional

from pipeline.settings import SETUP_FILE, BeamSettings, GcpSettings, SettingsError, variable

# How long a Flink job keeps an idle SDK worker (ms). A batch job runs its
# stages one after another, and without a cache every stage starts new Python
# workers, each importing TensorFlow (~4 s): 21 worker starts in the test
# sample's four jobs, 4 with it, and the run took 124 s instead of 219 s. It
# needs Beam's classes on the TaskManager's own classpath (tools/flink.sh).
FLINK_ENVIRONMENT_CACHE_MS = 10_000


def ships_package(beam: BeamSettings, mode: Optional[str] = None, in_image: bool = False) -> bool:
  """Whether a mode's Beam stages our code for its workers as the run's own
  sdist (`package` of `beam_pipeline_args`), which the run must build first."""
  mode = mode or beam.mode
  return not in_image and (mode == 'portable' or (mode == 'flink'
                                                  and beam.flink_environment != 'DOCKER'))


def beam_pipeline_args(beam: BeamSettings, gcp: GcpSettings, mode: Optional[str] = None,
                       in_image: bool = False, package: Optional[str] = None) -> List[str]:
  """The `beam_pipeline_args` for one runner mode (default: `beam.mode`);
  `in_image`: for executors running in the component image; `package`: the
  sdist the run built, for the modes that ship one (`ships_package`)."""
  mode = mode or beam.mode
  code = [f'--sdk_container_image={gcp.container_image}'] if in_image else [
      f'--setup_file={SETUP_FILE}']
  if ships_package(beam, mode, in_image):
    if not package:
      raise ValueError(f'Beam mode {mode} stages the run\'s sdist for its workers: pass its path '
                       '(Settings.run.worker_package, built by orchestration.workers)')
    code = [f'--extra_package={package}']
  if mode == 'in_memory':
    return ['--runner=DirectRunner', '--direct_running_mode=in_memory',
            '--direct_num_workers=1', *code]
  if mode == 'multi_processing':
    return ['--runner=DirectRunner', '--direct_running_mode=multi_processing',
            f'--direct_num_workers={beam.workers}', *code]
  if mode == 'portable':
    if not beam.job_endpoint:
      raise ValueError('PortableRunner needs COCO_BEAM_JOB_ENDPOINT (host:port of a Beam job '
                       'service)')
    return ['--runner=PortableRunner', f'--job_endpoint={beam.job_endpoint}',
            f'--environment_type={beam.environment}', *code]
  if mode == 'flink':
    return flink_args(beam, gcp, in_image, code)
  if mode == 'dataflow':
    if in_image and gcp.dataflow_ship != 'image':
      raise SettingsError(f'{variable(GcpSettings, "dataflow_ship")}={gcp.dataflow_ship} ships '
                       'the setup.py of this checkout, which the component image does not '
                       'have: Kubeflow/Vertex runs give Dataflow the image (leave it unset)')
    return dataflow_args(gcp)
  raise ValueError(f'unknown Beam mode {mode!r}')


def flink_args(beam: BeamSettings, gcp: GcpSettings, in_image: bool, code: List[str]) -> List[str]:
  """PortableRunner against Beam's Flink job server (`COCO_FLINK_JOB_ENDPOINT`,
  which submits to the cluster at `COCO_FLINK_MASTER`), one parallelism for
  every job. The SDK workers are never LOOPBACK (in the launching process):
  `EXTERNAL`, a worker pool beside the TaskManagers that runs this checkout's
  venv (`tools/flink.sh`; `code` names the run's sdist, so TFX stages no sdist
  of its own), or `DOCKER`, the component image on each
  TaskManager's host: the code is in the image then, so nothing ships (and
  inside the image, on Kubeflow/Vertex, it is always DOCKER)."""
  args = ['--runner=PortableRunner', f'--job_endpoint={beam.flink_job_endpoint}',
          f'--parallelism={beam.flink_parallelism}']
  if in_image or beam.flink_environment == 'DOCKER':
    if not (gcp.image or gcp.project):
      gcp.require('image', purpose='Flink SDK workers in DOCKER (the component image)')
    return args + ['--environment_type=DOCKER', f'--environment_config={gcp.container_image}']
  return args + ['--environment_type=EXTERNAL', f'--environment_config={beam.flink_workers}',
                 f'--environment_cache_millis={FLINK_ENVIRONMENT_CACHE_MS}', *code]


def names_jobs(mode: str) -> bool:
  """Whether each Beam stage gets a job name of its own (`job_name_args`):
  Flink lists jobs by name, so `coco-captions-Transform` tells which component
  a job ran for (the run summary finds the job ids by it). Other modes keep
  Beam's default: Dataflow wants unique lower-case names per running job."""
  return mode == 'flink'


def job_name(pipeline_name: str, component_id: str) -> str:
  return f'{pipeline_name}-{component_id}'


def job_name_args(pipeline_name: str, component_id: str) -> List[str]:
  return [f'--job_name={job_name(pipeline_name, component_id)}']


def engine_name(beam: BeamSettings) -> str:
  """Where a local run's Beam stages execute, as the summary and report say it."""
  return {'in_memory': 'DirectRunner (in memory)',
          'multi_processing': f'DirectRunner ({beam.workers} processes)',
          'portable': f'PortableRunner ({beam.job_endpoint}, {beam.environment})',
          'flink': f'Flink at {beam.flink_rest}',
          'dataflow': 'Dataflow'}[beam.mode]


def kubeflow_beam_args(settings) -> List[str]:
  """The Beam arguments of every Beam stage of the compiled Kubeflow/Vertex spec
  (`COCO_KFP_BEAM_MODE`, the code in the component image). Pure and quick, so
  kubeflow_runner.py calls it before its slow imports too: a bad setting is
  refused at once."""
  return beam_pipeline_args(settings.beam, settings.gcp, settings.gcp.kfp_beam_mode,
                            in_image=True)


def dataflow_args(gcp: GcpSettings) -> List[str]:
  """DataflowRunner arguments; worker sizing from the COCO_DATAFLOW_* settings."""
  gcp.require('project', 'gcs_root', purpose='DataflowRunner')
  root = gcp.gcs_root.rstrip('/')
  args = [
      '--runner=DataflowRunner',
      f'--project={gcp.project}',
      f'--region={gcp.region}',
      f'--temp_location={root}/beam/tmp',
      f'--staging_location={root}/beam/staging',
      f'--machine_type={gcp.dataflow_machine_type}',
      f'--max_num_workers={gcp.dataflow_max_workers}',
      f'--disk_size_gb={gcp.dataflow_disk_gb}',
      '--experiments=use_runner_v2',
  ]
  return args + shipping_args(gcp)


def shipping_args(gcp: GcpSettings) -> List[str]:
  """How our code and its dependencies reach the Dataflow workers.

  `image` (default): the component image, which already holds TFX 1.16 with
  its TF/TFT/Beam, so workers install nothing. `setup_file`: the default Beam
  worker image plus `setup.py`; setup.py pins no dependencies (on purpose, see
  its docstring), so the workers also need COCO_DATAFLOW_REQUIREMENTS, a
  requirements file listing the complete pinned closure (Beam downloads it with
  `pip download --no-deps`), e.g. requirements.lock.
  """
  if gcp.dataflow_ship == 'image':
    return [f'--sdk_container_image={gcp.container_image}']
  return [f'--setup_file={SETUP_FILE}'] + (
      [f'--requirements_file={gcp.dataflow_requirements}'] if gcp.dataflow_requirements else [])
