"""coco-captions-tfx: the TFX pipeline, its settings, its custom components and
the tools around it.

    settings.py     the one reader of the environment (`Settings.from_env()`)
    pipeline.py     `create_pipeline(...)`: the DAG, top to bottom
    beam_args.py    Beam arguments per runner mode
    csv_input/      reading and checking the caption CSVs
    images/         the image stage, a Beam job
    components/     custom components and executors (run in the image and on workers)
    artifacts/      reading a run: ML Metadata and the artifacts' files
    orchestration/  running locally (lock, signals, partial runs, summary) and compiling for KFP
    report/         the HTML run report
    tools/          command lines (`python -m pipeline.tools.<name>`)

Layering, lowest first; a package imports only those before it:
modules -> settings -> artifacts -> csv_input -> images -> components ->
beam_args, pipeline -> report -> orchestration -> tools.
"""

import modules  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything loads TensorFlow)


def __getattr__(name):
  """`pipeline.ImageDeadLetter`, the class path its KFP type name stands for
  (pipeline/artifacts/types.py); imported only when asked."""
  if name == 'ImageDeadLetter':
    from pipeline.artifacts.types import ImageDeadLetter  # pylint: disable=g-import-not-at-top
    return ImageDeadLetter
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
