#!/bin/sh
# Installs what the component image holds into one Python environment: the
# locked dependencies, then this project's wheel without dependencies.
#
#   sh tools/image-install.sh PYTHON SOURCE_DIR
#
# SOURCE_DIR holds requirements.lock, setup.py, pipeline/ and modules/. The
# Dockerfile runs this script in the image; the local rehearsal of the compiled
# Kubeflow/Vertex spec (pipeline/orchestration/image_env.py) runs it in a
# virtualenv. One script for both, so the two environments are made the same
# way (tests/test_rehearsal.py checks the Dockerfile calls it).
set -eu
py=$1
src=$2
wheels=$(mktemp -d)
"$py" -m pip install --quiet --disable-pip-version-check -r "$src/requirements.lock"
# The project as a wheel, never editable: tasks import it from site-packages.
# No build isolation: setuptools comes from the lock, nothing is fetched.
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$wheels" "$src"
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheels"/coco_captions_tfx-*.whl
rm -rf "$wheels"
# Fails when the code needs something the environment lacks (run outside SOURCE_DIR).
cd /
TF_USE_LEGACY_KERAS=1 "$py" -c "import modules.preprocessing, modules.trainer, modules.evaluation, pipeline.components.csv_example_gen, pipeline.components.transform_executor, pipeline.components.image_example_gen, pipeline.components.evaluator, pipeline.components.pusher; print('coco-captions-tfx ok')"
