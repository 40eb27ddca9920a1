"""A local rehearsal of the compiled Kubeflow Pipelines v2 / Vertex AI spec:
its tasks executed here one by one, the way a KFP v2 backend executes them.

What it does, per task, in dependency order (pipeline/orchestration/kfp_spec.py):
- **Container tasks** run the *command and args written in the spec*
  (`python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor
  --executor_class_path ... --json_serialized_invocation_args {{$}} <beam args>`)
  with every placeholder filled from an `ExecutorInput` built as Vertex builds
  it: input artifacts are the upstream tasks' outputs (name, type, URI and the
  metadata their executors wrote), parameters are the spec's constants (as
  `parameter_values` and as the deprecated typed `parameters`), each output
  artifact gets a name, a URI `<root>/<job id>/<task>/<key>` (its directory
  made, as KFP's launcher does for local paths) and the output metadata file
  `<root>/<job id>/<task>/executor_output.json`. A `lifecycle.preCacheCheck`
  (ExampleGen's driver) runs first with the same input; the artifact metadata
  of its `ExecutorOutput` is applied to the outputs before the main command,
  and its file stays for the executor to read its parameters from. The main
  command's `ExecutorOutput` metadata is what downstream tasks receive.
- **Resolver tasks** answer each `outputArtifactQueries` filter from the
  rehearsal's own record of earlier runs (`record.json` under the root: every
  artifact a rehearsed task produced, LIVE once its task succeeded), newest
  first, `limit` (default 1), in the pipeline's context, placeholders in the
  filter filled from the resolver's inputs. A query that finds nothing gives
  an empty list (a first run has no blessed model).
- Tasks run in the environment the caller gives (image_env.py: a virtualenv
  made like the component image), from a working directory outside the
  checkout, with the image's environment variables and nothing else.

What it does not emulate: caching (every task runs every time;
`cachingOptions` are ignored), retries, resource requests and accelerators,
parallel tasks (one at a time), the container itself (its filesystem,
user, network), and importer tasks (this pipeline has none; refused by name).
"""

import dataclasses
import json
import os
import subprocess
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

from pipeline.orchestration import kfp_spec

RECORD_FILE = 'record.json'
EXECUTOR_INPUT_FILE = 'executor_input.json'
EXECUTOR_OUTPUT_FILE = 'executor_output.json'
LOG_FILE = 'task.log'
# Vertex ML Metadata's artifact names; TFX turns them into ids and back.
ARTIFACT_NAME = 'projects/rehearsal/locations/local/metadataStores/default/artifacts/{id}'
TASK_TIMEOUT = 3600


class TaskFailed(RuntimeError):
  """A task's command failed; the message names the task, its command and log."""


@dataclasses.dataclass
class TaskResult:
  task: str
  kind: str                                  # 'container' or 'resolver'
  seconds: float
  outputs: Dict[str, List[Dict[str, Any]]]   # output key -> recorded artifacts
  log: Optional[str] = None


class Record:
  """The rehearsal's ML Metadata: every artifact its tasks produced and every
  job, as one JSON file, so a later rehearsal's resolvers can find them."""

  def __init__(self, path: str):
    self.path = path
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        self.data = json.load(f)
    else:
      self.data = {'next_id': 1, 'artifacts': [], 'jobs': []}

  def save(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with open(self.path + '.partial', 'w', encoding='utf-8') as f:
      json.dump(self.data, f, indent=1)
    os.replace(self.path + '.partial', self.path)

  def new_artifact(self, artifact_type: pb.ArtifactTypeSchema, uri: str, context: str,
                   job: str, task: str, key: str) -> Dict[str, Any]:
    """A PENDING artifact (LIVE once its task succeeds)."""
    artifact_id = self.data['next_id']
    self.data['next_id'] += 1
    artifact = {'id': artifact_id, 'name': ARTIFACT_NAME.format(id=artifact_id),
                'schema_title': kfp_spec.schema_title(artifact_type),
                'type': json_format.MessageToDict(artifact_type), 'uri': uri, 'metadata': {},
                'state': 'PENDING', 'create_time': time.time_ns(), 'context': context,
                'job': job, 'task': task, 'key': key}
    self.data['artifacts'].append(artifact)
    return artifact

  def live(self) -> List[Dict[str, Any]]:
    return [a for a in self.data['artifacts'] if a['state'] == kfp_spec.LIVE]

  def add_job(self, job: Dict[str, Any]) -> None:
    self.data['jobs'].append(job)
    self.save()


def runtime_artifact(artifact: Mapping[str, Any]) -> pb.RuntimeArtifact:
  result = pb.RuntimeArtifact(name=artifact['name'], uri=artifact['uri'])
  json_format.ParseDict(artifact['type'], result.type)
  json_format.ParseDict(artifact['metadata'], result.metadata)
  return result


def read_executor_output(path: str) -> pb.ExecutorOutput:
  output = pb.ExecutorOutput()
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      json_format.Parse(f.read(), output, ignore_unknown_fields=True)
  return output


def apply_output_metadata(output: pb.ExecutorOutput, given: pb.ExecutorInput,
                          artifacts: Mapping[str, Dict[str, Any]]) -> None:
  """Merges the metadata an ExecutorOutput reports for each output artifact
  into the record and into the ExecutorInput's outputs (matched by name)."""
  for key, listed in output.artifacts.items():
    for reported in listed.artifacts:
      artifact = artifacts.get(key)
      if artifact is None or (reported.name and reported.name != artifact['name']):
        raise TaskFailed(f'executor output names an unknown artifact {key}: {reported.name}')
      artifact['metadata'].update(json_format.MessageToDict(reported.metadata))
      if reported.uri:
        artifact['uri'] = reported.uri
      for runtime in given.outputs.artifacts[key].artifacts:
        runtime.CopyFrom(runtime_artifact(artifact))


class Rehearsal:
  """Runs one compiled spec as a job: `run()` executes every task once."""

  def __init__(self, spec_path: str, root: str, env: Mapping[str, str], workdir: str,
               report: Callable[[str], None] = print, job_id: Optional[str] = None):
    self.spec = kfp_spec.load(spec_path)
    self.context = self.spec.pipeline_info.name
    self.root = root
    self.env = dict(env)
    self.workdir = workdir
    self.report = report
    self.job_id = job_id or f'{self.context}-{time.strftime("%Y%m%d-%H%M%S")}'
    self.job_dir = os.path.join(root, self.job_id)
    self.record = Record(os.path.join(root, RECORD_FILE))
    self.produced: Dict[str, Dict[str, List[pb.RuntimeArtifact]]] = {}

  def run(self) -> List[TaskResult]:
    order = kfp_spec.task_order(self.spec)
    width = max(len(task) for task in order)
    results, status = [], 'SUCCEEDED'
    try:
      for number, task in enumerate(order, 1):
        start = time.monotonic()
        result = self.run_task(task)
        result.seconds = time.monotonic() - start
        results.append(result)
        self.report(f'[{number}/{len(order)}] {task:<{width}}  {result.kind:<9} '
                    f'{result.seconds:6.1f}s')
    except Exception:
      status = 'FAILED'
      raise
    finally:
      self.record.add_job({'job_id': self.job_id, 'status': status, 'tasks': [
          {'task': r.task, 'kind': r.kind, 'seconds': round(r.seconds, 1)} for r in results]})
    return results

  def inputs_of(self, task: str) -> Dict[str, List[pb.RuntimeArtifact]]:
    return {name: list(self.produced[producer].get(key, []))
            for name, (producer, key) in kfp_spec.artifact_inputs(self.spec, task).items()}

  def run_task(self, task: str) -> TaskResult:
    executor = kfp_spec.executor(self.spec, task)
    kind = executor.WhichOneof('spec')
    if kind == 'resolver':
      outputs = self.resolve(task, executor.resolver)
      result = TaskResult(task, kind, 0.0, outputs)
    elif kind == 'container':
      outputs, log = self.run_container(task, executor.container)
      result = TaskResult(task, kind, 0.0, outputs, log)
    else:
      raise kfp_spec.SpecError(f'task {task}: {kind} executors are not rehearsed')
    self.produced[task] = {key: [runtime_artifact(a) for a in listed]
                           for key, listed in result.outputs.items()}
    return result

  def resolve(self, task: str, resolver: pb.PipelineDeploymentConfig.ResolverSpec):
    inputs = self.inputs_of(task)
    if any(not listed for listed in inputs.values()):
      return {key: [] for key in resolver.output_artifact_queries}
    given = kfp_spec.executor_input(self.spec, task, inputs, {}, '')
    return {key: kfp_spec.query(kfp_spec.fill(q.filter, given), q.limit, self.record.live(),
                                self.context)
            for key, q in resolver.output_artifact_queries.items()}

  def run_container(self, task: str, container: pb.PipelineDeploymentConfig.PipelineContainerSpec):
    task_dir = os.path.join(self.job_dir, task)
    os.makedirs(task_dir, exist_ok=True)
    outputs = {}
    for key, definition in kfp_spec.component(self.spec, task).output_definitions.artifacts.items():
      uri = os.path.join(task_dir, key)
      os.makedirs(uri, exist_ok=True)
      outputs[key] = self.record.new_artifact(definition.artifact_type, uri, self.context,
                                              self.job_id, task, key)
    given = kfp_spec.executor_input(
        self.spec, task, self.inputs_of(task),
        {key: runtime_artifact(a) for key, a in outputs.items()},
        os.path.join(task_dir, EXECUTOR_OUTPUT_FILE))
    log = os.path.join(task_dir, LOG_FILE)
    if container.lifecycle.HasField('pre_cache_check'):
      hook = container.lifecycle.pre_cache_check
      run_command(task, [*hook.command, *hook.args], given, self.env, self.workdir, log)
      apply_output_metadata(read_executor_output(given.outputs.output_file), given, outputs)
    with open(os.path.join(task_dir, EXECUTOR_INPUT_FILE), 'w', encoding='utf-8') as f:
      f.write(json_format.MessageToJson(given))
    run_command(task, [*container.command, *container.args], given, self.env, self.workdir, log)
    apply_output_metadata(read_executor_output(given.outputs.output_file), given, outputs)
    for artifact in outputs.values():
      artifact['state'] = kfp_spec.LIVE
    self.record.save()
    return {key: [artifact] for key, artifact in outputs.items()}, log

def run_command(task: str, argv: Sequence[str], given: pb.ExecutorInput, env: Mapping[str, str],
                workdir: str, log: str) -> None:
  """One command of the spec, placeholders filled; its output appended to the task's log."""
  filled = [kfp_spec.fill(arg, given) for arg in argv]
  with open(log, 'a', encoding='utf-8') as out:
    out.write('$ ' + ' '.join(a if len(a) < 200 else a[:200] + '...' for a in filled) + '\n')
    out.flush()
    code = subprocess.run(filled, cwd=workdir, env=dict(env), stdout=out,
                          stderr=subprocess.STDOUT, timeout=TASK_TIMEOUT).returncode
  if code != 0:
    with open(log, encoding='utf-8', errors='replace') as f:
      tail = ''.join(f.readlines()[-25:])
    raise TaskFailed(f'task {task}: `{" ".join(argv[:3])} ...` exited with {code}; '
                     f'log: {log}\n{tail}')
