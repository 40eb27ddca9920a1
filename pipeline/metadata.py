"""Reading what a run did from ML Metadata (not from logs).

Used by the local runner's summary, the scoring command's default model and
the tests: component states and durations of the latest run, and the newest
published model.
"""

import dataclasses
import os
from typing import List, Optional

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
    node_contexts = [c for c in store.get_contexts_by_execution(execution.id)
                     if store.get_context_types_by_id([c.type_id])[0].name == 'node']
    component = node_contexts[0].name.split('.')[-1] if node_contexts else execution.type
    rows.append(ComponentRun(
        component=component,
        state=_STATE_NAMES.get(execution.last_known_state, 'UNKNOWN'),
        seconds=(execution.last_update_time_since_epoch
                 - execution.create_time_since_epoch) / 1000.0,
        execution_id=execution.id))
  return rows


def latest_model_uri(store: metadata_store.MetadataStore) -> Optional[str]:
  """URI of the newest LIVE Model artifact (a Trainer output), if any."""
  models = [a for a in store.get_artifacts_by_type('Model')
            if a.state == metadata_store_pb2.Artifact.LIVE]
  return max(models, key=lambda a: a.id).uri if models else None
