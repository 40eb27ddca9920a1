"""Reading what a run did from ML Metadata (not from logs).

Component states and durations of a run, which engine ran each one (and its
job ids there), its output artifacts (so whatever is read belongs to that one
run), the newest published model, and marking executions a killed run left
unfinished.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata as tfx_metadata

from pipeline.artifacts.files import MissingArtifact

_STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


def connection_config(sqlite_path: str) -> metadata_store_pb2.ConnectionConfig:
  """SQLite ML Metadata config (the file is created on first use)."""
  return tfx_metadata.sqlite_metadata_connection_config(sqlite_path)


def open_store(sqlite_path: str) -> metadata_store.MetadataStore:
  """Opens an existing store read-write; refuses to create an empty one."""
  if not os.path.exists(sqlite_path):
    raise FileNotFoundError(f'No ML Metadata at {sqlite_path}: has the pipeline run yet?')
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = sqlite_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
  return metadata_store.MetadataStore(config)


@dataclasses.dataclass(frozen=True)
class ComponentRun:
  component: str      # node id, e.g. 'Transform'
  state: str          # COMPLETE, CACHED, RUNNING, FAILED, ...
  seconds: float      # create -> last update of the execution
  execution_id: int
  start_ms: int = 0
  end_ms: int = 0
  engine: str = ''    # e.g. 'Flink', 'DirectRunner (in_memory)', 'in process' (record_engines)
  jobs: Tuple[str, ...] = ()   # the engine's job ids (Flink's jid)


ENGINE_PROPERTY = 'coco_engine'
JOBS_PROPERTY = 'coco_engine_jobs'
# Writing a property moves an execution's last update time: its end is kept here.
ENDED_PROPERTY = 'coco_ended_ms'


def run_ids(store: metadata_store.MetadataStore) -> List[str]:
  """Pipeline run ids, oldest first."""
  contexts = store.get_contexts_by_type('pipeline_run')
  return [c.name for c in sorted(contexts, key=lambda c: c.id)]


def _component_of(store: metadata_store.MetadataStore,
                  execution: metadata_store_pb2.Execution) -> str:
  """The node id (e.g. 'Transform') an execution ran, from its node context."""
  nodes = [c for c in store.get_contexts_by_execution(execution.id)
           if store.get_context_types_by_id([c.type_id])[0].name == 'node']
  return nodes[0].name.split('.')[-1] if nodes else execution.type


def pipeline_nodes(store: metadata_store.MetadataStore) -> List[str]:
  """Node ids (e.g. 'Transform') this metadata has seen execute, in the order
  they first did: the pipeline's nodes as recorded, not a list kept by hand."""
  node_type = store.get_context_type('node')
  contexts = sorted(store.get_contexts_by_type(node_type.name), key=lambda c: c.id)
  return [c.name.split('.')[-1] for c in contexts]


def component_runs(store: metadata_store.MetadataStore,
                   run_id: Optional[str] = None) -> List[ComponentRun]:
  """Executions of one pipeline run (default: the latest), in execution order."""
  contexts = sorted(store.get_contexts_by_type('pipeline_run'), key=lambda c: c.id)
  if run_id is not None:
    contexts = [c for c in contexts if c.name == run_id]
  if not contexts:
    return []
  rows = []
  for execution in sorted(store.get_executions_by_context(contexts[-1].id),
                          key=lambda e: e.id):
    props = execution.custom_properties
    ended = (props[ENDED_PROPERTY].int_value if ENDED_PROPERTY in props
             else execution.last_update_time_since_epoch)
    rows.append(ComponentRun(
        component=_component_of(store, execution),
        state=_STATE_NAMES.get(execution.last_known_state, 'UNKNOWN'),
        seconds=(ended - execution.create_time_since_epoch) / 1000.0,
        execution_id=execution.id,
        start_ms=execution.create_time_since_epoch,
        end_ms=ended,
        engine=props[ENGINE_PROPERTY].string_value if ENGINE_PROPERTY in props else '',
        jobs=tuple(props[JOBS_PROPERTY].string_value.split()) if JOBS_PROPERTY in props else ()))
  return rows


def record_engines(store: metadata_store.MetadataStore,
                   engines: Dict[int, Tuple[str, Sequence[str]]]) -> None:
  """Writes which engine ran each execution (by id) and its job ids there,
  as custom properties of the execution: the run's record then says where its
  work ran, for the summary, the report and anyone reading ML Metadata."""
  executions = store.get_executions_by_id(list(engines))
  for execution in executions:
    engine, job_ids = engines[execution.id]
    if ENDED_PROPERTY not in execution.custom_properties:
      execution.custom_properties[ENDED_PROPERTY].int_value = execution.last_update_time_since_epoch
    execution.custom_properties[ENGINE_PROPERTY].string_value = engine
    execution.custom_properties[JOBS_PROPERTY].string_value = ' '.join(job_ids)
  if executions:
    store.put_executions(executions)


def latest_model_uri(store: metadata_store.MetadataStore) -> Optional[str]:
  """URI of the newest LIVE Model artifact (a Trainer output), if any."""
  return latest_artifact_uri(store, 'Model')


def latest_artifact_uri(store: metadata_store.MetadataStore, type_name: str) -> Optional[str]:
  """URI of the newest LIVE artifact of a type (e.g. 'ExampleAnomalies')."""
  found = [a for a in store.get_artifacts_by_type(type_name)
           if a.state == metadata_store_pb2.Artifact.LIVE]
  return max(found, key=lambda a: a.id).uri if found else None


def run_outputs(store: metadata_store.MetadataStore,
                run_id: Optional[str] = None) -> Dict[str, Dict[str, str]]:
  """Output artifact URIs of one pipeline run (default: the latest), as
  {component: {output key: uri}}.

  Follows the run's own executions (a cached execution points at the cached
  artifacts), so everything read from it belongs to that one run, unlike
  `latest_artifact_uri`, which may mix runs of different settings. Components
  that have not finished in that run are absent.
  """
  runs = component_runs(store, run_id)
  if not runs:
    return {}
  component_of = {r.execution_id: r.component for r in runs}
  events = [e for e in store.get_events_by_execution_ids(list(component_of))
            if e.type == metadata_store_pb2.Event.OUTPUT]
  uris = {a.id: a.uri for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  outputs: Dict[str, Dict[str, str]] = {}
  for event in sorted(events, key=lambda e: e.execution_id):  # a retry's outputs win
    key = next((step.key for step in event.path.steps if step.HasField('key')), '')
    outputs.setdefault(component_of[event.execution_id], {})[key] = uris[event.artifact_id]
  return outputs


def cancel_unfinished(store: metadata_store.MetadataStore) -> List[str]:
  """Marks executions still NEW or RUNNING as CANCELED; returns their components.

  A run that was killed or interrupted leaves its current execution RUNNING
  for ever (its outputs were never published, so nothing downstream can pick
  them up). The local runner calls this while it holds the pipeline's run
  lock, when no other run can be executing, so the record says what happened.
  """
  unfinished = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)
  stale = [e for e in store.get_executions() if e.last_known_state in unfinished]
  for execution in stale:
    execution.last_known_state = metadata_store_pb2.Execution.CANCELED
  if stale:
    store.put_executions(stale)
  return [_component_of(store, e) for e in stale]


@dataclasses.dataclass
class Run:
  """One pipeline run as ML Metadata records it: its executions and outputs."""
  run_id: str
  components: List[ComponentRun]        # in execution order
  outputs: Dict[str, Dict[str, str]]    # component -> output key -> uri
  store: Any = None

  def output(self, component: str, key: str) -> str:
    """The URI of a component's output, or MissingArtifact saying why not."""
    if key in self.outputs.get(component, {}):
      return self.outputs[component][key]
    states = {r.component: r.state for r in self.components}
    why = (f'{component} is {states[component]} in run {self.run_id}' if component in states
           else f'{component} did not run in run {self.run_id}')
    raise MissingArtifact(f"{component}'s {key!r} artifact ({why})")

  def artifact(self, component: str, key: str):
    """The ML Metadata record of a component's output (its custom properties)."""
    uri = self.output(component, key)
    return next(a for a in self.store.get_artifacts_by_uri(uri))

  def pushed_destination(self) -> Optional[str]:
    """Where this run's Pusher put the model (None: nothing pushed, or no Pusher)."""
    if not self.has('Pusher', 'pushed_model'):
      return None
    props = self.artifact('Pusher', 'pushed_model').custom_properties
    if 'pushed' in props and props['pushed'].int_value == 1:
      return props['pushed_destination'].string_value
    return None

  def has(self, component: str, key: str) -> bool:
    return key in self.outputs.get(component, {})

  def custom_config(self, component: str) -> Dict[str, Any]:
    """The `custom_config` a component of this run executed with (what it
    really used: the current settings may say otherwise)."""
    import json  # pylint: disable=g-import-not-at-top
    ids = [r.execution_id for r in self.components if r.component == component]
    if not ids or self.store is None:
      return {}
    raw = self.store.get_executions_by_id(ids[-1:])[0].custom_properties.get('custom_config')
    return json.loads(raw.string_value) if raw is not None and raw.string_value else {}


def load_run(sqlite_path: str, run_id: Optional[str] = None) -> Run:
  """A run (default: the latest) of the pipeline whose ML Metadata is at `sqlite_path`."""
  store = open_store(sqlite_path)
  ids = run_ids(store)
  if run_id is None and ids:
    run_id = ids[-1]
  if run_id not in ids:
    raise LookupError(f'no pipeline run {run_id!r} in {sqlite_path}'
                      + (f'; runs: {", ".join(ids)}' if ids else ': has the pipeline run yet?'))
  return Run(run_id, component_runs(store, run_id), run_outputs(store, run_id), store)
