"""Pusher's executor for a local serving directory: TFX's, except that a
model which already is the newest version there is not copied again.

Why: on a re-run with nothing changed the Trainer is cached, the resolver's
latest blessed model is that same model, so Evaluator blesses it again and
TFX's Pusher would write a second, identical version directory (a new one
per run). Here the SavedModel's fingerprint (`fingerprint.pb`, TensorFlow's
hash of the graph and the weights) decides: same fingerprint as the newest
version, same model; the push is recorded in ML Metadata with that version
and nothing on the serving side changes. Anything else is TFX's push.
"""

import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

FINGERPRINT_FILE = 'fingerprint.pb'


def newest_version(base_directory: str) -> Optional[str]:
  """The numbered version directory TF Serving would load (the highest), if any."""
  if not fileio.exists(base_directory):
    return None
  versions = [name.rstrip('/') for name in fileio.listdir(base_directory)]
  versions = [v for v in versions if v.isdigit()]
  return max(versions, key=int) if versions else None


def same_model(model_path: str, version_path: str) -> bool:
  """Whether two SavedModel directories hold the same model (fingerprints)."""
  first, second = (os.path.join(p, FINGERPRINT_FILE) for p in (model_path, version_path))
  if not (fileio.exists(first) and fileio.exists(second)):
    return False
  return io_utils.read_bytes_file(first) == io_utils.read_bytes_file(second)


class Executor(pusher_executor.Executor):
  """TFX's filesystem Pusher, idempotent for the newest version."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    base = destination.filesystem.base_directory
    newest = newest_version(base) if base else None
    if newest is not None and self.CheckBlessing(input_dict):
      model_path = self.GetModelPath(input_dict)
      serving_path = os.path.join(base, newest)
      if same_model(model_path, serving_path):
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=newest)
        return
    super().Do(input_dict, output_dict, exec_properties)
