"""The compiled Kubeflow/Vertex spec, executed here task by task.

Fast: the spec reader (kfp_spec.py) and the task runner (rehearsal.py) on a
toy spec whose containers are small Python programs, and the image-like
environment against the Dockerfile (image_env.py). Slow: `python -m
pipeline.tools.rehearse` twice on the test sample, compared with a
LocalDagRunner run of the same settings, then the Beam stages' Dataflow jobs
built offline with the network disabled.
"""

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import textwrap

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

from pipeline import settings
from pipeline.orchestration import image_env, kfp_spec, rehearsal

MODEL = {'instanceSchema': 'title: tfx.Model\ntype: object\n'}
RESULT = {'instanceSchema': 'title: tfx.ModelEvaluation\ntype: object\n'}

# A container that checks its ExecutorInput and reports metadata for its
# outputs, as TFX's entrypoint does (argv: the `{{$}}` JSON, then more args).
MAKE = textwrap.dedent('''
    import json, os, sys
    given = json.loads(sys.argv[1])
    assert given['inputs']['parameters']['steps'] == {'intValue': '7'}, given['inputs']
    assert given['inputs']['parameterValues']['steps'] == 7
    assert sys.argv[2] == '7' and sys.argv[3] == 'm'
    model = given['outputs']['artifacts']['model']['artifacts'][0]
    open(os.path.join(model['uri'], 'weights'), 'w').write('w')
    out = {'artifacts': {'model': {'artifacts': [
        {'name': model['name'], 'uri': model['uri'], 'metadata': {'good': 1, 'steps': 7}}]}}}
    open(given['outputs']['outputFile'], 'w').write(json.dumps(out))
''')
USE = textwrap.dedent('''
    import json, sys
    given = json.loads(sys.argv[1])
    model = given['inputs']['artifacts']['model']['artifacts'][0]
    assert model['metadata'] == {'good': 1.0, 'steps': 7.0}, model
    assert sys.argv[2] == model['uri']
    result = given['outputs']['artifacts']['result']['artifacts'][0]
    out = {'artifacts': {'result': {'artifacts': [
        {'name': result['name'], 'metadata': {'of': model['name']}}]}}}
    open(given['outputs']['outputFile'], 'w').write(json.dumps(out))
''')


def toy_spec(make=MAKE, use=USE) -> dict:
  """Make -> Use, and Find: a resolver of the newest good model of earlier jobs."""
  return {
      'pipelineInfo': {'name': 'toy'}, 'schemaVersion': '2.0.0', 'sdkVersion': 'test',
      'components': {
          'Make': {'executorLabel': 'Make_executor',
                   'inputDefinitions': {'parameters': {'steps': {'type': 'INT'},
                                                       'name': {'type': 'STRING'}}},
                   'outputDefinitions': {'artifacts': {'model': {'artifactType': MODEL}}}},
          'Use': {'executorLabel': 'Use_executor',
                  'inputDefinitions': {'artifacts': {'model': {'artifactType': MODEL}}},
                  'outputDefinitions': {'artifacts': {'result': {'artifactType': RESULT}}}},
          'Find': {'executorLabel': 'Find_executor',
                   'outputDefinitions': {'artifacts': {'model': {'artifactType': MODEL}}}},
      },
      'deploymentSpec': {'executors': {
          'Make_executor': {'container': {
              'image': 'toy', 'command': ['python', '-c', make],
              'args': ['{{$}}', "{{$.inputs.parameters['steps']}}",
                       "{{$.inputs.parameters['name']}}"]}},
          'Use_executor': {'container': {
              'image': 'toy', 'command': ['python', '-c', use],
              'args': ['{{$}}', "{{$.inputs.artifacts['model'].uri}}"]}},
          'Find_executor': {'resolver': {'outputArtifactQueries': {'model': {
              'filter': 'schema_title="tfx.Model" AND state=LIVE AND '
                        'metadata.good.number_value=1'}}}},
      }},
      'root': {'dag': {'tasks': {
          'Make': {'taskInfo': {'name': 'Make'}, 'componentRef': {'name': 'Make'},
                   'inputs': {'parameters': {
                       'steps': {'runtimeValue': {'constantValue': {'intValue': '7'}}},
                       'name': {'runtimeValue': {'constantValue': {'stringValue': 'm'}}}}}},
          'Use': {'taskInfo': {'name': 'Use'}, 'componentRef': {'name': 'Use'},
                  'dependentTasks': ['Make'],
                  'inputs': {'artifacts': {'model': {'taskOutputArtifact': {
                      'producerTask': 'Make', 'outputArtifactKey': 'model'}}}}},
          'Find': {'taskInfo': {'name': 'Find'}, 'componentRef': {'name': 'Find'}},
      }}},
  }


def write_spec(tmp_path, raw: dict) -> str:
  path = tmp_path / 'pipeline.json'
  path.write_text(json.dumps({'displayName': 'toy', 'pipelineSpec': raw}))
  return str(path)


def toy_env() -> dict:
  return {'PATH': os.path.dirname(sys.executable) + os.pathsep + '/usr/bin:/bin'}


# ---------------------------------------------------------------- the spec reader


def test_task_order_waits_for_dependencies_and_producers(tmp_path):
  spec = kfp_spec.load(write_spec(tmp_path, toy_spec()))
  assert kfp_spec.task_order(spec) == ['Find', 'Make', 'Use']
  raw = toy_spec()
  raw['root']['dag']['tasks']['Make']['dependentTasks'] = ['Use']
  with pytest.raises(kfp_spec.SpecError, match='wait for each other'):
    kfp_spec.task_order(kfp_spec.load(write_spec(tmp_path, raw)))


def test_executor_input_has_parameters_both_ways_artifacts_and_the_output_file(tmp_path):
  spec = kfp_spec.load(write_spec(tmp_path, toy_spec()))
  model = pb.RuntimeArtifact(name='a/1', uri='/m')
  given = kfp_spec.executor_input(spec, 'Make', {}, {'model': model}, '/out.json')
  assert given.inputs.parameters['steps'] == pb.Value(int_value=7)
  assert given.inputs.parameters['name'] == pb.Value(string_value='m')
  assert given.inputs.parameter_values['steps'].number_value == 7
  assert given.outputs.artifacts['model'].artifacts[0].name == 'a/1'
  assert given.outputs.output_file == '/out.json'
  # {{$}} is the whole ExecutorInput as JSON: the entrypoint parses it back.
  parsed = pb.ExecutorInput()
  json_format.Parse(kfp_spec.fill('{{$}}', given), parsed)
  assert parsed == given
  assert kfp_spec.fill("--n={{$.inputs.parameters['steps']}}", given) == '--n=7'
  assert kfp_spec.fill("{{$.outputs.artifacts['model'].uri}}", given) == '/m'
  assert kfp_spec.fill('{{$.outputs.output_file}}', given) == '/out.json'
  with pytest.raises(kfp_spec.SpecError, match='unknown placeholder'):
    kfp_spec.fill('{{$.inputs.nonsense}}', given)


def test_filters_take_the_newest_live_match_of_the_pipelines_context():
  def artifact(name, title, blessed, time, context='p', state='LIVE'):
    return {'name': name, 'schema_title': title, 'uri': '/' + name, 'state': state,
            'metadata': {'blessed': blessed}, 'create_time': time, 'context': context}
  record = [artifact('b1', 'tfx.ModelBlessing', 1.0, 1), artifact('b2', 'tfx.ModelBlessing', 0.0, 2),
            artifact('b3', 'tfx.ModelBlessing', 1.0, 3, context='other'),
            artifact('b4', 'tfx.ModelBlessing', 1.0, 4, state='PENDING'),
            artifact('m1', 'tfx.Model', None, 0)]
  blessed = 'schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1'
  assert [a['name'] for a in kfp_spec.query(blessed, 0, record, 'p')] == ['b1']
  assert kfp_spec.query(blessed, 0, record, 'q') == []
  assert [a['name'] for a in kfp_spec.query('in_context("other") AND ' + blessed, 0, record,
                                            'p')] == ['b3']
  assert [a['name'] for a in kfp_spec.query('name="m1"', 5, record, 'p')] == ['m1']
  with pytest.raises(kfp_spec.SpecError, match='unknown field'):
    kfp_spec.parse_filter('display_name="x"')
  with pytest.raises(kfp_spec.SpecError, match='cannot read'):
    kfp_spec.parse_filter('schema_title="a" OR state=LIVE')


# ---------------------------------------------------------------- the runner


def test_a_rehearsed_job_passes_metadata_downstream_and_the_next_resolves_it(tmp_path):
  spec = write_spec(tmp_path, toy_spec())
  root = str(tmp_path / 'root')
  lines = []
  first = rehearsal.Rehearsal(spec, root, toy_env(), str(tmp_path), lines.append, 'job-1').run()
  assert [r.task for r in first] == ['Find', 'Make', 'Use']
  assert first[0].outputs == {'model': []}          # nothing blessed before the first job
  made = first[1].outputs['model'][0]
  assert made['metadata'] == {'good': 1.0, 'steps': 7.0} and made['state'] == 'LIVE'
  assert made['uri'] == os.path.join(root, 'job-1', 'Make', 'model')
  assert os.path.exists(os.path.join(made['uri'], 'weights'))
  assert first[2].outputs['result'][0]['metadata'] == {'of': made['name']}
  assert len(lines) == 3 and lines[1].startswith('[2/3] Make')

  second = rehearsal.Rehearsal(spec, root, toy_env(), str(tmp_path), lines.append, 'job-2').run()
  assert [a['name'] for a in second[0].outputs['model']] == [made['name']]
  record = rehearsal.Record(os.path.join(root, rehearsal.RECORD_FILE)).data
  assert [(j['job_id'], j['status']) for j in record['jobs']] == [('job-1', 'SUCCEEDED'),
                                                                  ('job-2', 'SUCCEEDED')]
  # What the Make task received is kept next to its outputs.
  given = pb.ExecutorInput()
  with open(os.path.join(root, 'job-2', 'Make', rehearsal.EXECUTOR_INPUT_FILE)) as f:
    json_format.Parse(f.read(), given)
  assert given.outputs.output_file.endswith('job-2/Make/executor_output.json')


def test_a_failing_task_names_itself_and_its_outputs_stay_unresolvable(tmp_path):
  spec = write_spec(tmp_path, toy_spec(make='import sys; print("boom"); sys.exit(3)'))
  root = str(tmp_path / 'root')
  with pytest.raises(rehearsal.TaskFailed) as failed:
    rehearsal.Rehearsal(spec, root, toy_env(), str(tmp_path), lambda _: None, 'job-1').run()
  message = str(failed.value)
  assert message.startswith('task Make: `python -c') and 'exited with 3' in message
  assert 'boom' in message and os.path.join(root, 'job-1', 'Make', 'task.log') in message
  record = rehearsal.Record(os.path.join(root, rehearsal.RECORD_FILE))
  assert record.data['jobs'][-1]['status'] == 'FAILED'
  assert record.live() == []


# ---------------------------------------------------------------- the image-like environment


def test_the_dockerfile_installs_with_the_script_the_rehearsal_runs():
  runs = [args for op, args in image_env.dockerfile_instructions() if op == 'RUN']
  assert any(f'sh /tmp/coco-captions-tfx/{image_env.INSTALL_SCRIPT} python '
             '/tmp/coco-captions-tfx' in run for run in runs), runs
  sources = image_env.copied_sources()
  assert {'requirements.lock', 'setup.py', 'LICENSE', image_env.INSTALL_SCRIPT, 'pipeline',
          'modules'} <= set(sources)
  with open(os.path.join(settings.PROJECT_DIR, '.dockerignore')) as f:
    lines = [l.strip() for l in f if l.strip() and not l.startswith('#')]
  ignored = {l.rstrip('/') for l in lines if not l.startswith('!')}
  for source in sources:
    assert os.path.exists(os.path.join(settings.PROJECT_DIR, source)), source
    top = source.split('/')[0]
    excluded = source in ignored or top in ignored or f'{top}/*' in ignored
    assert not excluded or f'!{source}' in lines, f'{source} is copied but .dockerignore excludes it'
  assert {'.venv', '.venv-image', 'tfx_pipeline_output', 'data', 'tests', '.git'} <= ignored
  with open(os.path.join(settings.PROJECT_DIR, image_env.INSTALL_SCRIPT)) as f:
    script = f.read()
  assert '-r "$src/requirements.lock"' in script and '--no-deps --force-reinstall' in script


def locked_version(package: str) -> str:
  with open(os.path.join(settings.PROJECT_DIR, image_env.LOCK_FILE)) as f:
    for line in f:
      if line.split('==')[0].strip().lower() == package:
        return line.split('==')[1].strip()
  raise AssertionError(f'{package} is not pinned in requirements.lock')


def test_the_image_has_the_venvs_python_the_locks_beam_and_the_boot_entrypoint():
  instructions = image_env.dockerfile_instructions()
  froms = [args for op, args in instructions if op == 'FROM']
  # The image venv is made from the dev venv's base Python (pyenv's 3.10.13).
  assert froms == [f'python:{platform.python_version()}-bookworm']
  major_minor = '.'.join(platform.python_version_tuple()[:2])
  beam = f'--from=apache/beam_python{major_minor}_sdk:{locked_version("apache-beam")}'
  copies = [args.split() for op, args in instructions if op == 'COPY']
  assert [beam, '/opt/apache/beam', '/opt/apache/beam'] in copies
  assert ('ENTRYPOINT', '["/opt/apache/beam/boot"]') in instructions
  assert image_env.dockerfile_env() == {'TF_USE_LEGACY_KERAS': '1'}


# A stand-in for tools/image-install.sh: counts its runs in the venv, and
# fails while the sources hold pipeline/broken.
FAKE_INSTALL = ('echo "$2" >> "$(dirname "$1")/../installs"\n'
                '[ ! -e "$2/pipeline/broken" ] || exit 3\n')


def fake_project(root) -> str:
  """The files the Dockerfile copies, with an install script that only counts."""
  root.mkdir()
  shutil.copy(image_env.DOCKERFILE, root / 'Dockerfile')
  for name in ('requirements.lock', 'setup.py', 'LICENSE', 'pipeline/a.py', 'modules/b.py'):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(f'# {name}\n')
  (root / 'tools').mkdir()
  (root / image_env.INSTALL_SCRIPT).write_text(FAKE_INSTALL)
  return str(root)


def installs(venv: str) -> int:
  path = os.path.join(venv, 'installs')
  return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def test_the_cached_image_venv_is_keyed_by_everything_that_makes_it(tmp_path):
  """Changed dependencies (lock, install script, Dockerfile) give another
  venv; changed sources (pipeline/, modules/, ...) rerun the install script in
  the same one; nothing changed reuses it without running anything; a failed
  install is never taken for a made one."""
  project = fake_project(tmp_path / 'project')
  cache, log = str(tmp_path / 'cache'), str(tmp_path / 'log')
  key, sources = image_env.dependencies_key(project), image_env.sources_key(project)
  venv = image_env.default_venv(cache, project)
  assert venv == os.path.join(cache, image_env.VENV_PREFIX + key)
  image_env.build(venv, log, project_dir=project)
  assert installs(venv) == 1
  image_env.build(venv, log, project_dir=project)
  assert installs(venv) == 1                      # the same inputs: used as it is
  (tmp_path / 'project' / 'modules' / '__pycache__').mkdir()
  (tmp_path / 'project' / 'modules' / '__pycache__' / 'b.cpython-310.pyc').write_text('x')
  assert image_env.sources_key(project) == sources
  (tmp_path / 'project' / 'modules' / 'b.py').write_text('# changed\n')
  assert image_env.sources_key(project) != sources
  assert image_env.dependencies_key(project) == key
  image_env.build(venv, log, project_dir=project)
  assert installs(venv) == 2                      # new sources: the script again, same venv

  broken = tmp_path / 'project' / 'pipeline' / 'broken'
  broken.write_text('')
  for attempt in (3, 4):                          # a failed install is tried again each time
    with pytest.raises(image_env.ImageEnvError, match='failed with 3'):
      image_env.build(venv, log, project_dir=project)
    assert installs(venv) == attempt
  broken.unlink()                                 # back to the sources of install 2, but the
  image_env.build(venv, log, project_dir=project)  # failed runs may have changed its wheel
  assert installs(venv) == 5

  for name in ('Dockerfile', image_env.INSTALL_SCRIPT, 'requirements.lock'):
    with open(os.path.join(project, name), 'a') as f:
      f.write('# changed\n')
    assert image_env.dependencies_key(project) != key, name
    key = image_env.dependencies_key(project)
  assert image_env.dependencies_key(project, sys.executable) == key
  newer = image_env.default_venv(cache, project)
  assert newer != venv
  image_env.build(newer, log, project_dir=project)
  assert installs(newer) == 1
  assert not os.path.exists(venv)                 # the stale one is pruned
  assert sorted(os.listdir(cache)) == sorted([os.path.basename(newer),
                                              os.path.basename(newer) + '.lock'])


def test_tasks_get_the_images_environment_and_nothing_of_the_callers(monkeypatch):
  monkeypatch.setenv('COCO_TRAIN_STEPS', '3')
  monkeypatch.setenv('PYTHONPATH', settings.PROJECT_DIR)
  env = image_env.task_env('/venv/bin', {'EXTRA': '1'})
  assert env['PATH'].split(os.pathsep)[0] == '/venv/bin'
  assert env['TF_USE_LEGACY_KERAS'] == '1' and env['EXTRA'] == '1'
  assert 'PYTHONPATH' not in env and not [k for k in env if k.startswith('COCO_')]


def test_the_command_names_missing_settings_before_doing_anything(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith('COCO_')}
  env.update(COCO_OUTPUT_DIR=str(tmp_path), COCO_TRAIN_STEPS='many')
  ran = subprocess.run([sys.executable, '-m', 'pipeline.tools.rehearse'], env=env,
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
  assert ran.returncode == 2 and "COCO_TRAIN_STEPS='many' is not an integer" in ran.stderr
  env.pop('COCO_TRAIN_STEPS')
  ran = subprocess.run([sys.executable, '-m', 'pipeline.tools.rehearse', '--dataflow'], env=env,
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
  assert ran.returncode == 2, ran.stderr[-2000:]
  assert 'COCO_GCP_PROJECT' in ran.stderr and 'COCO_GCS_ROOT' in ran.stderr
  assert os.listdir(tmp_path) == []     # nothing compiled, no environment made


# ---------------------------------------------------------------- the real pipeline (slow)

from tests.conftest import DATA_ROOT, E2E_TRAIN_STEPS  # noqa: E402
from tests.test_kubeflow import GCP_ENV, GCS_ROOT, IMAGE, NETWORK_GUARD, PROJECT, REGION  # noqa: E402

# The sample's model cannot beat a trigram fitted on the same 850 captions
# (tests/test_e2e.py); a looser first-run gate lets both runs bless and push.
MAX_RATIO = '3'
BEAM_STAGES = ['CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator']


class Rehearsed:
  """A LocalDagRunner run and two rehearsals of the compiled spec, same settings."""

  def __init__(self, tmp):
    base = {k: v for k, v in os.environ.items() if not k.startswith('COCO_')}
    base.update(COCO_DATA_ROOT=DATA_ROOT, COCO_TRAIN_STEPS=str(E2E_TRAIN_STEPS),
                COCO_STEPS_PER_EPOCH='30', COCO_BLESS_MAX_RATIO=MAX_RATIO)
    self.local_env = dict(base, COCO_OUTPUT_DIR=str(tmp / 'local'))
    self.env = dict(base, COCO_OUTPUT_DIR=str(tmp / 'rehearsal'))
    self.settings = settings.Settings.from_env(self.env)
    # The local run overlaps the first rehearsal's making of the image venv
    # (~3.5 min on a fresh clone); they share nothing but the CPU.
    runner = os.path.join(settings.PROJECT_DIR, 'local_runner.py')
    with open(tmp / 'local.out', 'w+') as out, open(tmp / 'local.err', 'w+') as err:
      local = subprocess.Popen([sys.executable, runner], env=self.local_env, stdout=out,
                               stderr=err, cwd=settings.PROJECT_DIR)
      self.runs = [subprocess.run([sys.executable, '-m', 'pipeline.tools.rehearse'],
                                  env=self.env, cwd=settings.PROJECT_DIR, capture_output=True,
                                  text=True, timeout=1800) for _ in range(2)]
      local.wait(timeout=900)
      out.seek(0)
      err.seek(0)
      self.local = subprocess.CompletedProcess(local.args, local.returncode, out.read(),
                                               err.read())
    self.root = os.path.join(self.settings.run.rehearsal_dir, 'pipeline_root')

  def check(self):
    assert self.local.returncode == 0, self.local.stdout + self.local.stderr[-3000:]
    for run in self.runs:
      assert run.returncode == 0, run.stdout + run.stderr[-3000:]

  def record(self) -> dict:
    return rehearsal.Record(os.path.join(self.root, rehearsal.RECORD_FILE)).data

  def job(self, number: int) -> str:
    return self.record()['jobs'][number]['job_id']

  def output(self, number: int, task: str, key: str) -> dict:
    job = self.job(number)
    (found,) = [a for a in self.record()['artifacts']
                if (a['job'], a['task'], a['key']) == (job, task, key)]
    return found

  def local_output(self, component: str, key: str) -> str:
    from pipeline.artifacts import metadata  # pylint: disable=g-import-not-at-top
    return metadata.load_run(settings.Settings.from_env(self.local_env).run.metadata_file).output(
        component, key)


@pytest.fixture(scope='module')
def rehearsed(tmp_path_factory):
  run = Rehearsed(tmp_path_factory.mktemp('rehearsal'))
  run.check()
  return run


@pytest.mark.slow
def test_every_task_of_the_spec_runs_its_command_in_the_image_env(rehearsed):
  spec = kfp_spec.load(os.path.join(rehearsed.settings.run.rehearsal_dir, 'pipeline.json'))
  order = kfp_spec.task_order(spec)
  venv = image_env.venv_of(rehearsed.settings.run)
  for number, run in enumerate(rehearsed.runs):
    out = run.stdout
    assert f'tasks import pipeline from {venv}/lib/python3.10/site-packages' in out
    for position, task in enumerate(order, 1):
      assert f'[{position}/{len(order)}] {task} ' in out, (task, out)
    job = rehearsed.record()['jobs'][number]
    assert job['status'] == 'SUCCEEDED' and [t['task'] for t in job['tasks']] == order
    for task in order:
      executor = kfp_spec.executor(spec, task)
      if executor.WhichOneof('spec') != 'container':
        continue
      container = executor.container
      # The spec's own command; the executor class named in it; no checkout path in it.
      assert not [a for a in container.args if settings.PROJECT_DIR in a], (task, container.args)
      with open(os.path.join(rehearsed.root, job['job_id'], task, rehearsal.LOG_FILE)) as f:
        log = f.read()
      assert f'$ {" ".join(container.command)} {" ".join(container.args[:2])}' in log, task
  assert 'evaluation:    blessed:' in rehearsed.runs[0].stdout
  assert 'no earlier blessed model' in rehearsed.runs[0].stdout


def split_counts(examples_uri: str) -> dict:
  from pipeline.artifacts import files  # pylint: disable=g-import-not-at-top
  return {split: sum(1 for _ in files.read_records(examples_uri, split))
          for split in ('train', 'eval')}


@pytest.mark.slow
def test_the_rehearsal_gives_what_local_dag_runner_gives(rehearsed):
  from pipeline.artifacts import files  # pylint: disable=g-import-not-at-top
  local_graph = rehearsed.local_output('Transform', 'transform_graph')
  graph = rehearsed.output(0, 'Transform', 'transform_graph')['uri']
  with open(files.vocabulary_path(local_graph), 'rb') as a, \
       open(files.vocabulary_path(graph), 'rb') as b:
    assert a.read() == b.read()
  local_counts = split_counts(rehearsed.local_output('CsvExampleGen', 'examples'))
  assert split_counts(rehearsed.output(0, 'CsvExampleGen', 'examples')['uri']) == local_counts
  assert local_counts['train'] > 0 and local_counts['eval'] > 0

  local = files.evaluation(rehearsed.local_output('Evaluator', 'evaluation'),
                           rehearsed.local_output('Evaluator', 'blessing'))
  found = files.evaluation(rehearsed.output(0, 'Evaluator', 'evaluation')['uri'],
                           rehearsed.output(0, 'Evaluator', 'blessing')['uri'])
  assert found.blessed == local.blessed is True
  local_ppl = files.metrics(rehearsed.local_output('Trainer', 'model'))['eval_perplexity']
  ppl = files.metrics(rehearsed.output(0, 'Trainer', 'model')['uri'])['eval_perplexity']
  assert ppl == pytest.approx(local_ppl, rel=0.02)

  pushed = rehearsed.output(0, 'Pusher', 'pushed_model')['metadata']
  serving = os.path.join(rehearsed.settings.run.rehearsal_dir, 'serving', 'coco-captions')
  assert pushed['pushed'] == 1.0
  assert pushed['pushed_destination'] == os.path.join(serving, pushed['pushed_version'])
  assert os.path.isfile(os.path.join(pushed['pushed_destination'], 'saved_model.pb'))
  good, shuffled = files.score_captions(pushed['pushed_destination'],
                                        ['A man riding a horse on a beach.',
                                         'beach a on horse a riding man A.'])
  assert all(math.isfinite(v) for v in good + shuffled) and good[0] < shuffled[0]


@pytest.mark.slow
def test_the_second_job_resolves_the_first_jobs_blessed_model(rehearsed):
  first_model = rehearsed.output(0, 'Trainer', 'model')
  first_blessing = rehearsed.output(0, 'Evaluator', 'blessing')
  second_model = rehearsed.output(1, 'Trainer', 'model')
  record = rehearsed.record()
  second = record['jobs'][1]['job_id']
  assert first_blessing['metadata']['blessed'] == 1.0
  assert first_blessing['metadata']['current_model_id'] == first_model['name']
  assert 'baseline_model_id' not in first_blessing['metadata']
  blessing = rehearsed.output(1, 'Evaluator', 'blessing')['metadata']
  assert blessing['current_model_id'] == second_model['name']
  assert blessing['baseline_model_id'] == first_model['name']
  given = pb.ExecutorInput()
  with open(os.path.join(rehearsed.root, second, 'Evaluator', rehearsal.EXECUTOR_INPUT_FILE)) as f:
    json_format.Parse(f.read(), given)
  (baseline,) = given.inputs.artifacts['baseline_model'].artifacts
  assert (baseline.name, baseline.uri) == (first_model['name'], first_model['uri'])
  assert '; latest blessed model ' in rehearsed.runs[1].stdout


@pytest.fixture(scope='module')
def dataflow_jobs(rehearsed, tmp_path_factory):
  """The Dataflow spec (kubeflow_runner.py's settings for GCP) and each Beam
  stage's job built offline from the first rehearsed job, sockets refused."""
  from pipeline.orchestration import dataflow_jobs as jobs  # pylint: disable=g-import-not-at-top
  from pipeline.tools import rehearse  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp('dataflow')
  gcp = settings.Settings.from_env(dict(rehearsed.env, **GCP_ENV))
  spec = rehearse.compile_spec(rehearse.dataflow_settings(gcp), str(tmp / 'spec'))
  guard = tmp / 'guard'
  guard.mkdir()
  (guard / 'sitecustomize.py').write_text(NETWORK_GUARD)
  bin_dir = os.path.join(image_env.venv_of(rehearsed.settings.run), 'bin')
  env = image_env.task_env(bin_dir, {'PYTHONPATH': str(guard),
                                     'NETWORK_GUARD_LOG': str(tmp / 'network.log')})
  built = jobs.build_jobs(spec, os.path.join(rehearsed.root, rehearsed.job(0)), str(tmp / 'jobs'),
                          env, str(tmp), report=lambda _: None)
  return {'built': built, 'network_log': tmp / 'network.log', 'gcp': gcp.gcp, 'env': env,
          'tmp': tmp}


def check_dataflow_job(task: str, path: str, gcp) -> None:
  """The job carries the settings and only transforms Runner v2 accepts."""
  from pipeline.orchestration import dataflow_jobs as jobs  # pylint: disable=g-import-not-at-top
  built = jobs.load(path)
  found = jobs.summary(built)
  assert (found['project'], found['region']) == (PROJECT, REGION), task
  assert found['temp_location'].startswith(f'{GCS_ROOT}/beam/tmp/'), task
  assert found['staging_location'].startswith(f'{GCS_ROOT}/beam/staging/'), task
  assert found['images'] == [IMAGE], task      # the workers run the component image
  assert (found['machine_type'], found['max_workers'], found['disk_size_gb']) == (
      gcp.dataflow_machine_type, gcp.dataflow_max_workers, gcp.dataflow_disk_gb), task
  assert 'use_runner_v2' in found['experiments'], task
  assert found['transforms'] > 10, task
  assert jobs.unsupported_transforms(built) == {}, task
  environments = built['pipeline']['components']['environments'].values()
  assert {e['urn'] for e in environments} == {'beam:env:docker:v1'}, task


@pytest.mark.slow
def test_beam_stages_build_their_dataflow_jobs_offline(dataflow_jobs):
  assert sorted(dataflow_jobs['built']) == sorted(BEAM_STAGES)
  for task, path in dataflow_jobs['built'].items():
    check_dataflow_job(task, path, dataflow_jobs['gcp'])
  assert not dataflow_jobs['network_log'].exists(), dataflow_jobs['network_log'].read_text()


@pytest.mark.slow
def test_image_example_gen_builds_its_dataflow_job_offline(rehearsed, dataflow_jobs):
  """With images on, ImageExampleGen is a Beam stage too: its captions are the
  rehearsed CsvExampleGen's examples, its parameters the images-on spec's."""
  from pipeline.orchestration import dataflow_jobs as jobs  # pylint: disable=g-import-not-at-top
  from pipeline.tools import rehearse  # pylint: disable=g-import-not-at-top
  tmp = dataflow_jobs['tmp']
  gcp = settings.Settings.from_env(dict(rehearsed.env, COCO_IMAGES='1', **GCP_ENV))
  spec = kfp_spec.load(rehearse.compile_spec(rehearse.dataflow_settings(gcp), str(tmp / 'images')))
  task = 'ImageExampleGen'
  definitions = kfp_spec.component(spec, task).output_definitions.artifacts
  outputs = {key: pb.RuntimeArtifact(name=f'rehearsal/{key}', type=definition.artifact_type)
             for key, definition in definitions.items()}
  captions = rehearsal.runtime_artifact(rehearsed.output(0, 'CsvExampleGen', 'examples'))
  given = kfp_spec.executor_input(spec, task, {'captions': [captions]}, outputs, '')
  path = jobs.build_job(spec, task, given, str(tmp / 'image_jobs'), dataflow_jobs['env'], str(tmp))
  check_dataflow_job(task, path, gcp.gcp)
  assert jobs.summary(jobs.load(path))['transforms'] > 10
  assert not dataflow_jobs['network_log'].exists(), dataflow_jobs['network_log'].read_text()


def test_a_transform_runner_v2_does_not_know_is_reported():
  built = {'pipeline': {'components': {'transforms': {
      'a': {'uniqueName': 'Read', 'spec': {'urn': 'beam:transform:read:v1'}},
      'b': {'uniqueName': 'Native', 'spec': {}},
      'c': {'uniqueName': 'Map', 'spec': {'urn': 'beam:transform:pardo:v1'}},
      'd': {'uniqueName': 'Composite', 'subtransforms': ['c']}}}}}
  from pipeline.orchestration import dataflow_jobs as jobs  # pylint: disable=g-import-not-at-top
  assert jobs.unsupported_transforms(built) == {'Read': 'beam:transform:read:v1', 'Native': ''}
