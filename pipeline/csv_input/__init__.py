"""Reading and checking the caption CSVs: the one CSV reader of the project.

- `checks`: the header repairs and row checks (each problem names the file,
  the line and the column; rows are repaired or rejected, never dropped
  silently), the row-by-row reader that resynchronises after a bad quote;
- `reader`: `open_input`, the one way an input file is opened (a name ending
  in .gz is gzip-compressed CSV), pyarrow-parsed, checked blocks of a file,
  the first pass over the input (types as TFX infers them, duplicate ids
  across files), and `caption_rows` for the image stage's standalone command;
- `encode`: checked blocks -> serialized tf.Examples per split.

Used by the CsvExampleGen executor and the image stage. May import `modules`
and `pipeline.artifacts` (the names of what a check can do to a row).
"""
