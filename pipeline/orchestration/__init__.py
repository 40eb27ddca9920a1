"""Running the pipeline: locally (`local`: the run lock, Ctrl-C, partial runs,
the console, the closing summary and the report) and compiled for Kubeflow
Pipelines / Vertex AI (`kubeflow`). The runner files at the project root are
thin: they read the settings, build the pipeline and hand it to these.

May import everything of `pipeline` below it (settings, artifacts, the
pipeline, the report); `tools` may import it.
"""
