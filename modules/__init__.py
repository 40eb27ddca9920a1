"""Module-file code of the pipeline: preprocessing_fn and run_fn."""

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
