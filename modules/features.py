"""Every feature key, raw and transformed, in one place.

Raw features are the columns of the caption CSV (written by
`pipeline.tools.ingest`, read by CsvExampleGen) and, with images on, the
image features ImageExampleGen adds. Transformed features are what
`preprocessing_fn` outputs and the Trainer reads.
"""

# ---------------------------------------------------------------- raw
IMAGE_ID_KEY = 'image_id'
CAPTION_ID_KEY = 'id'
CAPTION_KEY = 'caption'
URL_KEY = 'url'
FILE_NAME_KEY = 'file_name'
LICENSE_KEY = 'license'
# The CSV's columns, in order.
RAW_COLUMNS = (IMAGE_ID_KEY, CAPTION_ID_KEY, CAPTION_KEY, URL_KEY, FILE_NAME_KEY, LICENSE_KEY)
# Features ImageExampleGen writes besides the caption and its ids.
IMAGE_KEY = 'image'                 # JPEG bytes, IMAGE_SIZE x IMAGE_SIZE x 3
IMAGE_HEIGHT_KEY = 'image_height'
IMAGE_WIDTH_KEY = 'image_width'

# ---------------------------------------------------------------- transformed
TOKEN_IDS_KEY = 'token_ids'
NUM_TOKENS_KEY = 'num_tokens'
LENGTH_RATIO_KEY = 'length_ratio'   # caption length / mean length (full pass)
TRANSFORMED_IMAGE_ID_KEY = 'image_id'
TRANSFORMED_CAPTION_ID_KEY = 'caption_id'
TRANSFORMED_IMAGE_KEY = 'image'     # the JPEG bytes, still encoded (images on; see preprocessing_fn)

# ---------------------------------------------------------------- evaluation slices
# What the exported `transformed_features` signature returns for TFMA's slicing
# (the license slice is the raw LICENSE_KEY column).
LENGTH_BUCKET_KEY = 'length_bucket'  # a constants.LENGTH_BUCKETS name per caption
