"""Artifact types of our own components.

A type's name is also a class path. KFP's compiled spec carries a custom type
only as its name (a schema title, which TFX's compiler requires to be
`<namespace>.<Name>`), and TFX's container entrypoint imports the artifact
class *by that name*. So `pipeline.ImageDeadLetter` names this class through
`pipeline/__init__.py`. (The former `coco.ImageDeadLetter` compiled and then
failed in the container; the local rehearsal of the spec found it.)
"""

from tfx.types import artifact


class ImageDeadLetter(artifact.Artifact):
  """dead_letter.csv and summary.json of one ImageExampleGen run; the counts
  are custom properties."""
  TYPE_NAME = 'pipeline.ImageDeadLetter'
