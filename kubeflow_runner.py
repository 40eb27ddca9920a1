"""Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI (KubeflowV2DagRunner).

    python kubeflow_runner.py                        # writes pipeline.json (Vertex PipelineJob)
    COCO_KFP_FORMAT=yaml python kubeflow_runner.py   # writes pipeline.yaml (KFP v2 PipelineSpec)
    tfx pipeline compile --engine vertex --pipeline_path kubeflow_runner.py

Compiling contacts nothing. On the cluster the code comes from the component
image (this package installed there), so Transform and Trainer get dotted
function names instead of a module file. Submitting is a separate, explicit
step: `python -m pipeline.tools.submit` (see docs/gcp.md). Settings: the
COCO_GCP_*, COCO_GCS_ROOT, COCO_IMAGE, COCO_KFP_* and COCO_DATAFLOW_*
variables of README.md "Settings".
"""

import sys

from pipeline.beam_args import kubeflow_beam_args
from pipeline.settings import Settings, SettingsError, under_tfx_cli


def main() -> int:
  try:
    settings = Settings.from_env()
    settings.gcp.require('project', 'gcs_root', purpose='Compiling for Kubeflow/Vertex')
    kubeflow_beam_args(settings)   # refuses bad Beam settings before the slow imports
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  from pipeline.orchestration import console  # pylint: disable=g-import-not-at-top
  if not settings.run.verbose:
    console.quiet_libraries()
  from pipeline.orchestration.kubeflow import compile_pipeline  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import kubeflow_pipeline  # pylint: disable=g-import-not-at-top
  try:
    path = compile_pipeline(kubeflow_pipeline(settings), settings)
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  if not under_tfx_cli():
    print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
