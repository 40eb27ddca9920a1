"""Pusher's executor for a local (or GCS) serving directory: TFX's push, made
whole and idempotent.

Whole: TF Serving polls `<base>/` and loads the highest all-digit version as
soon as it appears, so a version must never be visible half-copied (a model
loaded before its variables, tensorflow/serving#631, #1086). Where the file
system renames a directory in one step (local disks, HDFS, anything but
object stores), the model is copied to `<base>/.incoming-<version>` (a name
TF Serving ignores, in the same file system) and renamed to `<version>` once
complete. On GCS and S3 there is no directory rename: every file but
`saved_model.pb` is written first and `saved_model.pb` last, the file TF
Serving and TensorFlow take as "the model is there". A push that dies halfway
(killed, disk full) leaves only a staging directory, or on GCS a numbered
directory without `saved_model.pb`; the next push removes those leftovers
first, and a failed copy removes its own staging directory at once, so the
previous version stays the one served and nothing accumulates.

Idempotent: on a re-run with nothing changed the Trainer is cached, the
resolver's latest blessed model is that same model, so Evaluator blesses it
again and TFX's Pusher would write a second, identical version directory (a
new one per run). Here the SavedModel's fingerprint (`fingerprint.pb`,
TensorFlow's hash of the graph and the weights) decides: same fingerprint as
the newest version, same model; the push is recorded in ML Metadata with that
version and nothing on the serving side changes.
"""

import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

FINGERPRINT_FILE = 'fingerprint.pb'
SAVED_MODEL_FILE = 'saved_model.pb'
STAGING_PREFIX = '.incoming-'          # not all digits: TF Serving never loads it
NO_DIRECTORY_RENAME = ('gs://', 's3://')


def versions(base_directory: str) -> List[str]:
  """The numbered version directories under `base_directory`, oldest first."""
  if not fileio.exists(base_directory):
    return []
  names = [name.rstrip('/') for name in fileio.listdir(base_directory)]
  return sorted((n for n in names if n.isdigit()), key=int)


def newest_version(base_directory: str) -> Optional[str]:
  """The numbered version directory TF Serving would load (the highest), if any."""
  found = versions(base_directory)
  return found[-1] if found else None


def next_version(base_directory: str, now: Optional[float] = None) -> str:
  """TFX's version number (the Unix time in seconds), made higher than the
  newest one there: two pushes within a second, or a clock behind the
  serving directory's, still give a new, newer version."""
  newest = newest_version(base_directory)
  stamp = int(time.time() if now is None else now)
  return str(max(stamp, int(newest) + 1) if newest else stamp)


def same_model(model_path: str, version_path: str) -> bool:
  """Whether two SavedModel directories hold the same model (fingerprints)."""
  first, second = (os.path.join(p, FINGERPRINT_FILE) for p in (model_path, version_path))
  if not (fileio.exists(first) and fileio.exists(second)):
    return False
  return io_utils.read_bytes_file(first) == io_utils.read_bytes_file(second)


def renames_directories(path: str) -> bool:
  """Whether the file system of `path` moves a directory in one rename."""
  return not path.startswith(NO_DIRECTORY_RENAME)


def copy_file(source: str, target: str) -> None:
  """One file of a push (a seam of its own: tests/test_publish.py slows it
  down to kill a push midway)."""
  io_utils.copy_file(source, target, overwrite=True)


def copy_saved_model(source: str, target: str) -> None:
  """Copies a SavedModel directory file by file, `saved_model.pb` last."""
  source, last = source.rstrip('/'), None
  for directory, _, names in fileio.walk(source):
    relative = os.path.relpath(directory, source)
    into = target if relative == '.' else os.path.join(target, relative)
    fileio.makedirs(into)
    for name in sorted(names):
      if relative == '.' and name == SAVED_MODEL_FILE:
        last = os.path.join(directory, name)
      else:
        copy_file(os.path.join(directory, name), os.path.join(into, name))
  if last:
    copy_file(last, os.path.join(target, SAVED_MODEL_FILE))


def leftovers(base_directory: str) -> List[str]:
  """What earlier, unfinished pushes left: staging directories, and numbered
  directories without `saved_model.pb` (never a whole model; on GCS, a push
  that died before its last file)."""
  if not fileio.exists(base_directory):
    return []
  found = []
  for name in (n.rstrip('/') for n in fileio.listdir(base_directory)):
    path = os.path.join(base_directory, name)
    if name.startswith(STAGING_PREFIX) or (
        name.isdigit() and not fileio.exists(os.path.join(path, SAVED_MODEL_FILE))):
      found.append(path)
  return sorted(found)


def remove_leftovers(base_directory: str) -> List[str]:
  """Removes `leftovers`; returns what it removed."""
  found = leftovers(base_directory)
  for path in found:
    logging.warning('Removing what an unfinished push left: %s', path)
    fileio.rmtree(path)
  return found


def push_whole(model_path: str, base_directory: str, version: str) -> str:
  """Puts the SavedModel at `model_path` into `<base>/<version>`, visible to
  a server only when complete; returns that path. A failed copy (a full disk)
  removes what it wrote and raises."""
  serving_path = os.path.join(base_directory, version)
  fileio.makedirs(base_directory)
  if not renames_directories(base_directory):
    copy_saved_model(model_path, serving_path)
    return serving_path
  staging = os.path.join(base_directory, STAGING_PREFIX + version)
  try:
    copy_saved_model(model_path, staging)
    fileio.rename(staging, serving_path, overwrite=False)
  except BaseException:
    if fileio.exists(staging):
      fileio.rmtree(staging)
    raise
  return serving_path


class Executor(pusher_executor.Executor):
  """TFX's filesystem Pusher: whole versions, idempotent for the newest one."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    base = destination.filesystem.base_directory
    if not base:   # not a file system: TFX's own (which says what it supports)
      super().Do(input_dict, output_dict, exec_properties)
      return
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    model_path = self.GetModelPath(input_dict)
    remove_leftovers(base)
    newest = newest_version(base)
    if newest is not None and same_model(model_path, os.path.join(base, newest)):
      version, serving_path = newest, os.path.join(base, newest)
      logging.info('The model already is the newest version, %s: nothing copied.', serving_path)
    else:
      version = next_version(base)
      serving_path = push_whole(model_path, base, version)
      logging.info('Model written to serving path %s.', serving_path)
    io_utils.copy_dir(model_path, model_push.uri)
    self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
