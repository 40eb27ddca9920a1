"""Reading what a run did from ML Metadata (not from logs).

Used by the local runner's summary, the scoring command's default model and
the tests: component states and durations of the latest run, and the newest
published model.
"""

import dataclasses
import glob
import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata as tfx_metadata

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
    rows.append(ComponentRun(
        component=_component_of(store, execution),
        state=_STATE_NAMES.get(execution.last_known_state, 'UNKNOWN'),
        seconds=(execution.last_update_time_since_epoch
                 - execution.create_time_since_epoch) / 1000.0,
        execution_id=execution.id))
  return rows


def latest_model_uri(store: metadata_store.MetadataStore) -> Optional[str]:
  """URI of the newest LIVE Model artifact (a Trainer output), if any."""
  return latest_artifact_uri(store, 'Model')


def latest_artifact_uri(store: metadata_store.MetadataStore, type_name: str) -> Optional[str]:
  """URI of the newest LIVE artifact of a type (e.g. 'ExampleAnomalies')."""
  found = [a for a in store.get_artifacts_by_type(type_name)
           if a.state == metadata_store_pb2.Artifact.LIVE]
  return max(found, key=lambda a: a.id).uri if found else None


def anomalies(uri: str) -> Dict[str, List[str]]:
  """ExampleValidator's findings per split: '<feature>: <description>' lines.

  Reads the Anomalies protos TFX 1.16 writes as Split-<name>/SchemaDiff.pb.
  """
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  found = {}
  for split_dir in sorted(glob.glob(os.path.join(uri, 'Split-*'))):
    path = os.path.join(split_dir, 'SchemaDiff.pb')
    if not os.path.exists(path):
      continue
    with open(path, 'rb') as f:
      proto = anomalies_pb2.Anomalies.FromString(f.read())
    found[os.path.basename(split_dir)[len('Split-'):]] = [
        f'{name}: {info.short_description or info.description}'
        for name, info in sorted(proto.anomaly_info.items())]
  return found


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
