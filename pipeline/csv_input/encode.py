"""Checked CSV blocks -> serialized tf.Examples per split, as TFX writes them.

Each text column becomes a list column of its inferred TFX type (an empty
cell an empty feature, as stock CsvExampleGen writes it) and tfx_bsl's
record-batch encoder serializes the rows; each row goes to the split TFX's
own hash of the partition feature picks.
"""

import bisect
import dataclasses
import hashlib
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tfx_bsl.coders import example_coder

from modules import features
from pipeline.csv_input import checks
from pipeline.csv_input.reader import (ColumnType, CsvFormatError, FileSummary, Plan, Problem,
                                       checked_blocks, scanned_blocks)


def _typed_column(column: pa.Array, kind: int) -> pa.Array:
  """One text column -> list column of its TFX type; '' -> empty list
  (stock CsvExampleGen writes a typed, empty feature for an empty cell), and
  a never-filled (UNKNOWN) column -> null, i.e. a feature with no kind."""
  if kind == ColumnType.UNKNOWN:
    return pa.nulls(len(column), pa.large_list(pa.large_binary()))
  present = pc.not_equal(column, '')
  offsets = np.concatenate([[0], np.cumsum(present.to_numpy(zero_copy_only=False),
                                           dtype=np.int64)])
  values = column.filter(present)
  if kind == ColumnType.STRING:
    values = values.cast(pa.large_binary())
  else:
    python_type, arrow_type = ((int, pa.int64()) if kind == ColumnType.INT
                               else (float, pa.float64()))
    try:
      values = values.cast(arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. ' 12', '1_000'
      values = pa.array([python_type(v) for v in values.to_pylist()], arrow_type)
    if kind == ColumnType.FLOAT:
      values = values.cast(pa.float32())  # FloatList holds float32, as float() -> proto
  return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def partition_index(value: Any, kind: int, buckets: Sequence[int]) -> int:
  """TFX's split assignment (base_example_gen_executor._PartitionFn)."""
  if kind == ColumnType.INT:
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
  else:
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
  key = feature.SerializeToString(deterministic=True)
  return bisect.bisect(buckets, int(hashlib.sha256(key).hexdigest(), 16) % buckets[-1])


@dataclasses.dataclass
class EncodedBlock:
  """What one block of a file gives: its serialized tf.Examples by split
  index, the problems found in it (rows with one are left out), and how many
  of its captions have more words than the model reads."""
  examples: Dict[int, List[bytes]] = dataclasses.field(default_factory=dict)
  problems: List[Problem] = dataclasses.field(default_factory=list)
  long_captions: int = 0


def encode_file(summary: FileSummary, plan: Plan, partition_feature: str,
                buckets: Sequence[int], max_tokens: int) -> Iterator[EncodedBlock]:
  """Second pass over one file, block by block. Rows with problems and later
  duplicates of a caption id are left out, each with its Problem."""
  header = summary.header
  if header is None:
    yield EncodedBlock(problems=[Problem(summary.path, 1, '', 'empty file skipped',
                                         checks.REPAIRED)])
    return
  yield EncodedBlock(problems=list(header.problems))
  kind = plan.types[partition_feature]
  if kind not in (ColumnType.INT, ColumnType.STRING):
    raise CsvFormatError(f'{summary.path}: partition column {partition_feature!r} has no values')
  scan = summary.scan or bool(plan.duplicates and np.isin(
      summary.ids, np.fromiter(plan.duplicates, np.int64)).any())
  blocks = (scanned_blocks(summary.path, header) if scan
            else ((b, None, []) for b in checked_blocks(summary.path, header)))
  id_index = header.columns.index(features.CAPTION_ID_KEY)
  encoder = example_coder.RecordBatchToExamplesEncoder()
  split_of: Dict[str, int] = {}
  position = 0
  for block, lines, problems in blocks:
    problems = list(problems)
    if scan and plan.duplicates:
      keep = []
      for k, value in enumerate(block.column(id_index).to_pylist()):
        kept_at = plan.duplicates.get(int(value))
        keep.append(kept_at is None or kept_at == (summary.index, position + k))
        if not keep[-1]:
          problems.append(Problem(summary.path, lines[k], features.CAPTION_ID_KEY,
                                  f'duplicate caption id {value}; the first occurrence, '
                                  f'in {plan.files[kept_at[0]].path}, is kept'))
      position += block.num_rows
      block = block.filter(pa.array(keep, pa.bool_()))
    encoded = EncodedBlock(problems=problems, long_captions=long_captions(
        block.column(header.columns.index(features.CAPTION_KEY)), max_tokens))
    keys = block.column(header.columns.index(partition_feature)).to_pylist()
    typed = pa.RecordBatch.from_arrays(
        [_typed_column(col, plan.types[name]) for name, col in zip(header.columns, block.columns)],
        header.columns)
    for key, example in zip(keys, encoder.encode(typed)):
      if key not in split_of:
        split_of[key] = partition_index(key, kind, buckets)
      encoded.examples.setdefault(split_of[key], []).append(example)
    yield encoded


def long_captions(captions: pa.Array, max_tokens: int) -> int:
  """Captions with more words than the model reads (Transform truncates them)."""
  words = pc.add(pc.count_substring_regex(pc.utf8_trim_whitespace(captions), r'\s+'), 1)
  return int(pc.sum(pc.greater(words, max_tokens)).as_py() or 0)
