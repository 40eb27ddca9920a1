"""Compile the pipeline and submit one run to Vertex AI Pipelines or a KFP v2 cluster.

    python -m pipeline.submit --vertex                       # Vertex AI PipelineJob
    python -m pipeline.submit --kfp-host https://HOST        # Kubeflow Pipelines v2
    python -m pipeline.submit --vertex --dry-run             # compile, show the call, submit nothing

Submitting is always this explicit step: compiling (`python kubeflow_runner.py`
or `tfx pipeline compile`) never contacts anything. This command compiles first,
with the same code (`kubeflow_runner.compile_pipeline`), so what runs is what the
checkout says now; `--package PATH` keeps the compiled file, otherwise it goes to
a temporary directory. Vertex takes the PipelineJob JSON, KFP the PipelineSpec
YAML (which carries no pipeline root, so it is passed with the run).

Settings are the compile settings (see kubeflow_runner.py): COCO_GCP_PROJECT,
COCO_GCS_ROOT, COCO_GCP_REGION (Vertex location), COCO_IMAGE, ...
Run from the source checkout: kubeflow_runner.py is not part of the wheel.
"""

import argparse
import importlib
import importlib.util
import os
import re
import sys
import tempfile
import time
from typing import Dict, List, Optional

from pipeline import config

TARGETS = {'vertex': '.json', 'kfp': '.yaml'}
VERTEX_JOB_ID = re.compile(r'[a-z][-a-z0-9]{0,127}')


class SettingsError(ValueError):
  """A missing or inconsistent setting; main() prints it without a traceback."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.submit',
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
                      help=f'run name (Vertex: the job id); default {config.PIPELINE_NAME}-<time>')
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


def settings(target: str) -> Dict[str, str]:
  """The GCP settings a submission needs, checked before the slow compile.

  Every missing variable is named at once, so one error message is enough
  to fix the environment.
  """
  from pipeline import beam  # pylint: disable=g-import-not-at-top
  found = beam.gcp_settings()
  needed = {'GCP_PROJECT': found['project'], 'GCS_ROOT': found['gcs_root']}
  if target == 'vertex':
    needed['GCP_REGION'] = found['region']
  missing = [config.ENV_PREFIX + name for name, value in needed.items() if not value]
  if missing:
    raise SettingsError(f'set {", ".join(missing)} (see docs/gcp.md); nothing was compiled '
                        'or submitted')
  try:
    found['pipeline_root'] = config.kfp_pipeline_root(found['gcs_root'])
  except ValueError as error:
    raise SettingsError(str(error)) from None
  return found


def run_name(args: argparse.Namespace) -> str:
  """Given or `<pipeline>-<UTC time>`; Vertex job ids allow only [a-z0-9-]."""
  name = args.run_name or f'{config.PIPELINE_NAME}-{time.strftime("%Y%m%d-%H%M%S", time.gmtime())}'
  if args.vertex and not VERTEX_JOB_ID.fullmatch(name):
    raise SettingsError(f'--run-name {name!r}: a Vertex job id is a lowercase letter, then up '
                        'to 127 of [a-z0-9-]')
  return name


def load_kubeflow_runner():
  """kubeflow_runner.py lives at the project root, outside the installed
  packages (the tfx CLI wants a file path), so import it from the checkout."""
  try:
    return importlib.import_module('kubeflow_runner')
  except ModuleNotFoundError:
    pass
  path = os.path.join(config.PROJECT_DIR, 'kubeflow_runner.py')
  if not os.path.exists(path):
    raise SettingsError(f'{path} not found: run pipeline.submit from the source checkout')
  spec = importlib.util.spec_from_file_location('kubeflow_runner', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules['kubeflow_runner'] = module
  spec.loader.exec_module(module)
  return module


def compile_package(target: str, package: Optional[str], tmp_dir: str) -> str:
  """Compiles into `package` (kept) or `tmp_dir`; returns the file's path."""
  runner = load_kubeflow_runner()
  if package:
    output_dir, filename = os.path.split(os.path.abspath(package))
  else:
    output_dir, filename = tmp_dir, 'pipeline' + TARGETS[target]
  return runner.compile_pipeline(output_dir=output_dir, filename=filename)


def vertex_job_kwargs(path: str, name: str, gcp: Dict[str, str]) -> Dict[str, str]:
  """Arguments of `aiplatform.PipelineJob(...)`."""
  return dict(display_name=config.PIPELINE_NAME, template_path=path, job_id=name,
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
    gcp = settings(target)
    name = run_name(args)
    with tempfile.TemporaryDirectory(prefix='coco-kfp-') as tmp_dir:
      path = compile_package(target, args.package, tmp_dir)
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
