"""The TFX pipeline: CsvExampleGen (-> ImageExampleGen) -> StatisticsGen -> SchemaGen ->
ExampleValidator, Transform -> Trainer -> Evaluator (against the latest blessed
model) -> Pusher.

`create_pipeline` reads top to bottom like the DAG it builds and takes plain
values; nothing here reads the environment or knows which orchestrator runs
it. `local_pipeline` and `kubeflow_pipeline` are the two ways the runners
configure it from a `Settings` object: local paths and a module file, or
gs:// roots and the code in the component image.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

from ml_metadata.proto import metadata_store_pb2
import tensorflow_data_validation as tfdv
# TFX's modules themselves, not the `tfx.v1` facade: that one also imports the
# Google Cloud extensions (aiplatform and its clients, ~5 s of every local
# run's start); only the Vertex pusher below needs them.
from tfx import components as tfx_components
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.base.base_beam_component import BaseBeamComponent
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, pusher_pb2, trainer_pb2
from tfx.types import Channel, standard_artifacts

from modules import constants, features
from pipeline import settings as settings_lib
from pipeline.beam_args import beam_pipeline_args, job_name_args, kubeflow_beam_args, names_jobs
from pipeline import evaluation
from pipeline.components import csv_example_gen, evaluator as evaluator_executor
from pipeline.components import pusher as local_pusher, transform_executor
from pipeline.components.image_example_gen import ImageExampleGen

# Split by image so the captions of one image never straddle train and eval.
SPLIT_FEATURE = features.IMAGE_ID_KEY
SPLIT_BUCKETS = {'train': 2, 'eval': 1}


def example_gen_output_config() -> example_gen_pb2.Output:
  """Deterministic train/eval split by image id (hash buckets), so all
  captions of one image land in the same split."""
  return example_gen_pb2.Output(
      split_config=example_gen_pb2.SplitConfig(
          splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                  for name, buckets in SPLIT_BUCKETS.items()],
          partition_feature_name=SPLIT_FEATURE))


def statistics_options() -> tfdv.StatsOptions:
  """Sketch-based top-k and unique counts: every caption is distinct, and
  exact counting of a few hundred thousand distinct strings dominates
  StatisticsGen. Counts, lengths and histograms stay exact."""
  return tfdv.StatsOptions(use_sketch_based_topk_uniques=True)


def example_gen(data_root: str, executor: str, max_rejected: float, max_tokens: int):
  """CsvExampleGen: with the checking pyarrow executor ('fast',
  pipeline/components/csv_example_gen.py; same outputs as TFX's, proven in
  tests and bench) or TFX's own ('stock', without the input checks)."""
  if executor == 'fast':
    return csv_example_gen.CsvExampleGen(input_base=data_root,
                                         output_config=example_gen_output_config(),
                                         max_rejected=max_rejected, max_tokens=max_tokens)
  if executor == 'stock':
    return tfx_components.CsvExampleGen(input_base=data_root,
                                        output_config=example_gen_output_config())
  raise ValueError(f'unknown ExampleGen executor {executor!r}; choose fast or stock')


def use_transform_executor(transform: tfx_components.Transform, name: str) -> None:
  """Transform's executor: TFX's own ('stock') or the same with batched
  TFRecord reading and writing ('fast', pipeline/components/transform_executor.py).
  Transform takes no custom_executor_spec argument, hence the attribute."""
  if name == 'fast':
    transform.executor_spec = executor_spec.BeamExecutorSpec(transform_executor.Executor)
  elif name != 'stock':
    raise ValueError(f'unknown Transform executor {name!r}; choose fast or stock')


def pusher(model, blessing, serving_model_dir: Optional[str],
           vertex_config: Optional[Dict[str, Any]]):
  """Pusher of a blessed model: to a local directory in TensorFlow Serving's
  layout (`<serving_model_dir>/<version>/saved_model.pb`; the executor skips a
  model that already is the newest version), or to Vertex AI (Model Registry
  and an endpoint) with TFX's Vertex pusher and `vertex_config` as its
  custom_config."""
  if (serving_model_dir is None) == (vertex_config is None):
    raise ValueError('Give either serving_model_dir or vertex_config.')
  if vertex_config is not None:
    from tfx.extensions.google_cloud_ai_platform.pusher.component import (  # pylint: disable=g-import-not-at-top
        Pusher as VertexPusher)
    return VertexPusher(model=model, model_blessing=blessing, custom_config=vertex_config)
  local = tfx_components.Pusher(
      model=model, model_blessing=blessing,
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_model_dir)))
  local.executor_spec = executor_spec.ExecutorClassSpec(local_pusher.Executor)
  return local


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    *,
    module_file: Optional[str] = None,
    preprocessing_fn: Optional[str] = None,
    run_fn: Optional[str] = None,
    train_steps: int = constants.TRAIN_STEPS,
    eval_steps: Optional[int] = constants.EVAL_STEPS,
    transform_config: Optional[Dict[str, Any]] = None,
    trainer_config: Optional[Dict[str, Any]] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    enable_cache: bool = True,
    beam_pipeline_args: Optional[List[str]] = None,
    example_gen_executor: str = 'fast',
    transform_executor: str = 'fast',
    max_rejected: float = csv_example_gen.DEFAULT_MAX_REJECTED,
    images: bool = False,
    image_location: Optional[str] = None,
    image_size: int = constants.IMAGE_SIZE,
    image_licenses: Sequence[str] = settings_lib.ALLOWED_LICENSES,
    image_http_timeout: float = 10.0,
    serving_model_dir: Optional[str] = None,
    vertex_push_config: Optional[Dict[str, Any]] = None,
    bless_margin: float = 0.01,
    bless_max_ratio: float = settings_lib.BLESS_MAX_RATIO,
    beam_job_names: bool = False,
) -> Pipeline:
  """Builds the pipeline.

  The user code comes either from `module_file` (a path; TFX wheels it and
  its cache key follows the file contents: the local default) or from dotted
  names `preprocessing_fn` / `run_fn` of the installed package (what a
  component image uses on Kubeflow/Vertex, where no local file exists).

  `images` adds ImageExampleGen after CsvExampleGen: its image-caption
  Examples, read from `image_location` at `image_size`, are what
  StatisticsGen, Transform and the rest see; the split stays CsvExampleGen's.

  A blessed model (pipeline/evaluation.py) is pushed to `serving_model_dir`
  or, given `vertex_push_config`, to Vertex AI.

  `beam_job_names`: each Beam stage's job is named after its component
  (`<pipeline>-<component>`), where the engine lists jobs by name (Flink).
  """
  if module_file and not (preprocessing_fn or run_fn):
    transform_code = trainer_code = {'module_file': module_file}
  elif preprocessing_fn and run_fn and not module_file:
    transform_code = {'preprocessing_fn': preprocessing_fn}
    trainer_code = {'run_fn': run_fn}
  else:
    raise ValueError('Give either module_file, or both preprocessing_fn and run_fn.')
  transform_config = dict(transform_config or {'vocab_size': constants.VOCAB_SIZE,
                                               'max_tokens': constants.MAX_TOKENS})
  trainer_config = dict(trainer_config or constants.TRAINER_DEFAULTS)

  csv_gen = example_gen(data_root, example_gen_executor, max_rejected,
                        transform_config['max_tokens'])
  examples = csv_gen.outputs['examples']

  image_gen = None
  if images:
    image_gen = ImageExampleGen(
        captions=examples,
        image_location=image_location,
        image_size=image_size,
        allowed_licenses=image_licenses,
        http_timeout=image_http_timeout)
    examples = image_gen.outputs['examples']
    # The pixels a model decodes from the transformed JPEG bytes (the export's
    # decoded_images signature).
    trainer_config['image_size'] = image_size

  statistics_gen = tfx_components.StatisticsGen(
      examples=examples, stats_options=statistics_options())

  schema_gen = tfx_components.SchemaGen(
      statistics=statistics_gen.outputs['statistics'], infer_feature_shape=True)

  # Anomalies of the data against the schema are recorded (and shown by the
  # runner and the report); they do not stop the run.
  example_validator = tfx_components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])

  # StatisticsGen already describes the raw data; Transform's own pre- and
  # post-transform statistics would read every example twice more.
  transform = tfx_components.Transform(
      examples=examples,
      schema=schema_gen.outputs['schema'],
      custom_config=transform_config,
      disable_statistics=True,
      **transform_code)
  use_transform_executor(transform, transform_executor)

  trainer = tfx_components.Trainer(
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=trainer_pb2.TrainArgs(num_steps=train_steps),
      eval_args=trainer_pb2.EvalArgs(num_steps=eval_steps),
      custom_config=trainer_config,
      **trainer_code)

  # The baseline a candidate must not be worse than: the newest model an
  # earlier run blessed (none on a first run).
  latest_blessed = Resolver(
      strategy_class=LatestBlessedModelStrategy,
      model=Channel(type=standard_artifacts.Model),
      model_blessing=Channel(type=standard_artifacts.ModelBlessing),
  ).with_id('latest_blessed_model_resolver')

  # Perplexity from the served model's own outputs on the raw eval split,
  # overall and sliced; the blessing is the gate of pipeline/evaluation.py.
  evaluator = tfx_components.Evaluator(
      examples=examples,
      model=trainer.outputs['model'],
      baseline_model=latest_blessed.outputs['model'],
      schema=schema_gen.outputs['schema'],
      example_splits=[evaluation.EVAL_SPLIT],
      eval_config=evaluation.eval_config(bless_margin, bless_max_ratio))
  # TFX's, but a candidate that is its own baseline (a re-run with the
  # Trainer cached) reuses its earlier evaluation: pipeline/components/evaluator.py.
  evaluator.executor_spec = executor_spec.BeamExecutorSpec(evaluator_executor.Executor)

  model_pusher = pusher(trainer.outputs['model'], evaluator.outputs['blessing'],
                        serving_model_dir, vertex_push_config)

  components = [c for c in (csv_gen, image_gen, statistics_gen, schema_gen,
                            example_validator, transform, trainer, latest_blessed,
                            evaluator, model_pusher) if c is not None]
  if beam_job_names:
    for component in components:
      if isinstance(component, BaseBeamComponent):
        component.with_beam_pipeline_args(job_name_args(pipeline_name, component.id))

  return Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )


def _common_args(settings: settings_lib.Settings) -> Dict[str, Any]:
  """What a local and a Kubeflow run configure the same way."""
  return dict(
      train_steps=settings.trainer.train_steps,
      eval_steps=settings.trainer.eval_steps,
      transform_config=settings.data.transform_config(),
      trainer_config=settings.trainer.trainer_config(),
      example_gen_executor=settings.data.example_gen,
      transform_executor=settings.data.transform,
      max_rejected=settings.data.max_rejected,
      images=settings.images.enabled,
      image_size=settings.images.size,
      image_licenses=settings.images.licenses,
      image_http_timeout=settings.images.http_timeout,
      bless_margin=settings.serving.bless_margin,
      bless_max_ratio=settings.serving.max_ratio,
  )


def local_pipeline(settings: settings_lib.Settings) -> Pipeline:
  """The pipeline as LocalDagRunner runs it: local paths, SQLite ML Metadata,
  the module file (so the cache follows the code), Beam per COCO_BEAM_MODE."""
  from pipeline.artifacts import metadata  # pylint: disable=g-import-not-at-top
  return create_pipeline(
      pipeline_name=settings_lib.PIPELINE_NAME,
      pipeline_root=settings.run.pipeline_root,
      data_root=settings.run.data_root,
      module_file=settings_lib.MODULE_FILE,
      metadata_connection_config=metadata.connection_config(settings.run.metadata_file),
      enable_cache=settings.run.cache,
      beam_pipeline_args=beam_pipeline_args(settings.beam, settings.gcp,
                                            package=settings.run.worker_package),
      image_location=settings.images.location,
      serving_model_dir=settings.serving.model_dir(settings.run),
      beam_job_names=names_jobs(settings.beam.mode),
      **_common_args(settings))


def kubeflow_pipeline(settings: settings_lib.Settings) -> Pipeline:
  """The pipeline as it runs on Kubeflow/Vertex: gs:// roots, the code from the
  component image by dotted name (a module file would be wheeled and copied
  to the pipeline root at compile time), Dataflow Beam args by default; a
  blessed model goes to Vertex AI, or to COCO_KFP_SERVING_DIR when set."""
  gcp = settings.gcp
  return create_pipeline(
      pipeline_name=settings_lib.PIPELINE_NAME,
      pipeline_root=gcp.pipeline_root(),
      data_root=gcp.data_root(),
      preprocessing_fn=settings_lib.PREPROCESSING_FN,
      run_fn=settings_lib.RUN_FN,
      beam_pipeline_args=kubeflow_beam_args(settings),
      image_location=gcp.image_location() if settings.images.enabled else None,
      serving_model_dir=(os.path.join(gcp.kfp_serving_dir, settings_lib.SERVING_MODEL_NAME)
                         if gcp.kfp_serving_dir else None),
      vertex_push_config=None if gcp.kfp_serving_dir else vertex_push_config(gcp),
      beam_job_names=names_jobs(gcp.kfp_beam_mode),
      **_common_args(settings))


def vertex_push_config(gcp: settings_lib.GcpSettings) -> Dict[str, Any]:
  """custom_config of TFX's Vertex pusher: upload the blessed model to the
  Model Registry and deploy it to the configured endpoint."""
  from tfx.extensions.google_cloud_ai_platform import constants as vertex  # pylint: disable=g-import-not-at-top
  gcp.require('project', purpose='Pushing to Vertex AI')
  return {
      vertex.ENABLE_VERTEX_KEY: True,
      vertex.VERTEX_REGION_KEY: gcp.region,
      vertex.VERTEX_CONTAINER_IMAGE_URI_KEY: gcp.vertex_serving_image,
      vertex.SERVING_ARGS_KEY: {
          'project_id': gcp.project,
          'endpoint_name': gcp.vertex_endpoint,
          'machine_type': gcp.vertex_machine_type,
      },
  }
