"""Running the pipeline: locally (`local`: the run lock, Ctrl-C, partial runs,
the console, the closing summary and the report; `faults`: the one line for a
full disk or a store locked mid-run; `workers`: the sdist a run stages for
Beam's workers, and its wait for Beam's in-process ones), compiled for Kubeflow
Pipelines / Vertex AI (`kubeflow`), and that compiled spec executed here task
by task (`kfp_spec` reads it, `rehearsal` runs it in the image-like
environment of `image_env`; `dataflow_jobs` builds its Beam stages' Dataflow
jobs offline). The runner files at the project root are thin: they read the
settings, build the pipeline and hand it to these.

May import everything of `pipeline` below it (settings, artifacts, the
pipeline, the report); `tools` may import it.
"""
