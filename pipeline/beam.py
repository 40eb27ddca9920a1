"""Beam pipeline arguments, keyed by runner mode.

One setting picks the mode: `COCO_BEAM_MODE` (default `in_memory`).

- `in_memory`: DirectRunner in this process (fastest on a laptop-sized run).
- `multi_processing`: DirectRunner with `COCO_BEAM_WORKERS` worker processes.
- `portable`: PortableRunner against a Beam job service at
  `COCO_BEAM_JOB_ENDPOINT` (the Job API path Flink, Spark and Dataflow Runner v2
  use), workers in `COCO_BEAM_ENVIRONMENT` (default LOOPBACK: in this process).
- `dataflow`: DataflowRunner on GCP; project/region/bucket from the
  environment (see `gcp_settings`). Code reaches the workers through the
  component image (`--sdk_container_image`, recommended: workers then run the
  locked dependencies) or, with `COCO_DATAFLOW_SHIP=setup_file`, through
  `setup.py` plus `COCO_DATAFLOW_REQUIREMENTS` (see `shipping_args`).

Every mode names how our code ships (`--setup_file` or an image). Without one,
TFX builds and stages an sdist of TFX itself in every Beam component.
"""

import os
from typing import Dict, List, Optional

from pipeline import config

MODES = ('in_memory', 'multi_processing', 'portable', 'dataflow')
SETUP_FILE = os.path.join(config.PROJECT_DIR, 'setup.py')


def beam_mode() -> str:
  mode = config.env('BEAM_MODE', 'in_memory')
  if mode not in MODES:
    raise ValueError(f'{config.ENV_PREFIX}BEAM_MODE={mode!r}; choose one of {MODES}')
  return mode


def gcp_settings() -> Dict[str, str]:
  """GCP project, region, GCS root and image, from COCO_GCP_* variables.

  Placeholders are never invented: a missing project or bucket is an error
  at the point of use, naming the variable to set.
  """
  project = config.env('GCP_PROJECT', '')
  return {
      'project': project,
      'region': config.env('GCP_REGION', config.DEFAULT_GCP_REGION),
      'gcs_root': config.env('GCS_ROOT', ''),  # e.g. gs://my-bucket/coco-captions
      'image': config.env('IMAGE', config.DEFAULT_IMAGE.format(project=project or 'PROJECT')),
  }


def _require(settings: Dict[str, str], *keys: str) -> None:
  missing = [k for k in keys if not settings.get(k)]
  if missing:
    names = ', '.join(f'{config.ENV_PREFIX}{k.upper()}' if k == 'gcs_root'
                      else f'{config.ENV_PREFIX}GCP_{k.upper()}' for k in missing)
    raise ValueError(f'DataflowRunner needs {names} to be set')


def beam_pipeline_args(mode: Optional[str] = None,
                       workers: Optional[int] = None) -> List[str]:
  """The `beam_pipeline_args` for one runner mode."""
  mode = mode or beam_mode()
  if mode == 'in_memory':
    return ['--runner=DirectRunner', '--direct_running_mode=in_memory',
            '--direct_num_workers=1', f'--setup_file={SETUP_FILE}']
  if mode == 'multi_processing':
    workers = workers or config.env_int('BEAM_WORKERS', os.cpu_count() or 2)
    return ['--runner=DirectRunner', '--direct_running_mode=multi_processing',
            f'--direct_num_workers={workers}', f'--setup_file={SETUP_FILE}']
  if mode == 'portable':
    endpoint = config.env('BEAM_JOB_ENDPOINT')
    if not endpoint:
      raise ValueError(f'PortableRunner needs {config.ENV_PREFIX}BEAM_JOB_ENDPOINT (host:port '
                       'of a Beam job service)')
    return ['--runner=PortableRunner', f'--job_endpoint={endpoint}',
            f'--environment_type={config.env("BEAM_ENVIRONMENT", "LOOPBACK")}',
            f'--setup_file={SETUP_FILE}']
  if mode == 'dataflow':
    return dataflow_args(gcp_settings())
  raise ValueError(f'unknown Beam mode {mode!r}; choose one of {MODES}')


def dataflow_args(settings: Dict[str, str]) -> List[str]:
  """DataflowRunner arguments; worker sizing overridable by COCO_DATAFLOW_*."""
  _require(settings, 'project', 'gcs_root')
  root = settings['gcs_root'].rstrip('/')
  args = [
      '--runner=DataflowRunner',
      f'--project={settings["project"]}',
      f'--region={settings["region"]}',
      f'--temp_location={root}/beam/tmp',
      f'--staging_location={root}/beam/staging',
      f'--machine_type={config.env("DATAFLOW_MACHINE_TYPE", "n1-standard-4")}',
      f'--max_num_workers={config.env_int("DATAFLOW_MAX_WORKERS", 10)}',
      f'--disk_size_gb={config.env_int("DATAFLOW_DISK_GB", 50)}',
      '--experiments=use_runner_v2',
  ]
  return args + shipping_args(settings)


def shipping_args(settings: Dict[str, str]) -> List[str]:
  """How our code and its dependencies reach the Dataflow workers.

  `image` (default): the component image, which already holds TFX 1.16 with
  its TF/TFT/Beam, so workers install nothing. `setup_file`: the default Beam
  worker image plus `setup.py`; setup.py pins no dependencies (on purpose, see
  its docstring), so the workers also need COCO_DATAFLOW_REQUIREMENTS, a
  requirements file listing the complete pinned closure (Beam downloads it with
  `pip download --no-deps`), e.g. requirements.lock.
  """
  ship = config.env('DATAFLOW_SHIP', 'image')
  if ship == 'image':
    return [f'--sdk_container_image={settings["image"]}']
  if ship == 'setup_file':
    requirements = config.env('DATAFLOW_REQUIREMENTS', '')
    return [f'--setup_file={SETUP_FILE}'] + (
        [f'--requirements_file={requirements}'] if requirements else [])
  raise ValueError(f'{config.ENV_PREFIX}DATAFLOW_SHIP={ship!r}; choose image or setup_file')
