"""What Transform and Trainer load: the module file and the code it calls.

A leaf package: nothing here imports `pipeline`; `pipeline` imports the
feature keys (`features`) and model constants (`constants`) from here, so
both sides name a feature or a token id the same way. On Kubeflow/Vertex
the components import it from the image by dotted name
(`modules.preprocessing.preprocessing_fn`, `modules.trainer.run_fn`).

Keras 2 everywhere: TFT 1.16's Keras layer is a tf_keras model and TFT sets
TF_USE_LEGACY_KERAS itself on import, so which Keras `tf.keras` means would
depend on import order. This is the one place it is set, before anything
here (or in `pipeline`, which imports this package first) loads TensorFlow.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
