"""Compiling the pipeline for Kubeflow Pipelines v2 / Vertex AI (KubeflowV2DagRunner).

Compiling contacts nothing: it writes a file. `kubeflow_runner.py` and
`python -m pipeline.tools.submit` both compile through `compile_pipeline`,
so what is submitted is what the runner file compiles.
"""

import os
from typing import Optional

from pipeline.settings import KFP_FORMATS, Settings, SettingsError


def output_filename(fmt: str) -> str:
  """File name for a format; the extension is what picks the format in
  KubeflowV2DagRunner (.json: Vertex PipelineJob, .yaml: KFP PipelineSpec)."""
  return KFP_FORMATS[fmt]


def compile_pipeline(tfx_pipeline, settings: Settings, output_dir: Optional[str] = None,
                     filename: Optional[str] = None) -> str:
  """Writes the compiled pipeline; returns its path.

  `filename` (e.g. from `submit --package`) overrides COCO_KFP_FORMAT so the
  format follows the submission target, not whatever the environment says;
  its extension must be .json, .yaml or .yml.
  """
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  output_dir = output_dir or settings.gcp.kfp_output_dir or os.getcwd()
  filename = filename or output_filename(settings.gcp.kfp_format)
  if not filename.endswith(('.json', '.yaml', '.yml')):
    raise SettingsError(f'pipeline package {filename!r}: the name must end in .json '
                        '(Vertex PipelineJob) or .yaml/.yml (KFP PipelineSpec)')
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=settings.gcp.container_image),
      output_dir=output_dir,
      output_filename=filename)
  runner.run(tfx_pipeline)
  return os.path.join(output_dir, filename)
