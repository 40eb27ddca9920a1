"""The lines a local run ends with, from this run's own outputs in ML Metadata:
input checks, images, anomalies, the model and its quality, the Evaluator's
decision and what was pushed (a partial run shows what it made), and where
each component ran (a Flink run: each Beam stage's Flink job ids)."""

from typing import List

from pipeline.artifacts import files, metadata


def summary_lines(pipeline_root: str, metadata_file: str) -> List[str]:
  run = metadata.load_run(metadata_file)
  lines = [f'pipeline root: {pipeline_root}']
  if run.has('CsvExampleGen', 'examples'):
    examples = run.output('CsvExampleGen', 'examples')
    try:
      counts = files.input_counts(files.input_report(examples))
      lines.append(f'input:         {counts.rejected} rows rejected, {counts.repairs} repairs '
                   f'(listed in {files.input_report_path(examples)})')
    except files.MissingArtifact:
      pass   # TFX's own executor (COCO_EXAMPLEGEN=stock) writes no input report
  if run.has('ImageExampleGen', 'dead_letter'):
    try:
      summary = files.image_summary(run.output('ImageExampleGen', 'dead_letter'))
      lines.append(f'images:        {summary["summary"].split(": ", 1)[-1]}')
    except files.MissingArtifact:
      pass
  if run.has('ExampleValidator', 'anomalies'):
    found = files.anomalies(run.output('ExampleValidator', 'anomalies'))
    listed = '; '.join(f'{split}: {", ".join(items)}' for split, items in found.items() if items)
    lines.append(f'anomalies:     {listed or "none against the schema"}')
  if run.has('Trainer', 'model'):
    model = run.output('Trainer', 'model')
    lines.append(f'model:         {files.serving_dir(model)}')
    try:
      m = files.metrics(model)
      lines.append(
          f'quality:       eval perplexity {m["eval_perplexity"]:.2f} '
          f'(Kneser-Ney trigram {m["baselines"]["kneser_ney_trigram"]:.2f}, '
          f'unigram {m["baselines"]["unigram_add_one"]:.2f}; '
          f'ratio {m["ratio_to_kneser_ney_trigram"]:.2f})')
    except files.MissingArtifact:
      pass
  lines += evaluation_lines(run)
  lines += engine_lines(run)
  return lines


def engine_lines(run: metadata.Run) -> List[str]:
  """Where each component of this run that executed ran (none: all cached):
  one line per component with engine job ids, then one per engine for the rest."""
  ran = [r for r in run.components if r.engine]
  rows = [f'{r.component} on {r.engine}: job {", ".join(r.jobs)}' for r in ran if r.jobs]
  by_engine = {}
  for r in ran:
    if not r.jobs:
      by_engine.setdefault(r.engine, []).append(r.component)
  rows += [f'{", ".join(components)}: {engine}' for engine, components in by_engine.items()]
  return [('ran on:        ' if i == 0 else '               ') + row for i, row in enumerate(rows)]


def evaluation_lines(run: metadata.Run) -> List[str]:
  """The blessing in one line (why not, when not) and the push."""
  if not run.has('Evaluator', 'evaluation'):
    return []
  found = files.evaluation(run.output('Evaluator', 'evaluation'),
                           run.output('Evaluator', 'blessing'))
  lines = [f'evaluation:    {found.decision()}']
  if run.has('Pusher', 'pushed_model'):
    destination = run.pushed_destination()
    lines.append(f'pushed:        {destination or "nothing (the model was not blessed)"}')
  return lines
