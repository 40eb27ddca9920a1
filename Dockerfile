# Component image for Kubeflow Pipelines v2 / Vertex AI, and the Dataflow worker image
# (--sdk_container_image, see pipeline/beam_args.py). Build from the project root:
#   docker build -t "$COCO_IMAGE" . && docker push "$COCO_IMAGE"
#
# What is inside is exactly what the local rehearsal runs the compiled spec in
# (`make rehearse`, pipeline/orchestration/image_env.py): Python 3.10.13, the
# locked dependencies of requirements.lock, then this project's wheel with
# --no-deps, both installed by tools/image-install.sh. tests/test_rehearsal.py
# checks that this file and the rehearsal's virtualenv cannot drift apart.
#
# The full Debian image (not -slim): two locked packages (crcmod, pyfarmhash)
# ship no wheels and are compiled at install time.
FROM python:3.10.13-bookworm

# Dataflow starts its workers through Beam's boot program; it comes from Beam's
# own SDK image of the locked Beam version. KFP and Vertex ignore the ENTRYPOINT:
# the compiled spec names the command.
COPY --from=apache/beam_python3.10_sdk:2.59.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]

# Keras 2 (tf_keras) for TFT 1.16's Keras layer and our model, in every process,
# including Beam workers that import TensorFlow before our package.
ENV TF_USE_LEGACY_KERAS=1

COPY requirements.lock setup.py LICENSE /tmp/coco-captions-tfx/
COPY tools/image-install.sh /tmp/coco-captions-tfx/tools/
COPY pipeline/ /tmp/coco-captions-tfx/pipeline/
COPY modules/ /tmp/coco-captions-tfx/modules/

# The script ends with an import check: the build fails if the code needs
# something the locked environment lacks.
RUN PIP_NO_CACHE_DIR=1 sh /tmp/coco-captions-tfx/tools/image-install.sh python /tmp/coco-captions-tfx \
 && rm -rf /tmp/coco-captions-tfx
