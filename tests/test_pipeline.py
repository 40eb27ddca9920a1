"""The DAG and its configuration, without running it."""

import pytest

from pipeline import beam, config
from pipeline.pipeline import create_pipeline

MODULE_FILE = f'{config.PROJECT_DIR}/modules/captions_module.py'


def build(**kwargs):
  args = dict(pipeline_name='t', pipeline_root='/tmp/root', data_root='/tmp/data',
              module_file=MODULE_FILE)
  args.update(kwargs)
  return create_pipeline(**args)


def test_components_in_dag_order():
  p = build()
  assert [c.id for c in p.components] == [
      'CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform', 'Trainer']
  assert tuple(c.id for c in p.components) == config.COMPONENTS
  by_id = {c.id: c for c in p.components}
  assert {u.id for u in by_id['Trainer'].upstream_nodes} == {'Transform', 'SchemaGen'}
  assert {u.id for u in by_id['Transform'].upstream_nodes} == {'CsvExampleGen', 'SchemaGen'}
  assert {u.id for u in by_id['ExampleValidator'].upstream_nodes} == {'StatisticsGen', 'SchemaGen'}


def test_images_switch_adds_image_example_gen_after_csv_example_gen(monkeypatch):
  from pipeline.images_component import ImageExampleGen
  monkeypatch.delenv('COCO_IMAGES', raising=False)
  assert 'ImageExampleGen' not in [c.id for c in build().components]
  p = build(images=True, image_location='/images/{folder}', image_size=32)
  assert tuple(c.id for c in p.components) == config.components(images=True)
  by_id = {c.id: c for c in p.components}
  assert isinstance(by_id['ImageExampleGen'], ImageExampleGen)
  assert {u.id for u in by_id['ImageExampleGen'].upstream_nodes} == {'CsvExampleGen'}
  for consumer in ('StatisticsGen', 'Transform'):
    assert by_id[consumer].inputs['examples'] is by_id['ImageExampleGen'].outputs['examples']
  props = by_id['ImageExampleGen'].exec_properties
  assert props['image_location'] == '/images/{folder}' and props['image_size'] == 32
  assert '"image_size": 32' in by_id['Transform'].exec_properties['custom_config']
  assert 'image_size' not in build().components[-2].exec_properties['custom_config']
  monkeypatch.setenv('COCO_IMAGES', '1')
  monkeypatch.setenv('COCO_IMAGE_DIR', 'gs://bucket/images')
  p = build()
  assert p.components[1].id == 'ImageExampleGen'
  assert p.components[1].exec_properties['image_location'] == 'gs://bucket/images'
  monkeypatch.delenv('COCO_IMAGE_DIR')
  with pytest.raises(ValueError, match='COCO_IMAGE_DIR'):
    build()


def test_split_by_image_id_two_to_one():
  eg = build().components[0]
  output_config = eg.exec_properties['output_config']
  assert 'image_id' in output_config and 'hash_buckets' in output_config
  from pipeline.pipeline import example_gen_output_config
  cfg = example_gen_output_config().split_config
  assert cfg.partition_feature_name == config.IMAGE_ID_KEY
  assert [(s.name, s.hash_buckets) for s in cfg.splits] == [('train', 2), ('eval', 1)]


def test_example_gen_executor_switch(monkeypatch):
  from pipeline import fast_csv
  assert build().components[0].executor_spec.executor_class is fast_csv.Executor
  stock = build(example_gen_executor='stock').components[0].executor_spec.executor_class
  assert stock is not fast_csv.Executor and stock.__module__.endswith('csv_example_gen.executor')
  monkeypatch.setenv('COCO_EXAMPLEGEN', 'stock')
  assert build().components[0].executor_spec.executor_class is stock
  with pytest.raises(ValueError, match='choose fast or stock'):
    build(example_gen_executor='turbo')


def test_config_reaches_components_as_custom_config():
  p = build(train_steps=7)
  by_id = {c.id: c for c in p.components}
  assert '"vocab_size": 5000' in by_id['Transform'].exec_properties['custom_config']
  assert '"batch_size"' in by_id['Trainer'].exec_properties['custom_config']
  assert '"num_steps": 7' in by_id['Trainer'].exec_properties['train_args']
  assert by_id['SchemaGen'].exec_properties['infer_feature_shape'] in (True, 1)


def test_module_path_alternative_and_argument_errors():
  p = build(module_file=None, preprocessing_fn='modules.preprocessing.preprocessing_fn',
            run_fn='modules.model.run_fn')
  by_id = {c.id: c for c in p.components}
  assert by_id['Transform'].exec_properties['preprocessing_fn'] == 'modules.preprocessing.preprocessing_fn'
  assert by_id['Trainer'].exec_properties['run_fn'] == 'modules.model.run_fn'
  with pytest.raises(ValueError, match='either module_file'):
    build(run_fn='modules.model.run_fn')
  with pytest.raises(ValueError, match='either module_file'):
    build(module_file=None, run_fn='modules.model.run_fn')


def test_beam_args_per_mode(monkeypatch):
  assert '--direct_running_mode=in_memory' in beam.beam_pipeline_args('in_memory')
  mp = beam.beam_pipeline_args('multi_processing', workers=3)
  assert '--direct_running_mode=multi_processing' in mp and '--direct_num_workers=3' in mp
  monkeypatch.setenv('COCO_BEAM_MODE', 'multi_processing')
  monkeypatch.setenv('COCO_BEAM_WORKERS', '2')
  assert '--direct_num_workers=2' in beam.beam_pipeline_args()
  monkeypatch.setenv('COCO_BEAM_MODE', 'spark')
  with pytest.raises(ValueError, match='COCO_BEAM_MODE'):
    beam.beam_pipeline_args()


def test_dataflow_args_need_project_and_bucket(monkeypatch):
  for name in ('COCO_GCP_PROJECT', 'COCO_GCS_ROOT', 'COCO_DATAFLOW_SHIP'):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ValueError, match='COCO_GCP_PROJECT, COCO_GCS_ROOT'):
    beam.beam_pipeline_args('dataflow')
  monkeypatch.setenv('COCO_GCP_PROJECT', 'my-proj')
  monkeypatch.setenv('COCO_GCS_ROOT', 'gs://bucket/coco/')
  args = beam.beam_pipeline_args('dataflow')
  assert '--runner=DataflowRunner' in args and '--project=my-proj' in args
  assert '--temp_location=gs://bucket/coco/beam/tmp' in args
  assert '--staging_location=gs://bucket/coco/beam/staging' in args
  assert '--sdk_container_image=gcr.io/my-proj/coco-captions-tfx:latest' in args
  monkeypatch.setenv('COCO_DATAFLOW_SHIP', 'setup_file')
  assert any(a.startswith('--setup_file=') for a in beam.beam_pipeline_args('dataflow'))


def test_env_int_names_the_variable(monkeypatch):
  monkeypatch.setenv('COCO_TRAIN_STEPS', 'many')
  with pytest.raises(ValueError, match='COCO_TRAIN_STEPS'):
    config.train_steps()


def test_partial_run_setting(monkeypatch):
  import local_runner
  assert local_runner.run_to() == 'Trainer'
  monkeypatch.setenv('COCO_RUN_TO', 'Transform')
  assert local_runner.run_to() == 'Transform'
  monkeypatch.setenv('COCO_RUN_TO', 'Pusher')
  with pytest.raises(ValueError, match='COCO_RUN_TO'):
    local_runner.run_to()


def test_a_partial_run_counts_only_what_it_runs():
  import local_runner
  p = build()
  assert local_runner.nodes_to_run(p, 'Transform') == {
      'CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'Transform'}
  assert local_runner.nodes_to_run(p, 'Trainer') == set(config.COMPONENTS) - {'ExampleValidator'}
  assert len(local_runner.nodes_to_run(p, 'ExampleValidator')) == 4
