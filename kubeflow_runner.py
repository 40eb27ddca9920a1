"""Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI (KubeflowV2DagRunner).

    python kubeflow_runner.py                 # writes pipeline.json (Vertex PipelineJob)
    COCO_KFP_FORMAT=yaml python kubeflow_runner.py   # writes pipeline.yaml (KFP v2 PipelineSpec)
    tfx pipeline compile --engine vertex --pipeline_path kubeflow_runner.py

Compiling contacts nothing. On the cluster the code comes from the component
image (this package installed there), so Transform and Trainer get dotted
function names instead of a module file (a module file would be wheeled and
copied to the gs:// pipeline root at compile time). Submitting is a separate,
explicit step: `python -m pipeline.submit` (see docs/gcp.md).

Settings (environment, read in pipeline/config.py and pipeline/beam.py):
COCO_GCP_PROJECT, COCO_GCP_REGION, COCO_GCS_ROOT (gs://bucket/prefix),
COCO_IMAGE, COCO_KFP_FORMAT (json|yaml), COCO_KFP_OUTPUT_DIR,
COCO_KFP_BEAM_MODE (default dataflow), COCO_DATAFLOW_*; COCO_IMAGES=1 adds
ImageExampleGen, reading images from COCO_KFP_IMAGE_DIR (default
$COCO_GCS_ROOT/images/{folder}, COCO's train2017/ val2017/ layout).
"""

import os
import sys

from pipeline import config

PREPROCESSING_FN = 'modules.preprocessing.preprocessing_fn'
RUN_FN = 'modules.model.run_fn'
FORMATS = {'json': 'pipeline.json', 'yaml': 'pipeline.yaml'}


def output_filename(fmt: str = None) -> str:
  """File name for a format; the extension is what picks the format in
  KubeflowV2DagRunner (.json: Vertex PipelineJob, .yaml: KFP PipelineSpec)."""
  fmt = fmt or config.env('KFP_FORMAT', 'json')
  if fmt not in FORMATS:
    raise ValueError(f'{config.ENV_PREFIX}KFP_FORMAT={fmt!r}; choose one of {sorted(FORMATS)}')
  return FORMATS[fmt]


def build():
  """The pipeline as it runs on KFP/Vertex: gs:// roots, Dataflow Beam args."""
  from pipeline import beam  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top
  settings = beam.gcp_settings()
  images = config.images_enabled()
  return create_pipeline(
      pipeline_name=config.PIPELINE_NAME,
      pipeline_root=config.kfp_pipeline_root(settings['gcs_root']),
      data_root=config.kfp_data_root(settings['gcs_root']),
      preprocessing_fn=PREPROCESSING_FN,
      run_fn=RUN_FN,
      train_steps=config.train_steps(),
      eval_steps=config.eval_steps(),
      beam_pipeline_args=beam.beam_pipeline_args(config.env('KFP_BEAM_MODE', 'dataflow')),
      images=images,
      image_location=config.kfp_image_location(settings['gcs_root']) if images else None,
  )


def compile_pipeline(output_dir: str = None, filename: str = None) -> str:
  """Writes the compiled pipeline; returns its path.

  `filename` (e.g. from `python -m pipeline.submit --package`) overrides
  COCO_KFP_FORMAT so the format follows the submission target, not whatever
  the environment says; its extension must be .json, .yaml or .yml.
  """
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from pipeline import beam  # pylint: disable=g-import-not-at-top
  output_dir = output_dir or config.env('KFP_OUTPUT_DIR', os.getcwd())
  filename = filename or output_filename()
  if not filename.endswith(('.json', '.yaml', '.yml')):
    raise ValueError(f'pipeline package {filename!r}: the name must end in .json '
                     '(Vertex PipelineJob) or .yaml/.yml (KFP PipelineSpec)')
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=beam.gcp_settings()['image']),
      output_dir=output_dir,
      output_filename=filename)
  runner.run(build())
  return os.path.join(output_dir, filename)


if __name__ == '__main__':
  path = compile_pipeline()
  if not os.environ.get('VERTEX_HOME') and not os.environ.get('KUBEFLOW_HOME'):
    print(f'wrote {path}')
  sys.exit(0)
