"""Installs the pipeline (`pipeline`) and its module-file code (`modules`).

Used three ways: editable in the dev venv (tools/bootstrap.sh), by Dataflow
workers via `--setup_file`, and in the component image (`pip install --no-deps .`).
Dependencies are pinned in requirements.lock, not here, so installing this
package never changes the TensorFlow/TFX that an image or venv already has.
"""

import setuptools

setuptools.setup(
    name='coco-captions-tfx',
    version='0.1.0',
    description='TFX pipeline for MSCOCO image captions: preprocessing with Beam, a caption LM.',
    license='Apache-2.0',
    python_requires='>=3.9,<3.11',
    packages=setuptools.find_packages(include=['pipeline', 'pipeline.*', 'modules']),
    entry_points={'console_scripts': [
        'coco-ingest=pipeline.tools.ingest:main',
        'coco-score=pipeline.tools.score:main',
        'coco-report=pipeline.tools.report:main',
        'coco-images=pipeline.tools.images:main',
        'coco-submit=pipeline.tools.submit:main',
    ]},
)
