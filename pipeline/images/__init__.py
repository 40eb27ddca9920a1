"""The image stage, a Beam job: caption rows + images -> one image-caption
record per caption (the image read once, resized to a square JPEG, the caption
cleaned by the transform's own function), with every image that cannot be used
counted by reason and written to a dead letter. `records` holds the stage's
constants and pure functions (license filter, image sources and reads, resizing,
tf.Example and Avro records, dead-letter lines, row parsing, the summary);
`transforms` holds the Beam steps built from them and `run`, the stage alone on
caption CSVs, which takes every setting as a value. Its callers are the command
line (`python -m pipeline.tools.images`) and the ImageExampleGen component
(`pipeline.components.image_example_gen`); this package may import `modules`,
the constants of `pipeline.settings`, `pipeline.artifacts.files` and
`pipeline.csv_input`, and never `pipeline.components`, `pipeline.orchestration`
or `pipeline.tools`.
"""
