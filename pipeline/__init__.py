"""coco-captions-tfx: the TFX pipeline definition and its configuration."""

import os

# Keras 2 everywhere: TFT 1.16's Keras layer is a tf_keras model and TFT sets
# this itself on import, so set it before anything can load TensorFlow first.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
