"""Compile the pipeline and submit one run to Vertex AI Pipelines or a KFP v2 cluster.

    python -m pipeline.tools.submit --vertex                  # Vertex AI PipelineJob
    python -m pipeline.tools.submit --kfp-host https://HOST   # Kubeflow Pipelines v2
    python -m pipeline.tools.submit --vertex --dry-run        # compile, show the call, submit nothing

Submitting is always this explicit step: compiling (`python kubeflow_runner.py`
or `tfx pipeline compile`) never contacts anything. This command compiles first,
with the same code as `kubeflow_runner.py` (`pipeline.pipeline.kubeflow_pipeline`
and `pipeline.orchestration.kubeflow.compile_pipeline`), so what runs is what the
checkout says now; `--package PATH` keeps the compiled file, otherwise it goes to
a temporary directory. Vertex takes the PipelineJob JSON, KFP the PipelineSpec
YAML (which carries no pipeline root, so it is passed with the run).

Settings are the compile settings (README.md "Settings"): COCO_GCP_PROJECT,
COCO_GCS_ROOT, COCO_GCP_REGION (Vertex location), COCO_IMAGE, ...
"""

import argparse
import os
import re
import sys
import tempfile
import time
from typing import Dict, List, Optional

from pipeline.settings import PIPELINE_NAME, Settings, SettingsError

TARGETS = {'vertex': '.json', 'kfp': '.yaml'}
VERTEX_JOB_ID = re.compile(r'[a-z][-a-z0-9]{0,127}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.tools.submit',
      description='Compile the pipeline and submit one run (Vertex AI or Kubeflow Pipelines v2).')
  target = parser.add_mutually_exclusive_group(required=True)
  target.add_argument('--vertex', action='store_true',
                      help='submit a Vertex AI PipelineJob (project/region from COCO_GCP_*)')
  target.add_argument('--kfp-host', metavar='URL',
                      help='submit to the Kubeflow Pipelines API at URL')
  parser.add_argument('--package', metavar='PATH',
                      help='write the compiled pipeline here and keep it (.json for --vertex, '
                           '.yaml/.yml for --kfp-host); default: a temporary file')
  parser.add_argument('--run-name', metavar='NAME',
                      help=f'run name (Vertex: the job id); default {PIPELINE_NAME}-<time>')
  parser.add_argument('--experiment', metavar='NAME', help='KFP experiment (KFP only)')
  parser.add_argument('--service-account', metavar='EMAIL',
                      help='service account the run executes as (default: the platform default)')
  parser.add_argument('--dry-run', action='store_true',
                      help='compile and print the submission, contact nothing')
  args = parser.parse_args(argv)
  if args.experiment and args.vertex:
    parser.error('--experiment is for --kfp-host only')
  if args.package:
    suffixes = ('.yaml', '.yml') if args.kfp_host else ('.json',)
    if not args.package.endswith(suffixes):
      parser.error(f'--package {args.package}: {target_name(args)} needs a {" or ".join(suffixes)} file')
  return args


def target_name(args: argparse.Namespace) -> str:
  return 'vertex' if args.vertex else 'kfp'


def gcp_settings(settings: Settings, target: str) -> Dict[str, str]:
  """The GCP settings a submission needs, checked before the slow compile.

  Every missing variable is named at once, so one error message is enough
  to fix the environment.
  """
  gcp = settings.gcp
  needed = ('project', 'gcs_root', 'region') if target == 'vertex' else ('project', 'gcs_root')
  gcp.require(*needed, purpose=f'submitting to {target} (see docs/gcp.md; nothing was '
                               'compiled or submitted)')
  pipeline_root = gcp.pipeline_root()
  return {'project': gcp.project, 'region': gcp.region, 'gcs_root': gcp.gcs_root,
          'image': gcp.container_image, 'pipeline_root': pipeline_root}


def run_name(args: argparse.Namespace) -> str:
  """Given or `<pipeline>-<UTC time>`; Vertex job ids allow only [a-z0-9-]."""
  name = args.run_name or f'{PIPELINE_NAME}-{time.strftime("%Y%m%d-%H%M%S", time.gmtime())}'
  if args.vertex and not VERTEX_JOB_ID.fullmatch(name):
    raise SettingsError(f'--run-name {name!r}: a Vertex job id is a lowercase letter, then up '
                        'to 127 of [a-z0-9-]')
  return name


def compile_package(settings: Settings, target: str, package: Optional[str],
                    tmp_dir: str) -> str:
  """Compiles into `package` (kept) or `tmp_dir`; returns the file's path."""
  from pipeline.orchestration.kubeflow import compile_pipeline  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import kubeflow_pipeline  # pylint: disable=g-import-not-at-top
  if package:
    output_dir, filename = os.path.split(os.path.abspath(package))
  else:
    output_dir, filename = tmp_dir, 'pipeline' + TARGETS[target]
  return compile_pipeline(kubeflow_pipeline(settings), settings, output_dir, filename)


def vertex_job_kwargs(path: str, name: str, gcp: Dict[str, str]) -> Dict[str, str]:
  """Arguments of `aiplatform.PipelineJob(...)`."""
  return dict(display_name=PIPELINE_NAME, template_path=path, job_id=name,
              pipeline_root=gcp['pipeline_root'], project=gcp['project'],
              location=gcp['region'])


def kfp_run_kwargs(path: str, name: str, gcp: Dict[str, str],
                   args: argparse.Namespace) -> Dict[str, object]:
  """Arguments of `kfp.Client.create_run_from_pipeline_package(...)`; the
  YAML has no pipeline root of its own, so it must come with the run."""
  kwargs = dict(pipeline_file=path, arguments={}, pipeline_root=gcp['pipeline_root'],
                run_name=name)
  if args.experiment:
    kwargs['experiment_name'] = args.experiment
  if args.service_account:
    kwargs['service_account'] = args.service_account
  return kwargs


def submit_vertex(path: str, name: str, gcp: Dict[str, str], args: argparse.Namespace) -> str:
  from google.cloud import aiplatform  # pylint: disable=g-import-not-at-top
  job = aiplatform.PipelineJob(**vertex_job_kwargs(path, name, gcp))
  job.submit(service_account=args.service_account)
  return f'submitted Vertex AI pipeline job {job.resource_name}'


def submit_kfp(path: str, name: str, gcp: Dict[str, str], args: argparse.Namespace) -> str:
  import kfp  # pylint: disable=g-import-not-at-top
  client = kfp.Client(host=args.kfp_host)
  result = client.create_run_from_pipeline_package(**kfp_run_kwargs(path, name, gcp, args))
  return f'submitted KFP run {result.run_id} to {args.kfp_host}'


def describe(target: str, path: str, name: str, gcp: Dict[str, str],
             args: argparse.Namespace) -> str:
  """What --dry-run prints: the call that would be made."""
  if target == 'vertex':
    call = f'aiplatform.PipelineJob(**{vertex_job_kwargs(path, name, gcp)!r})' \
           f'.submit(service_account={args.service_account!r})'
  else:
    call = f'kfp.Client(host={args.kfp_host!r}).create_run_from_pipeline_package(' \
           f'**{kfp_run_kwargs(path, name, gcp, args)!r})'
  return f'dry run, nothing submitted; would call:\n  {call}'


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  target = target_name(args)
  try:
    settings = Settings.from_env()
    gcp = gcp_settings(settings, target)
    name = run_name(args)
    with tempfile.TemporaryDirectory(prefix='coco-kfp-') as tmp_dir:
      path = compile_package(settings, target, args.package, tmp_dir)
      print(f'compiled {path}')
      if args.dry_run:
        print(describe(target, path, name, gcp, args))
      elif target == 'vertex':
        print(submit_vertex(path, name, gcp, args))
      else:
        print(submit_kfp(path, name, gcp, args))
  except (SettingsError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
