"""The Kubeflow Pipelines v2 / Vertex AI side, proven offline.

Compiles kubeflow_runner.py (JSON PipelineJob and YAML PipelineSpec) in
subprocesses whose sockets are disabled, then checks the compiled IR, the
submission step (with recording fakes for kfp.Client / aiplatform.PipelineJob),
the component image's Dockerfile, the wheel, and the tfx CLI with --engine vertex.
"""

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from modules import constants
from pipeline import beam_args, settings
from pipeline.orchestration import image_env
from pipeline.tools import submit

PYTHON = sys.executable
VENV_BIN = os.path.dirname(sys.executable)
RUNNER = os.path.join(settings.PROJECT_DIR, 'kubeflow_runner.py')

PROJECT = 'test-proj'
REGION = 'europe-west4'
GCS_ROOT = 'gs://test-bucket/coco'
IMAGE = 'europe-west4-docker.pkg.dev/test-proj/coco/coco-captions-tfx:t1'
GCP_ENV = {'COCO_GCP_PROJECT': PROJECT, 'COCO_GCP_REGION': REGION,
           'COCO_GCS_ROOT': GCS_ROOT, 'COCO_IMAGE': IMAGE}
# Settings that would change the compiled spec if the developer's shell had them.
STRAY_ENV = ('COCO_KFP_PIPELINE_ROOT', 'COCO_KFP_DATA_ROOT', 'COCO_KFP_BEAM_MODE',
             'COCO_KFP_FORMAT', 'COCO_KFP_OUTPUT_DIR', 'COCO_DATAFLOW_SHIP',
             'COCO_DATAFLOW_REQUIREMENTS', 'COCO_DATAFLOW_MACHINE_TYPE',
             'COCO_DATAFLOW_MAX_WORKERS', 'COCO_DATAFLOW_DISK_GB', 'VERTEX_HOME', 'KUBEFLOW_HOME',
             'COCO_IMAGES', 'COCO_KFP_IMAGE_DIR', 'COCO_IMAGE_SIZE', 'COCO_IMAGE_LICENSES',
             'COCO_IMAGE_HTTP_TIMEOUT', 'COCO_BLESS_MARGIN', 'COCO_VERTEX_ENDPOINT',
             'COCO_VERTEX_SERVING_IMAGE', 'COCO_VERTEX_MACHINE_TYPE')

BLESSING_RESOLVER = 'latest_blessed_model_resolver-model-blessing-resolver'
MODEL_RESOLVER = 'latest_blessed_model_resolver-model-resolver'
EDGES = {  # task -> the tasks it depends on
    'CsvExampleGen': set(),
    'StatisticsGen': {'CsvExampleGen'},
    'SchemaGen': {'StatisticsGen'},
    'ExampleValidator': {'StatisticsGen', 'SchemaGen'},
    'Transform': {'CsvExampleGen', 'SchemaGen'},
    'Trainer': {'Transform', 'SchemaGen'},
    BLESSING_RESOLVER: set(),
    MODEL_RESOLVER: set(),   # reads the blessing resolver's output, which KFP resolves first
    'Evaluator': {'CsvExampleGen', 'SchemaGen', 'Trainer', MODEL_RESOLVER},
    'Pusher': {'Trainer', 'Evaluator'},
}
# KFP v2 compiles TFX's latest-blessed-model resolver into two queries of ML Metadata.
PRODUCERS = {MODEL_RESOLVER: {BLESSING_RESOLVER}}
RESOLVERS = (BLESSING_RESOLVER, MODEL_RESOLVER)
BEAM_TASKS = ('CsvExampleGen', 'StatisticsGen', 'Transform')

# A sitecustomize that makes every network connection (and name lookup) fail
# and records it, so "compiling contacts nothing" is observed, not assumed.
NETWORK_GUARD = textwrap.dedent('''
    import os, socket
    _LOG = os.environ['NETWORK_GUARD_LOG']
    def _refuse(what, *args):
      with open(_LOG, 'a') as f:
        f.write(f'{what} {args!r}\\n')
      raise OSError(f'network disabled by the test: {what} {args!r}')
    _connect = socket.socket.connect
    def connect(self, address):
      if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse('connect', address)
      return _connect(self, address)
    socket.socket.connect = connect
    socket.socket.connect_ex = lambda self, address: _refuse('connect_ex', address)
    socket.getaddrinfo = lambda *a, **k: _refuse('getaddrinfo', *a[:2])
    socket.gethostbyname = lambda *a: _refuse('gethostbyname', *a)
''')


def dataflow_args() -> list:
  """The Dataflow arguments the current environment's settings give."""
  current = settings.Settings.from_env()
  return beam_args.beam_pipeline_args(current.beam, current.gcp, 'dataflow')


def clean_env(**extra) -> dict:
  """os.environ without stray COCO_/CLI settings, plus the test's GCP settings."""
  env = {k: v for k, v in os.environ.items() if k not in STRAY_ENV}
  env.update(GCP_ENV)
  env.update(extra)
  return env


def guarded_env(tmp_path, **extra) -> dict:
  guard_dir = tmp_path / 'guard'
  guard_dir.mkdir(exist_ok=True)
  (guard_dir / 'sitecustomize.py').write_text(NETWORK_GUARD)
  return clean_env(PYTHONPATH=str(guard_dir), NETWORK_GUARD_LOG=str(tmp_path / 'network.log'),
                   **extra)


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """Runs `python kubeflow_runner.py` twice (JSON, YAML) with the network disabled."""
  tmp = tmp_path_factory.mktemp('kfp')
  results, running = {}, {}
  for fmt in ('json', 'yaml'):   # at once: each is a process of its own
    out = tmp / fmt
    env = guarded_env(tmp, COCO_KFP_OUTPUT_DIR=str(out), COCO_KFP_FORMAT=fmt)
    running[fmt] = subprocess.Popen([PYTHON, RUNNER], env=env, cwd=str(tmp), text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results[fmt + '_path'] = out / f'pipeline.{fmt}'
  for fmt, process in running.items():
    out, err = process.communicate(timeout=300)
    results[fmt] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
  results['network_log'] = tmp / 'network.log'
  results['tmp'] = tmp
  return results


def job_dict(compiled) -> dict:
  assert compiled['json'].returncode == 0, compiled['json'].stderr[-3000:]
  return json.loads(compiled['json_path'].read_text())


def spec_dict(compiled) -> dict:
  assert compiled['yaml'].returncode == 0, compiled['yaml'].stderr[-3000:]
  return yaml.safe_load(compiled['yaml_path'].read_text())


def tasks_of(spec: dict) -> dict:
  return spec['root']['dag']['tasks']


def executor_of(spec: dict, task: str) -> dict:
  label = spec['components'][tasks_of(spec)[task]['componentRef']['name']]['executorLabel']
  return spec['deploymentSpec']['executors'][label]['container']


def parameter(spec: dict, task: str, name: str) -> str:
  value = tasks_of(spec)[task]['inputs']['parameters'][name]['runtimeValue']['constantValue']
  return value['stringValue']


# ---------------------------------------------------------------- compiling


def test_compiling_contacts_nothing(compiled, tmp_path):
  for fmt in ('json', 'yaml'):
    assert compiled[fmt].returncode == 0, compiled[fmt].stderr[-3000:]
    assert compiled[fmt + '_path'].is_file()
    assert f'wrote {compiled[fmt + "_path"]}' in compiled[fmt].stdout
  assert not compiled['network_log'].exists(), compiled['network_log'].read_text()
  # Only the requested files were written (no module wheel, nothing else in cwd).
  written = sorted(str(p.relative_to(compiled['tmp'])) for p in compiled['tmp'].rglob('*')
                   if p.is_file() and 'guard' not in p.parts)
  assert written == ['json/pipeline.json', 'yaml/pipeline.yaml']
  # The guard itself works: a connection attempt under it fails and is logged.
  probe = subprocess.run([PYTHON, '-c', 'import socket; socket.socket().connect(("10.0.0.1", 80))'],
                         env=guarded_env(tmp_path), capture_output=True, text=True, timeout=60)
  assert probe.returncode != 0 and 'network disabled by the test' in probe.stderr
  assert (tmp_path / 'network.log').read_text().startswith("connect (('10.0.0.1', 80),)")


def test_yaml_is_a_kfp_pipeline_spec_with_every_task_and_edge(compiled):
  spec = pipeline_spec_pb2.PipelineSpec()
  json_format.ParseDict(spec_dict(compiled), spec)  # strict: unknown fields fail
  assert spec.pipeline_info.name == settings.PIPELINE_NAME
  tasks = spec.root.dag.tasks
  assert set(tasks) == set(EDGES)
  for name, upstream in EDGES.items():
    assert set(tasks[name].dependent_tasks) == upstream, name
    producers = {a.task_output_artifact.producer_task
                 for a in tasks[name].inputs.artifacts.values()}
    assert producers == PRODUCERS.get(name, upstream), name


def test_json_is_a_vertex_pipeline_job_with_the_gcs_pipeline_root(compiled):
  raw = job_dict(compiled)
  job = pipeline_spec_pb2.PipelineJob()
  json_format.ParseDict(raw, job)
  assert job.runtime_config.gcs_output_directory == f'{GCS_ROOT}/pipeline_root'
  assert job.display_name == settings.PIPELINE_NAME
  # Its pipelineSpec is the same IR as the YAML: one source of truth.
  inner = pipeline_spec_pb2.PipelineSpec()
  json_format.ParseDict(raw['pipelineSpec'], inner)
  assert raw['pipelineSpec'] == spec_dict(compiled)
  assert {n: set(t.dependent_tasks) for n, t in inner.root.dag.tasks.items()} == EDGES


def test_every_executor_runs_the_component_image(compiled):
  spec = spec_dict(compiled)
  executors = spec['deploymentSpec']['executors']
  assert len(executors) == len(EDGES)
  for task in set(EDGES) - set(RESOLVERS):
    container = executor_of(spec, task)
    assert container['image'] == IMAGE, task
    assert container['command'][:2] == ['python', '-m'], task


def test_evaluator_resolver_and_vertex_pusher_carry_the_settings(compiled):
  spec = spec_dict(compiled)
  executors = spec['deploymentSpec']['executors']
  label = lambda task: spec['components'][tasks_of(spec)[task]['componentRef']['name']][
      'executorLabel']
  blessing_query = executors[label(BLESSING_RESOLVER)]['resolver']['outputArtifactQueries']
  assert 'tfx.ModelBlessing' in blessing_query['model_blessing']['filter']
  assert "metadata.blessed.number_value=1" in blessing_query['model_blessing']['filter']
  model_query = executors[label(MODEL_RESOLVER)]['resolver']['outputArtifactQueries']
  assert 'current_model_id' in model_query['model']['filter']

  eval_config = json.loads(parameter(spec, 'Evaluator', 'eval_config'))
  metrics = {m['class_name']: m for m in eval_config['metrics_specs'][0]['metrics']}
  assert metrics['CaptionPerplexity']['module'] == 'modules.evaluation'
  ratio = metrics['PerplexityRatioToKneserNey']['per_slice_thresholds'][0]
  assert ratio == {'slicing_specs': [{}], 'threshold': {'value_threshold': {'upper_bound': 1.0}}}
  change = metrics['CaptionPerplexity']['per_slice_thresholds'][0]['threshold']['change_threshold']
  assert change == {'direction': 'LOWER_IS_BETTER', 'relative': 0.01}
  assert executor_of(spec, 'Evaluator')['args'][1] == 'pipeline.components.evaluator.Executor'

  pusher = executor_of(spec, 'Pusher')
  assert pusher['args'][1] == 'tfx.extensions.google_cloud_ai_platform.pusher.executor.Executor'
  custom = json.loads(parameter(spec, 'Pusher', 'custom_config'))
  assert custom == {
      'ai_platform_enable_vertex': True, 'ai_platform_vertex_region': REGION,
      'ai_platform_vertex_container_image_uri': settings.VERTEX_SERVING_IMAGE,
      'ai_platform_serving_args': {'project_id': PROJECT, 'endpoint_name': settings.PIPELINE_NAME,
                                   'machine_type': 'n1-standard-2'}}


def test_beam_components_get_the_dataflow_args(compiled, monkeypatch):
  for name in STRAY_ENV:
    monkeypatch.delenv(name, raising=False)
  for name, value in GCP_ENV.items():
    monkeypatch.setenv(name, value)
  expected = dataflow_args()
  spec = spec_dict(compiled)
  for task in BEAM_TASKS:
    args = executor_of(spec, task)['args']
    assert args[-len(expected):] == expected, task
    for flag in ('--runner=DataflowRunner', f'--project={PROJECT}', f'--region={REGION}',
                 f'--temp_location={GCS_ROOT}/beam/tmp',
                 f'--staging_location={GCS_ROOT}/beam/staging',
                 f'--sdk_container_image={IMAGE}'):
      assert flag in args, (task, flag)
  # ExampleGen's driver (it resolves spans before the cache check) gets them too.
  driver = executor_of(spec, 'CsvExampleGen')['lifecycle']['preCacheCheck']
  assert '--runner=DataflowRunner' in driver['args']


def test_input_and_user_code_for_the_cluster(compiled):
  spec = spec_dict(compiled)
  assert parameter(spec, 'CsvExampleGen', 'input_base') == f'{GCS_ROOT}/data'
  for task in ('Transform', 'Trainer'):
    assert 'module_file' not in tasks_of(spec)[task]['inputs']['parameters'], task


def referenced_functions(spec: dict):
  """The dotted user functions and our executor classes the compiled spec
  names (the component image must provide each)."""
  executors = sorted(set(re.findall(r'pipeline\.[a-z_.]+\.Executor', json.dumps(spec))))
  return [parameter(spec, 'Transform', 'preprocessing_fn'),
          parameter(spec, 'Trainer', 'run_fn')] + executors


# With images on: ImageExampleGen between CsvExampleGen and everything that reads examples.
IMAGE_EDGES = dict(EDGES, ImageExampleGen={'CsvExampleGen'}, StatisticsGen={'ImageExampleGen'},
                   Transform={'ImageExampleGen', 'SchemaGen'},
                   Evaluator={'ImageExampleGen', 'SchemaGen', 'Trainer', MODEL_RESOLVER})


@pytest.fixture(scope='module')
def compiled_images(tmp_path_factory):
  """`COCO_IMAGES=1 python kubeflow_runner.py` (YAML), network disabled."""
  tmp = tmp_path_factory.mktemp('kfp_images')
  env = guarded_env(tmp, COCO_KFP_OUTPUT_DIR=str(tmp / 'out'), COCO_KFP_FORMAT='yaml',
                    COCO_IMAGES='1')
  result = subprocess.run([PYTHON, RUNNER], env=env, cwd=str(tmp), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not (tmp / 'network.log').exists(), (tmp / 'network.log').read_text()
  return yaml.safe_load((tmp / 'out' / 'pipeline.yaml').read_text())


def test_images_on_compiles_image_example_gen_into_the_dag(compiled_images, monkeypatch):
  spec = pipeline_spec_pb2.PipelineSpec()
  json_format.ParseDict(compiled_images, spec)
  tasks = spec.root.dag.tasks
  assert {name: set(t.dependent_tasks) for name, t in tasks.items()} == IMAGE_EDGES
  image_inputs = tasks['ImageExampleGen'].inputs.artifacts
  assert image_inputs['captions'].task_output_artifact.producer_task == 'CsvExampleGen'
  for consumer in ('StatisticsGen', 'Transform'):
    producers = {a.task_output_artifact.producer_task
                 for name, a in tasks[consumer].inputs.artifacts.items() if name == 'examples'}
    assert producers == {'ImageExampleGen'}, consumer
  assert parameter(compiled_images, 'ImageExampleGen', 'image_location') == (
      f'{GCS_ROOT}/images/{{folder}}')
  assert json.loads(parameter(compiled_images, 'ImageExampleGen', 'allowed_licenses')) == list(
      settings.ALLOWED_LICENSES)
  # Transform passes the JPEG through; the Trainer's export decodes at the image size
  assert 'image_size' not in json.loads(parameter(compiled_images, 'Transform', 'custom_config'))
  assert json.loads(parameter(compiled_images, 'Trainer', 'custom_config'))['image_size'] == (
      constants.IMAGE_SIZE)
  container = executor_of(compiled_images, 'ImageExampleGen')
  assert container['image'] == IMAGE
  class_path = container['args'][container['args'].index('--executor_class_path') + 1]
  module_name, _, attr = class_path.rpartition('.')
  assert callable(getattr(importlib.import_module(module_name), attr)), class_path
  for name in STRAY_ENV:
    monkeypatch.delenv(name, raising=False)
  for name, value in GCP_ENV.items():
    monkeypatch.setenv(name, value)
  expected = dataflow_args()
  assert container['args'][-len(expected):] == expected


def test_every_artifact_type_of_the_spec_imports_by_its_schema_title(compiled_images):
  """TFX's container entrypoint turns each artifact's schema title back into a
  class by importing it; a custom type named like a class nobody can import
  compiles fine and fails in the container (the rehearsal found
  `coco.ImageDeadLetter`)."""
  from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entry
  from tfx.types import artifact as tfx_artifact
  from tfx.utils import import_utils
  spec = pipeline_spec_pb2.PipelineSpec()
  json_format.ParseDict(compiled_images, spec)
  titles = {}
  for component in spec.components.values():
    for definitions in (component.input_definitions.artifacts,
                        component.output_definitions.artifacts):
      for definition in definitions.values():
        path = entry._retrieve_class_path(definition.artifact_type)  # pylint: disable=protected-access
        titles[path] = import_utils.import_class_by_path(path)
  assert all(issubclass(cls, tfx_artifact.Artifact) for cls in titles.values())
  assert titles['pipeline.ImageDeadLetter'].__name__ == 'ImageDeadLetter'


def test_functions_named_by_the_spec_import_and_are_callable(compiled):
  names = referenced_functions(spec_dict(compiled))
  assert names[2:] == ['pipeline.components.csv_example_gen.Executor',
                       'pipeline.components.evaluator.Executor',
                       'pipeline.components.transform_executor.Executor']
  for dotted in names:
    module_name, _, attr = dotted.rpartition('.')
    assert callable(getattr(importlib.import_module(module_name), attr)), dotted


# ---------------------------------------------------------------- submitting


class Recorder:
  """Fakes for kfp.Client / aiplatform.PipelineJob that record every call."""

  def __init__(self):
    self.calls = []

  def kfp_client(self):
    recorder = self

    class FakeClient:
      def __init__(self, **kwargs):
        recorder.calls.append(('Client', kwargs))

      def create_run_from_pipeline_package(self, **kwargs):
        recorder.calls.append(('create_run_from_pipeline_package', kwargs))
        recorder.package_text = open(kwargs['pipeline_file']).read()
        return type('Result', (), {'run_id': 'run-123'})()
    return FakeClient

  def pipeline_job(self):
    recorder = self

    class FakePipelineJob:
      resource_name = 'projects/1/locations/x/pipelineJobs/job'

      def __init__(self, **kwargs):
        recorder.calls.append(('PipelineJob', kwargs))
        recorder.package_text = open(kwargs['template_path']).read()

      def submit(self, **kwargs):
        recorder.calls.append(('submit', kwargs))
    return FakePipelineJob


def assert_binds(function, kwargs):
  """The recorded keywords fit the real API's signature (names and required ones)."""
  inspect.signature(function).bind(None, **kwargs)


@pytest.fixture
def gcp_env(monkeypatch):
  for name in STRAY_ENV:
    monkeypatch.delenv(name, raising=False)
  for name, value in GCP_ENV.items():
    monkeypatch.setenv(name, value)


@pytest.fixture
def fakes(monkeypatch):
  import kfp
  from google.cloud import aiplatform
  recorder = Recorder()
  recorder.real = {'Client': kfp.Client, 'PipelineJob': aiplatform.PipelineJob}
  monkeypatch.setattr(kfp, 'Client', recorder.kfp_client())
  monkeypatch.setattr(aiplatform, 'PipelineJob', recorder.pipeline_job())
  return recorder


def test_submit_needs_exactly_one_target(capsys):
  for argv in ([], ['--vertex', '--kfp-host', 'http://h']):
    with pytest.raises(SystemExit) as exit_info:
      submit.parse_args(argv)
    assert exit_info.value.code == 2
  with pytest.raises(SystemExit):
    submit.parse_args(['--vertex', '--package', 'p.yaml'])
  assert 'needs a .json file' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    submit.parse_args(['--kfp-host', 'http://h', '--package', 'p.json'])
  with pytest.raises(SystemExit):
    submit.parse_args(['--vertex', '--experiment', 'e'])


def test_submit_names_missing_settings_before_compiling(monkeypatch, capsys, fakes):
  for name in (*STRAY_ENV, *GCP_ENV):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(submit, 'compile_package',
                      lambda *a: pytest.fail('compiled despite missing settings'))
  assert submit.main(['--vertex']) == 2
  err = capsys.readouterr().err
  assert 'COCO_GCP_PROJECT' in err and 'COCO_GCS_ROOT' in err
  monkeypatch.setenv('COCO_GCP_PROJECT', PROJECT)
  monkeypatch.setenv('COCO_GCS_ROOT', 'bucket/no-scheme')
  assert submit.main(['--kfp-host', 'http://h']) == 2
  assert 'gs://' in capsys.readouterr().err
  monkeypatch.setenv('COCO_GCS_ROOT', GCS_ROOT)
  assert submit.main(['--vertex', '--run-name', 'Bad_Name']) == 2
  assert 'job id' in capsys.readouterr().err
  assert fakes.calls == []


def test_submit_vertex_creates_and_submits_a_pipeline_job(gcp_env, fakes, tmp_path, capsys):
  package = tmp_path / 'out' / 'job.json'
  assert submit.main(['--vertex', '--package', str(package), '--run-name', 'coco-1',
                      '--service-account', 'sa@p.iam.gserviceaccount.com']) == 0
  (init_name, init), (submit_name, submitted) = fakes.calls
  assert (init_name, submit_name) == ('PipelineJob', 'submit')
  assert init == dict(display_name=settings.PIPELINE_NAME, template_path=str(package),
                      job_id='coco-1', pipeline_root=f'{GCS_ROOT}/pipeline_root',
                      project=PROJECT, location=REGION)
  assert submitted == {'service_account': 'sa@p.iam.gserviceaccount.com'}
  assert_binds(fakes.real['PipelineJob'].__init__, init)
  assert_binds(fakes.real['PipelineJob'].submit, submitted)
  assert json.loads(fakes.package_text)['runtimeConfig']['gcsOutputDirectory'] == init['pipeline_root']
  assert package.is_file()  # --package keeps it
  assert 'submitted Vertex AI pipeline job projects/1/' in capsys.readouterr().out


def test_submit_kfp_sends_the_yaml_with_the_pipeline_root(gcp_env, fakes, capsys):
  assert submit.main(['--kfp-host', 'http://kfp.local:8080', '--experiment', 'exp']) == 0
  (client_name, client), (run_name, run) = fakes.calls
  assert (client_name, client) == ('Client', {'host': 'http://kfp.local:8080'})
  assert run_name == 'create_run_from_pipeline_package'
  assert run['arguments'] == {} and run['pipeline_root'] == f'{GCS_ROOT}/pipeline_root'
  assert run['experiment_name'] == 'exp'
  assert re.fullmatch(rf'{settings.PIPELINE_NAME}-\d{{8}}-\d{{6}}', run['run_name'])
  assert run['pipeline_file'].endswith('pipeline.yaml')
  assert not os.path.exists(run['pipeline_file'])  # the temporary package is gone
  assert_binds(fakes.real['Client'].__init__, client)
  assert_binds(fakes.real['Client'].create_run_from_pipeline_package, run)
  spec = pipeline_spec_pb2.PipelineSpec()
  json_format.ParseDict(yaml.safe_load(fakes.package_text), spec)
  assert set(spec.root.dag.tasks) == set(EDGES)
  assert 'submitted KFP run run-123 to http://kfp.local:8080' in capsys.readouterr().out


def test_submit_dry_run_compiles_and_calls_nothing(gcp_env, fakes, capsys):
  assert submit.main(['--vertex', '--dry-run']) == 0
  assert fakes.calls == []
  out = capsys.readouterr().out
  assert 'dry run, nothing submitted' in out and 'aiplatform.PipelineJob(' in out


# ---------------------------------------------------------------- Dataflow args


def test_dataflow_args_cover_workers_and_both_ways_of_shipping_code(gcp_env, monkeypatch):
  args = dataflow_args()
  for prefix in ('--runner=DataflowRunner', '--project=', '--region=', '--temp_location=gs://',
                 '--staging_location=gs://', '--machine_type=', '--max_num_workers=',
                 '--disk_size_gb=', '--sdk_container_image='):
    assert any(a.startswith(prefix) for a in args), prefix
  assert not any(a.startswith('--setup_file') for a in args)
  monkeypatch.setenv('COCO_DATAFLOW_MACHINE_TYPE', 'n2-standard-8')
  monkeypatch.setenv('COCO_DATAFLOW_MAX_WORKERS', '3')
  monkeypatch.setenv('COCO_DATAFLOW_DISK_GB', '100')
  monkeypatch.setenv('COCO_DATAFLOW_SHIP', 'setup_file')
  monkeypatch.setenv('COCO_DATAFLOW_REQUIREMENTS', '/src/requirements.lock')
  args = dataflow_args()
  assert {'--machine_type=n2-standard-8', '--max_num_workers=3', '--disk_size_gb=100',
          f'--setup_file={settings.SETUP_FILE}', '--requirements_file=/src/requirements.lock'} <= set(args)
  assert not any(a.startswith('--sdk_container_image') for a in args)
  monkeypatch.setenv('COCO_DATAFLOW_SHIP', 'wheel')
  with pytest.raises(ValueError, match='COCO_DATAFLOW_SHIP'):
    dataflow_args()


def test_beam_args_inside_the_image_never_name_this_checkout(gcp_env, monkeypatch):
  """Executors on Kubeflow/Vertex run in the component image, where no checkout
  exists: the local rehearsal found `--setup_file=<checkout>/setup.py` in the
  spec compiled with COCO_KFP_BEAM_MODE=in_memory."""
  current = settings.Settings.from_env()
  for mode in ('in_memory', 'multi_processing', 'dataflow'):
    args = beam_args.beam_pipeline_args(current.beam, current.gcp, mode, in_image=True)
    assert f'--sdk_container_image={IMAGE}' in args, mode
    assert not [a for a in args if settings.PROJECT_DIR in a], (mode, args)
  local = beam_args.beam_pipeline_args(current.beam, current.gcp, 'in_memory')
  assert f'--setup_file={settings.SETUP_FILE}' in local
  monkeypatch.setenv('COCO_DATAFLOW_SHIP', 'setup_file')
  current = settings.Settings.from_env()
  with pytest.raises(settings.SettingsError, match='COCO_DATAFLOW_SHIP=setup_file'):
    beam_args.beam_pipeline_args(current.beam, current.gcp, 'dataflow', in_image=True)
  assert f'--setup_file={settings.SETUP_FILE}' in beam_args.beam_pipeline_args(
      current.beam, current.gcp, 'dataflow')


def test_compiling_with_setup_file_shipping_is_refused_by_name(tmp_path):
  env = guarded_env(tmp_path, COCO_KFP_OUTPUT_DIR=str(tmp_path / 'out'),
                    COCO_DATAFLOW_SHIP='setup_file')
  ran = subprocess.run([PYTHON, RUNNER], env=env, cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=300)
  assert ran.returncode == 2, ran.stderr[-3000:]
  assert ran.stderr.strip().splitlines()[-1].startswith(
      'error: COCO_DATAFLOW_SHIP=setup_file ships the setup.py of this checkout')
  assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- wheel and tfx CLI


@pytest.mark.slow      # ~9 s: a wheel build, a venv and an install
def test_wheel_installs_pipeline_and_modules_outside_the_checkout(compiled, tmp_path):
  """Builds the wheel, installs it alone into a throwaway venv that sees the dev
  venv's TF/TFX, and imports what the compiled spec names from there."""
  # Build from a copy of exactly what the Dockerfile copies: proves that set
  # suffices, and keeps setuptools' build/ and *.egg-info out of the checkout.
  src = tmp_path / 'src'
  image_env.copy_context(str(src))
  wheels = tmp_path / 'wheels'
  built = subprocess.run([PYTHON, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                          '-w', str(wheels), str(src)],
                         capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert built.returncode == 0, built.stderr[-3000:]
  (wheel,) = wheels.glob('coco_captions_tfx-*.whl')
  import zipfile
  names = zipfile.ZipFile(wheel).namelist()
  assert {'pipeline/tools/submit.py', 'modules/trainer.py', 'modules/preprocessing.py'} <= set(names)
  assert not [n for n in names if n.startswith('tests/')]

  venv = tmp_path / 'tmpvenv'
  subprocess.run([PYTHON, '-m', 'venv', '--system-site-packages', str(venv)],
                 check=True, timeout=300)
  vpy = str(venv / 'bin' / 'python')
  # A venv made from a venv's python inherits the *base* interpreter's site
  # (pyenv's), not the dev venv's, so point it at the dev venv's packages with
  # a plain path line: appended after tmpvenv's own site-packages, and without
  # running the dev venv's .pth files (so its editable finder stays out).
  site_dir = subprocess.run([vpy, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                            capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(site_dir, 'dev_venv.pth'), 'w') as f:
    f.write(sysconfig.get_paths()['purelib'] + '\n')
  installed = subprocess.run([vpy, '-m', 'pip', 'install', '--no-deps', '--no-index', str(wheel)],
                             capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert installed.returncode == 0, installed.stderr[-3000:]

  functions = referenced_functions(spec_dict(compiled))
  probe = textwrap.dedent(f'''
      import importlib, json, pipeline, modules
      out = {{'pipeline': pipeline.__file__, 'modules': modules.__file__}}
      for dotted in {functions!r}:
        module, _, attr = dotted.rpartition('.')
        out[dotted] = callable(getattr(importlib.import_module(module), attr))
      print(json.dumps(out))
  ''')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  ran = subprocess.run([vpy, '-c', probe], capture_output=True, text=True, timeout=300,
                       cwd=str(tmp_path), env=env)
  assert ran.returncode == 0, ran.stderr[-3000:]
  found = json.loads(ran.stdout.strip().splitlines()[-1])
  for package in ('pipeline', 'modules'):
    assert found[package] == os.path.join(site_dir, package, '__init__.py'), found
    assert not found[package].startswith(settings.PROJECT_DIR), found
  assert all(found[f] is True for f in functions), found


def tfx_cli(args, env, cwd):
  return subprocess.run([os.path.join(VENV_BIN, 'tfx'), *args], capture_output=True, text=True,
                        env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_tfx_cli_vertex_create_update_compile_offline(tmp_path):
  """`--engine vertex` checks for kfp with the `pip` first on PATH, so the venv's
  bin must come first (as after `source .venv/bin/activate`)."""
  home = tmp_path / 'vertex_home'
  env = guarded_env(tmp_path, VERTEX_HOME=str(home),
                    PATH=VENV_BIN + os.pathsep + os.environ.get('PATH', ''))
  base = ['--engine', 'vertex', '--pipeline_path', RUNNER]

  created = tfx_cli(['pipeline', 'create', *base], env, settings.PROJECT_DIR)
  assert created.returncode == 0, created.stdout + created.stderr[-3000:]
  assert f'Pipeline "{settings.PIPELINE_NAME}" created successfully' in created.stdout
  job_path = home / settings.PIPELINE_NAME / 'pipeline.json'
  job = pipeline_spec_pb2.PipelineJob()
  json_format.ParseDict(json.loads(job_path.read_text()), job)
  assert job.runtime_config.gcs_output_directory == f'{GCS_ROOT}/pipeline_root'

  updated = tfx_cli(['pipeline', 'update', *base], env, settings.PROJECT_DIR)
  assert updated.returncode == 0, updated.stdout + updated.stderr[-3000:]
  assert f'Pipeline "{settings.PIPELINE_NAME}" updated successfully' in updated.stdout

  out = tmp_path / 'compiled'
  compiled = tfx_cli(['pipeline', 'compile', *base], dict(env, COCO_KFP_OUTPUT_DIR=str(out)),
                     str(tmp_path))
  assert compiled.returncode == 0, compiled.stdout + compiled.stderr[-3000:]
  assert f'Pipeline {settings.PIPELINE_NAME} compiled successfully' in compiled.stdout
  assert (out / 'pipeline.json').is_file()
  assert not (tmp_path / 'network.log').exists(), (tmp_path / 'network.log').read_text()


@pytest.mark.slow
def test_tfx_cli_kubeflow_engine_is_broken_in_tfx_1_16(tmp_path):
  """Documents the upstream state: the KFP v1 runner is gone, so the kubeflow
  handler fails on import. If this starts passing, update docs/gcp.md."""
  env = clean_env(KUBEFLOW_HOME=str(tmp_path), PATH=VENV_BIN + os.pathsep + os.environ['PATH'])
  result = tfx_cli(['pipeline', 'compile', '--engine', 'kubeflow', '--pipeline_path', RUNNER],
                   env, str(tmp_path))
  assert result.returncode != 0
  assert "cannot import name 'kubeflow_dag_runner'" in result.stderr
