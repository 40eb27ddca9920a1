"""The TFX pipeline: CsvExampleGen (-> ImageExampleGen) -> StatisticsGen -> SchemaGen ->
ExampleValidator, Transform -> Trainer.

Reads top to bottom like the DAG it builds. Runners (local, Kubeflow/Vertex)
call `create_pipeline` with their own metadata and Beam settings; nothing
here knows which orchestrator runs it.
"""

from typing import List, Optional

from ml_metadata.proto import metadata_store_pb2
import tensorflow_data_validation as tfdv
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from pipeline import config, fast_csv, fast_transform
from pipeline.images_component import ImageExampleGen


def example_gen_output_config() -> tfx.proto.Output:
  """Deterministic train/eval split by image id (hash buckets), so all
  captions of one image land in the same split."""
  return tfx.proto.Output(
      split_config=tfx.proto.SplitConfig(
          splits=[tfx.proto.SplitConfig.Split(name=name, hash_buckets=buckets)
                  for name, buckets in config.SPLIT_BUCKETS.items()],
          partition_feature_name=config.SPLIT_FEATURE))


def statistics_options() -> tfdv.StatsOptions:
  """Sketch-based top-k and unique counts: every caption is distinct, and
  exact counting of a few hundred thousand distinct strings dominates
  StatisticsGen. Counts, lengths and histograms stay exact."""
  return tfdv.StatsOptions(use_sketch_based_topk_uniques=True)


def use_example_gen_executor(example_gen: tfx.components.CsvExampleGen, name: str) -> None:
  """CsvExampleGen's executor: TFX's own ('stock') or the pyarrow one ('fast',
  pipeline/fast_csv.py; same outputs, proven equal in tests and bench).
  CsvExampleGen takes no custom_executor_spec argument, hence the attribute."""
  if name == 'fast':
    example_gen.executor_spec = executor_spec.BeamExecutorSpec(fast_csv.Executor)
  elif name != 'stock':
    raise ValueError(f'unknown ExampleGen executor {name!r}; choose fast or stock')


def use_transform_executor(transform: tfx.components.Transform, name: str) -> None:
  """Transform's executor: TFX's own ('stock') or the same with batched
  TFRecord reading and writing ('fast', pipeline/fast_transform.py)."""
  if name == 'fast':
    transform.executor_spec = executor_spec.BeamExecutorSpec(fast_transform.Executor)
  elif name != 'stock':
    raise ValueError(f'unknown Transform executor {name!r}; choose fast or stock')


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    *,
    module_file: Optional[str] = None,
    preprocessing_fn: Optional[str] = None,
    run_fn: Optional[str] = None,
    train_steps: int = config.TRAIN_STEPS,
    eval_steps: Optional[int] = config.EVAL_STEPS,
    transform_config: Optional[dict] = None,
    trainer_config: Optional[dict] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    enable_cache: bool = True,
    beam_pipeline_args: Optional[List[str]] = None,
    example_gen_executor: Optional[str] = None,
    transform_executor: Optional[str] = None,
    images: Optional[bool] = None,
    image_location: Optional[str] = None,
    image_size: Optional[int] = None,
) -> tfx.dsl.Pipeline:
  """Builds the pipeline.

  The user code comes either from `module_file` (a path; TFX wheels it and
  its cache key follows the file contents: the local default) or from dotted
  names `preprocessing_fn` / `run_fn` of the installed package (what a
  component image uses on Kubeflow/Vertex, where no local file exists).

  `images` (default: `COCO_IMAGES`) adds ImageExampleGen after CsvExampleGen:
  its image-caption Examples, read from `image_location` (default
  `COCO_IMAGE_DIR`) at `image_size` (default `COCO_IMAGE_SIZE`), are what
  StatisticsGen, Transform and the rest see; the split stays CsvExampleGen's.
  """
  if module_file and not (preprocessing_fn or run_fn):
    transform_code = trainer_code = {'module_file': module_file}
  elif preprocessing_fn and run_fn and not module_file:
    transform_code = {'preprocessing_fn': preprocessing_fn}
    trainer_code = {'run_fn': run_fn}
  else:
    raise ValueError('Give either module_file, or both preprocessing_fn and run_fn.')

  example_gen = tfx.components.CsvExampleGen(
      input_base=data_root, output_config=example_gen_output_config())
  use_example_gen_executor(example_gen, example_gen_executor or config.example_gen_executor())
  examples = example_gen.outputs['examples']
  transform_config = dict(transform_config or config.transform_config())

  image_gen = None
  images = config.images_enabled() if images is None else images
  if images:
    image_size = image_size or config.image_size()
    image_gen = ImageExampleGen(
        captions=examples,
        image_location=image_location or config.image_location(),
        image_size=image_size,
        allowed_licenses=config.allowed_licenses(),
        http_timeout=config.image_http_timeout())
    examples = image_gen.outputs['examples']
    transform_config['image_size'] = image_size   # preprocessing_fn's image tensor

  statistics_gen = tfx.components.StatisticsGen(
      examples=examples, stats_options=statistics_options())

  schema_gen = tfx.components.SchemaGen(
      statistics=statistics_gen.outputs['statistics'], infer_feature_shape=True)

  # Anomalies of the data against the schema are recorded (and shown by the
  # runner and the report); they do not stop the run.
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])

  # StatisticsGen already describes the raw data; Transform's own pre- and
  # post-transform statistics would read every example twice more.
  transform = tfx.components.Transform(
      examples=examples,
      schema=schema_gen.outputs['schema'],
      custom_config=transform_config,
      disable_statistics=True,
      **transform_code)
  use_transform_executor(transform, transform_executor or config.transform_executor())

  trainer = tfx.components.Trainer(
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      train_args=tfx.proto.TrainArgs(num_steps=train_steps),
      eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
      custom_config=trainer_config or config.trainer_config(),
      **trainer_code)

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=[c for c in (example_gen, image_gen, statistics_gen, schema_gen,
                              example_validator, transform, trainer) if c is not None],
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )
