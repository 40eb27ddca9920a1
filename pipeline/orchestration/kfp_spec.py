"""The compiled Kubeflow Pipelines v2 / Vertex AI spec, read the way a KFP
backend reads it: the tasks in dependency order, each task's executor, the
`ExecutorInput` its container receives, the placeholders in its command, and
the artifact queries of resolver tasks.

Everything here follows KFP's own protos (`kfp.pipeline_spec.pipeline_spec_pb2`,
the `kfp-pipeline-spec` package): PipelineSpec, PipelineDeploymentConfig,
ExecutorInput, ExecutorOutput, RuntimeArtifact. Pure functions of the spec;
pipeline/orchestration/rehearsal.py runs what they describe.
"""

import json
import re
from typing import Any, Callable, Dict, List, Mapping, Sequence, Set

import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

EXECUTOR_INPUT = '{{$}}'
PLACEHOLDER = re.compile(r'\{\{\$(.*?)\}\}')
LIVE = 'LIVE'


class SpecError(ValueError):
  """The spec asks for something a KFP backend would reject (or the rehearsal does not do)."""


def load(path: str) -> pb.PipelineSpec:
  """A compiled file: a Vertex PipelineJob (.json, the spec under
  `pipelineSpec`) or a KFP PipelineSpec (.yaml). Strict: a field the protos
  do not know is an error, as in the backend."""
  with open(path, encoding='utf-8') as f:
    raw = json.load(f) if path.endswith('.json') else yaml.safe_load(f)
  spec = pb.PipelineSpec()
  json_format.ParseDict(raw.get('pipelineSpec', raw), spec)
  return spec


def deployment(spec: pb.PipelineSpec) -> pb.PipelineDeploymentConfig:
  """The spec's `deploymentSpec` (a Struct in PipelineSpec) as its proto."""
  config = pb.PipelineDeploymentConfig()
  json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), config)
  return config


def component(spec: pb.PipelineSpec, task: str) -> pb.ComponentSpec:
  return spec.components[spec.root.dag.tasks[task].component_ref.name]


def executor(spec: pb.PipelineSpec, task: str) -> pb.PipelineDeploymentConfig.ExecutorSpec:
  return deployment(spec).executors[component(spec, task).executor_label]


def upstream(task: pb.PipelineTaskSpec) -> Set[str]:
  """Tasks this one waits for: its dependent_tasks and the producers of its inputs."""
  found = set(task.dependent_tasks)
  found |= {a.task_output_artifact.producer_task for a in task.inputs.artifacts.values()
            if a.HasField('task_output_artifact')}
  found |= {p.task_output_parameter.producer_task for p in task.inputs.parameters.values()
            if p.HasField('task_output_parameter')}
  return found


def task_order(spec: pb.PipelineSpec) -> List[str]:
  """Every task after all it waits for (ties by name, so the order is the same
  every time; a backend may run ready tasks in any order, or together)."""
  tasks = spec.root.dag.tasks
  waits = {name: upstream(task) for name, task in tasks.items()}
  for name, deps in waits.items():
    if deps - set(tasks):
      raise SpecError(f'task {name} waits for {sorted(deps - set(tasks))}, which the spec lacks')
  order: List[str] = []
  while waits:
    ready = sorted(name for name, deps in waits.items() if deps <= set(order))
    if not ready:
      raise SpecError(f'tasks {sorted(waits)} wait for each other (a cycle)')
    order.append(ready[0])
    del waits[ready[0]]
  return order


# ------------------------------------------------------------------ parameters
def _from_legacy(value: pb.Value) -> struct_pb2.Value:
  kind = value.WhichOneof('value')
  if kind == 'string_value':
    return struct_pb2.Value(string_value=value.string_value)
  if kind in ('int_value', 'double_value'):
    return struct_pb2.Value(number_value=float(getattr(value, kind)))
  raise SpecError(f'a constant without a value: {value}')


def _to_legacy(value: struct_pb2.Value, kind: int) -> pb.Value:
  """The deprecated typed `Value` TFX's container entrypoint still reads,
  typed by the component's input definition (INT, DOUBLE, STRING)."""
  types = pb.PrimitiveType.PrimitiveTypeEnum
  if kind == types.INT:
    return pb.Value(int_value=int(value.number_value))
  if kind == types.DOUBLE:
    return pb.Value(double_value=value.number_value)
  if value.WhichOneof('kind') == 'string_value':
    return pb.Value(string_value=value.string_value)
  return pb.Value(string_value=json_format.MessageToJson(value, indent=None))


def parameter_values(spec: pb.PipelineSpec, task: str) -> Dict[str, struct_pb2.Value]:
  """The task's input parameters. Compile-time constants are all TFX writes;
  pipeline parameters and upstream output parameters are refused by name."""
  values = {}
  for name, source in spec.root.dag.tasks[task].inputs.parameters.items():
    if not source.HasField('runtime_value'):
      raise SpecError(f'{task}.{name}: only constant parameters are rehearsed, got '
                      f'{source.WhichOneof("kind")}')
    runtime = source.runtime_value
    if runtime.HasField('constant'):
      values[name] = runtime.constant
    elif runtime.HasField('constant_value'):
      values[name] = _from_legacy(runtime.constant_value)
    else:
      raise SpecError(f'{task}.{name}: runtime parameter {runtime.runtime_parameter!r} '
                      'has no value here')
  return values


# ------------------------------------------------------------------ artifacts
def schema_title(artifact_type: pb.ArtifactTypeSchema) -> str:
  """`tfx.Model`, ...: the schema title, or the title inside an instance schema."""
  if artifact_type.schema_title:
    return artifact_type.schema_title
  return (yaml.safe_load(artifact_type.instance_schema) or {}).get('title', 'system.Artifact')


def executor_input(spec: pb.PipelineSpec, task: str,
                   inputs: Mapping[str, Sequence[pb.RuntimeArtifact]],
                   outputs: Mapping[str, pb.RuntimeArtifact], output_file: str) -> pb.ExecutorInput:
  """What the backend gives a container as `{{$}}`: input artifacts (the
  upstream outputs, with their names, URIs and metadata), the parameters both
  as `parameter_values` and as the deprecated typed `parameters` (Vertex fills
  both; TFX's entrypoint reads the latter when no inputs spec is passed), the
  output artifacts (name, type, URI) and the output metadata file."""
  definitions = component(spec, task).input_definitions.parameters
  result = pb.ExecutorInput()
  for name, value in parameter_values(spec, task).items():
    result.inputs.parameter_values[name].CopyFrom(value)
    result.inputs.parameters[name].CopyFrom(_to_legacy(value, definitions[name].type))
  for name, artifacts in inputs.items():
    result.inputs.artifacts[name].artifacts.extend(artifacts)
  for name, artifact in outputs.items():
    result.outputs.artifacts[name].artifacts.append(artifact)
  result.outputs.output_file = output_file
  return result


def artifact_inputs(spec: pb.PipelineSpec, task: str) -> Dict[str, Any]:
  """input name -> (producer task, its output key)."""
  found = {}
  for name, source in spec.root.dag.tasks[task].inputs.artifacts.items():
    if not source.HasField('task_output_artifact'):
      raise SpecError(f'{task}.{name}: only artifacts of upstream tasks are rehearsed')
    found[name] = (source.task_output_artifact.producer_task,
                   source.task_output_artifact.output_artifact_key)
  return found


# ------------------------------------------------------------------ placeholders
_ARTIFACT = re.compile(r"^\.(inputs|outputs)\.artifacts\['([^']+)'\]\.(uri|metadata\['([^']+)'\])$")
_PARAMETER = re.compile(r"^\.inputs\.parameters\['([^']+)'\]$")
_OUTPUT_PARAMETER_FILE = re.compile(r"^\.outputs\.parameters\['([^']+)'\]\.output_file$")


def _text(value: struct_pb2.Value) -> str:
  if value.WhichOneof('kind') == 'string_value':
    return value.string_value
  if value.WhichOneof('kind') == 'number_value' and value.number_value.is_integer():
    return str(int(value.number_value))
  return json.dumps(json_format.MessageToDict(value))


def placeholder_value(path: str, given: pb.ExecutorInput) -> str:
  """The text of one placeholder `{{$<path>}}`, per the ExecutorInput doc of
  pipeline_spec.proto (`{{$}}`, input/output artifact URIs and metadata,
  input parameters, output files)."""
  if path == '':
    return json_format.MessageToJson(given, indent=None)
  if path == '.outputs.output_file':
    return given.outputs.output_file
  match = _ARTIFACT.match(path)
  if match:
    side, name, field, key = match.groups()
    artifacts = getattr(given, side).artifacts[name].artifacts
    if not artifacts:
      raise SpecError(f'placeholder {{{{${path}}}}}: no artifact {name!r}')
    if field == 'uri':
      return artifacts[0].uri
    metadata = json_format.MessageToDict(artifacts[0].metadata)
    if key not in metadata:
      raise SpecError(f'placeholder {{{{${path}}}}}: artifact {name!r} has no metadata {key!r}')
    value = metadata[key]
    return value if isinstance(value, str) else json.dumps(value)
  match = _PARAMETER.match(path)
  if match:
    return _text(given.inputs.parameter_values[match.group(1)])
  match = _OUTPUT_PARAMETER_FILE.match(path)
  if match:
    return given.outputs.parameters[match.group(1)].output_file
  raise SpecError(f'unknown placeholder {{{{${path}}}}}')


def fill(text: str, given: pb.ExecutorInput) -> str:
  """`text` with every placeholder replaced."""
  return PLACEHOLDER.sub(lambda m: placeholder_value(m.group(1), given), text)


# ------------------------------------------------------------------ resolver queries
_CONDITION = re.compile(
    r'^\s*(?:in_context\("(?P<context>[^"]*)"\)|'
    r'(?P<field>[A-Za-z_][\w.]*)\s*=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s"]+))\s*$')


def _literal(raw: str) -> Any:
  if raw.startswith('"'):
    return json.loads(raw)
  try:
    return float(raw)
  except ValueError:
    return raw          # a bare word: LIVE, true, ...


def parse_filter(text: str) -> List[Callable[[Mapping[str, Any]], bool]]:
  """The filter of an ArtifactQuerySpec: conditions joined by AND, each
  `in_context("...")`, `schema_title=` (or `artifact_type=`), `uri=`,
  `name=`, `state=` or `metadata.<key>.<kind>_value=`; the syntax the spec's
  ResolverSpec documents. Each condition is a predicate over a recorded
  artifact (a dict with those fields)."""
  conditions = []
  for part in re.split(r'\s+AND\s+', text.strip()):
    match = _CONDITION.match(part)
    if not match:
      raise SpecError(f'resolver filter {text!r}: cannot read {part!r}')
    if match.group('context') is not None:
      context = match.group('context')
      conditions.append(lambda a, c=context: a['context'] == c)
      continue
    field, value = match.group('field'), _literal(match.group('value'))
    if field in ('schema_title', 'artifact_type'):
      field = 'schema_title'
    if field in ('schema_title', 'uri', 'name', 'state'):
      conditions.append(lambda a, f=field, v=value: a[f] == v)
    elif field.startswith('metadata.') and field.count('.') == 2:
      _, key, kind = field.split('.')
      if kind not in ('number_value', 'string_value', 'bool_value'):
        raise SpecError(f'resolver filter {text!r}: unknown value kind {kind!r}')
      conditions.append(lambda a, k=key, v=value: a['metadata'].get(k) == v)
    else:
      raise SpecError(f'resolver filter {text!r}: unknown field {field!r}')
  return conditions


def query(text: str, limit: int, artifacts: Sequence[Mapping[str, Any]],
          context: str) -> List[Mapping[str, Any]]:
  """The newest `limit` (default 1) recorded artifacts matching the filter;
  without `in_context`, only those of this pipeline's context, as the spec says."""
  conditions = parse_filter(text)
  if 'in_context(' not in text:
    conditions.append(lambda a: a['context'] == context)
  found = [a for a in artifacts if all(condition(a) for condition in conditions)]
  found.sort(key=lambda a: a['create_time'], reverse=True)
  return found[:limit or 1]
