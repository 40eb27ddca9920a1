# Component image for Kubeflow Pipelines v2 / Vertex AI, and the Dataflow worker image
# (--sdk_container_image, see pipeline/beam_args.py). Build from the project root:
#   docker build -t "$COCO_IMAGE" . && docker push "$COCO_IMAGE"
#
# The TFX release image brings TensorFlow, TFT, TFX-BSL, Beam and the Beam worker boot
# program; its tag must equal the tfx pin in requirements.lock (tests/test_kubeflow.py
# checks). Its ENTRYPOINT (/opt/apache/beam/boot) is what Dataflow workers start; KFP and
# Vertex ignore it because the compiled spec names the command. So: no ENTRYPOINT here.
FROM tensorflow/tfx:1.16.0

# Keras 2 (tf_keras) for TFT 1.16's Keras layer and our model, in every process,
# including Beam workers that import TensorFlow before our package.
ENV TF_USE_LEGACY_KERAS=1

# Only what the package needs: the pipeline is installed as a package, so the
# executors import modules.preprocessing / modules.trainer from site-packages.
COPY setup.py LICENSE /tmp/coco-captions-tfx/
COPY pipeline/ /tmp/coco-captions-tfx/pipeline/
COPY modules/ /tmp/coco-captions-tfx/modules/

# --no-deps: the image's TF/TFX stay exactly as released (setup.py pins nothing).
# The import check fails the build if the code needs something the image lacks.
RUN python -m pip install --no-deps --no-cache-dir /tmp/coco-captions-tfx \
 && rm -rf /tmp/coco-captions-tfx \
 && cd / && python -c "import modules.preprocessing, modules.trainer, pipeline.components.csv_example_gen, pipeline.components.transform_executor, pipeline.components.image_example_gen; print('coco-captions-tfx ok')"
