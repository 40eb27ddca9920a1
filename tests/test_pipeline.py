"""The DAG and how the settings configure it, without running it."""

import json
import os
import socket

import pytest

from modules import features
from pipeline import beam_args, settings
from pipeline.components import csv_example_gen
from pipeline.orchestration import local
from pipeline.pipeline import create_pipeline, example_gen_output_config, local_pipeline
from pipeline.settings import Settings, SettingsError
from tests.conftest import COMPONENTS, RESOLVER, run_local


def build(**kwargs):
  args = dict(pipeline_name='t', pipeline_root='/tmp/root', data_root='/tmp/data',
              module_file=settings.MODULE_FILE, serving_model_dir='/tmp/serving')
  args.update(kwargs)
  return create_pipeline(**args)


def from_env(**env):
  return local_pipeline(Settings.from_env({f'COCO_{k}': v for k, v in env.items()}))


def test_components_in_dag_order():
  p = build()
  assert [c.id for c in p.components] == COMPONENTS
  by_id = {c.id: c for c in p.components}
  assert {u.id for u in by_id['Trainer'].upstream_nodes} == {'Transform', 'SchemaGen'}
  assert {u.id for u in by_id['Transform'].upstream_nodes} == {'CsvExampleGen', 'SchemaGen'}
  assert {u.id for u in by_id['ExampleValidator'].upstream_nodes} == {'StatisticsGen', 'SchemaGen'}


def test_images_switch_adds_image_example_gen_after_csv_example_gen():
  from pipeline.components.image_example_gen import ImageExampleGen
  assert 'ImageExampleGen' not in [c.id for c in build().components]
  p = build(images=True, image_location='/images/{folder}', image_size=32)
  assert [c.id for c in p.components] == COMPONENTS[:2] + ['ImageExampleGen'] + COMPONENTS[2:]
  by_id = {c.id: c for c in p.components}
  assert isinstance(by_id['ImageExampleGen'], ImageExampleGen)
  assert {u.id for u in by_id['ImageExampleGen'].upstream_nodes} == {'CsvExampleGen'}
  for consumer in ('StatisticsGen', 'Transform'):
    assert by_id[consumer].inputs['examples'] is by_id['ImageExampleGen'].outputs['examples']
  props = by_id['ImageExampleGen'].exec_properties
  assert props['image_location'] == '/images/{folder}' and props['image_size'] == 32
  # Transform passes the JPEG through; the Trainer's export decodes at this size.
  assert 'image_size' not in by_id['Transform'].exec_properties['custom_config']
  assert '"image_size": 32' in by_id['Trainer'].exec_properties['custom_config']
  assert 'image_size' not in {c.id: c for c in build().components}['Trainer'].exec_properties['custom_config']
  p = from_env(IMAGES='1', IMAGE_DIR='gs://bucket/images')
  assert p.components[2].id == 'ImageExampleGen'
  assert p.components[2].exec_properties['image_location'] == 'gs://bucket/images'
  with pytest.raises(ValueError, match='COCO_IMAGE_DIR'):
    from_env(IMAGES='1')


def test_split_by_image_id_two_to_one():
  eg = build().components[0]
  output_config = eg.exec_properties['output_config']
  assert 'image_id' in output_config and 'hash_buckets' in output_config
  cfg = example_gen_output_config().split_config
  assert cfg.partition_feature_name == features.IMAGE_ID_KEY
  assert [(s.name, s.hash_buckets) for s in cfg.splits] == [('train', 2), ('eval', 1)]


def test_example_gen_executor_switch():
  assert build().components[0].executor_spec.executor_class is csv_example_gen.Executor
  stock = build(example_gen_executor='stock').components[0].executor_spec.executor_class
  assert stock is not csv_example_gen.Executor
  assert stock.__module__ == 'tfx.components.example_gen.csv_example_gen.executor'
  assert from_env(EXAMPLEGEN='stock').components[0].executor_spec.executor_class is stock
  with pytest.raises(ValueError, match='choose fast or stock'):
    build(example_gen_executor='turbo')


def test_the_rejection_limit_reaches_the_executor_as_custom_config():
  """In the component's exec properties (so in its cache key and in the compiled
  spec), and read back by the executor's own parser."""
  default = build().components[0]
  assert csv_example_gen.custom_config_values(default.exec_properties) == {
      'max_rejected_fraction': 0.05, 'max_tokens': 16}
  strict = from_env(MAX_REJECTED='0.01', MAX_TOKENS='20').components[0]
  assert csv_example_gen.custom_config_values(strict.exec_properties) == {
      'max_rejected_fraction': 0.01, 'max_tokens': 20}
  assert strict.exec_properties['custom_config'] != default.exec_properties['custom_config']


def test_settings_reach_components_as_custom_config():
  p = from_env(TRAIN_STEPS='7', VOCAB_SIZE='300', BATCH_SIZE='64', STEPS_PER_EPOCH='5')
  by_id = {c.id: c for c in p.components}
  transform = json.loads(by_id['Transform'].exec_properties['custom_config'])
  assert transform == {'vocab_size': 300, 'max_tokens': 16}
  trainer = json.loads(by_id['Trainer'].exec_properties['custom_config'])
  assert trainer['batch_size'] == 64 and trainer['steps_per_epoch'] == 5 and trainer['seed'] == 42
  assert '"num_steps": 7' in by_id['Trainer'].exec_properties['train_args']
  assert by_id['SchemaGen'].exec_properties['infer_feature_shape'] in (True, 1)


def test_module_path_alternative_and_argument_errors():
  p = build(module_file=None, preprocessing_fn=settings.PREPROCESSING_FN, run_fn=settings.RUN_FN)
  by_id = {c.id: c for c in p.components}
  assert by_id['Transform'].exec_properties['preprocessing_fn'] == 'modules.preprocessing.preprocessing_fn'
  assert by_id['Trainer'].exec_properties['run_fn'] == 'modules.trainer.run_fn'
  with pytest.raises(ValueError, match='either module_file'):
    build(run_fn=settings.RUN_FN)
  with pytest.raises(ValueError, match='either module_file'):
    build(module_file=None, run_fn=settings.RUN_FN)


PACKAGE = '/runs/coco-captions/worker-package/coco-captions-tfx.tar.gz'


def test_beam_args_per_mode():
  def args(**env):
    s = Settings.from_env({f'COCO_{k}': v for k, v in env.items()})
    return beam_args.beam_pipeline_args(s.beam, s.gcp, package=PACKAGE)
  assert '--direct_running_mode=in_memory' in args()
  mp = args(BEAM_MODE='multi_processing', BEAM_WORKERS='3')
  assert '--direct_running_mode=multi_processing' in mp and '--direct_num_workers=3' in mp
  for direct in (args(), mp):   # DirectRunner stages nothing: setup.py only names the code
    assert f'--setup_file={settings.SETUP_FILE}' in direct
    assert not any(a.startswith('--extra_package') for a in direct)
  portable = args(BEAM_MODE='portable', BEAM_JOB_ENDPOINT='localhost:8099')
  assert '--job_endpoint=localhost:8099' in portable and '--environment_type=LOOPBACK' in portable
  # Beam stages the run's own sdist, never `setup.py sdist` in the checkout per stage.
  assert f'--extra_package={PACKAGE}' in portable
  assert not any(a.startswith('--setup_file') for a in portable)
  s = Settings.from_env({'COCO_BEAM_MODE': 'portable', 'COCO_BEAM_JOB_ENDPOINT': 'h:1'})
  with pytest.raises(ValueError, match='worker_package'):
    beam_args.beam_pipeline_args(s.beam, s.gcp)
  with pytest.raises(ValueError, match='COCO_BEAM_JOB_ENDPOINT'):
    args(BEAM_MODE='portable')
  with pytest.raises(SettingsError, match='COCO_BEAM_MODE'):
    args(BEAM_MODE='spark')


def test_dataflow_args_need_project_and_bucket():
  def dataflow(**env):
    s = Settings.from_env({f'COCO_{k}': v for k, v in env.items()})
    return beam_args.beam_pipeline_args(s.beam, s.gcp, 'dataflow')
  with pytest.raises(ValueError, match='COCO_GCP_PROJECT, COCO_GCS_ROOT'):
    dataflow()
  args = dataflow(GCP_PROJECT='my-proj', GCS_ROOT='gs://bucket/coco/')
  assert '--runner=DataflowRunner' in args and '--project=my-proj' in args
  assert '--temp_location=gs://bucket/coco/beam/tmp' in args
  assert '--staging_location=gs://bucket/coco/beam/staging' in args
  assert '--sdk_container_image=gcr.io/my-proj/coco-captions-tfx:latest' in args
  shipped = dataflow(GCP_PROJECT='my-proj', GCS_ROOT='gs://b', DATAFLOW_SHIP='setup_file')
  assert any(a.startswith('--setup_file=') for a in shipped)


def flink_args(package=PACKAGE, **env):
  s = Settings.from_env({f'COCO_{k}': v for k, v in env.items()})
  return beam_args.beam_pipeline_args(s.beam, s.gcp, 'flink', package=package)


def sdk_environment(args):
  """The SDK worker environment Beam's PortableRunner puts into the job it
  submits for these arguments (what the TaskManagers start), built offline."""
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  from apache_beam.runners.portability.portable_runner import PortableRunner  # pylint: disable=g-import-not-at-top
  environment = PortableRunner._create_environment(PipelineOptions(args))  # pylint: disable=protected-access
  return environment.to_runner_api(None)


def test_flink_workers_run_beside_the_taskmanagers_never_in_the_launching_process(tmp_path):
  package = tmp_path / 'coco-captions-tfx.tar.gz'   # Beam reads the file to name its artifact
  package.write_bytes(b'sdist')
  args = flink_args(str(package), FLINK_JOB_ENDPOINT='jobs:8099', FLINK_WORKERS='pool:50000',
                    FLINK_PARALLELISM='4')
  assert args[:3] == ['--runner=PortableRunner', '--job_endpoint=jobs:8099', '--parallelism=4']
  assert '--environment_type=EXTERNAL' in args and '--environment_config=pool:50000' in args
  assert f'--extra_package={package}' in args   # the run's sdist: TFX builds none of its own
  from apache_beam.portability.api import beam_runner_api_pb2  # pylint: disable=g-import-not-at-top
  env = sdk_environment(args)
  assert env.urn == 'beam:env:external:v1'
  assert beam_runner_api_pb2.ExternalPayload.FromString(env.payload).endpoint.url == 'pool:50000'
  # A job keeps its workers between stages (tests/test_flink.py counts them): Beam reads it.
  from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions  # pylint: disable=g-import-not-at-top
  cache_ms = PipelineOptions(args).view_as(PortableOptions).environment_cache_millis
  assert int(cache_ms) == beam_args.FLINK_ENVIRONMENT_CACHE_MS > 0   # Beam keeps it a string


def test_flink_workers_in_docker_are_the_component_image_with_its_code():
  from apache_beam.portability.api import beam_runner_api_pb2  # pylint: disable=g-import-not-at-top
  args = flink_args(FLINK_ENVIRONMENT='DOCKER', IMAGE='registry.example/coco:1')
  assert '--environment_type=DOCKER' in args and '--environment_config=registry.example/coco:1' in args
  assert not any(a.startswith(('--setup_file=', '--extra_package')) for a in args)   # in the image
  env = sdk_environment(args)
  assert env.urn == 'beam:env:docker:v1'
  assert beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image == (
      'registry.example/coco:1')
  # Inside the component image (a Kubeflow/Vertex task) the workers are that image too.
  s = Settings.from_env({'COCO_GCP_PROJECT': 'p'})
  in_image = beam_args.beam_pipeline_args(s.beam, s.gcp, 'flink', in_image=True)
  assert '--environment_config=gcr.io/p/coco-captions-tfx:latest' in in_image
  with pytest.raises(SettingsError, match='COCO_IMAGE'):
    flink_args(FLINK_ENVIRONMENT='DOCKER')   # no image and no project to name one after
  with pytest.raises(SettingsError, match='COCO_FLINK_ENVIRONMENT'):
    flink_args(FLINK_ENVIRONMENT='LOOPBACK')


def test_each_beam_stage_on_flink_is_a_job_named_after_its_component():
  def job_names(**env):
    p = from_env(**env)
    return {c.id: [a for a in c.executor_spec.beam_pipeline_args if a.startswith('--job_name=')]
            for c in p.components if hasattr(c.executor_spec, 'beam_pipeline_args')}
  named = job_names(BEAM_MODE='flink')
  assert named == {c: [f'--job_name=coco-captions-{c}'] for c in
                   ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')}
  assert all(names == [] for names in job_names().values())   # DirectRunner: Beam's default


def test_a_flink_cluster_that_is_not_there_is_one_line_naming_it(tmp_path):
  with socket.socket() as probe:     # a port nobody listens on
    probe.bind(('localhost', 0))
    port = probe.getsockname()[1]
  env = {'COCO_BEAM_MODE': 'flink', 'COCO_FLINK_MASTER': f'localhost:{port}',
         'COCO_OUTPUT_DIR': str(tmp_path)}
  result = run_local(dict(os.environ, **env), timeout=60)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'error: no Flink cluster answers at http://localhost:{port} (COCO_FLINK_MASTER): '
      '[Errno 111] Connection refused; start the local one with `make flink-up` '
      '(tools/flink.sh up), or set COCO_FLINK_MASTER to yours']
  assert os.listdir(tmp_path) == []   # nothing was started or written


def test_partial_run_setting_is_checked_against_the_pipelines_nodes():
  p = build()
  assert local.last_node(p, None) == 'Pusher'
  assert local.last_node(p, 'Transform') == 'Transform'
  with pytest.raises(SettingsError, match="COCO_RUN_TO='InfraValidator'; choose one of CsvExampleGen, "):
    local.last_node(p, 'InfraValidator')


def test_a_partial_run_counts_only_what_it_runs():
  p = build()
  assert local.nodes_to_run(p, 'Transform') == {
      'CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'Transform'}
  assert local.nodes_to_run(p, 'Trainer') == set(COMPONENTS) - {
      'ExampleValidator', RESOLVER, 'Evaluator', 'Pusher'}
  assert local.nodes_to_run(p, 'Pusher') == set(COMPONENTS) - {'ExampleValidator'}
  assert len(local.nodes_to_run(p, 'ExampleValidator')) == 4
