"""The HTML report of one pipeline run: `charts` (colours, number formatting
and the inline SVG charts), `fragments` (the CSS, the page and one HTML
fragment per section; like `charts`, pure: data in, markup out) and `build`
(reading a run's artifacts through ML Metadata and assembling the page:
`report_of`, `build_report`, `write_report`); the command line is
`python -m pipeline.tools.report`. May import `modules`, `pipeline.artifacts`,
`pipeline.settings` and `pipeline.pipeline` (only for SPLIT_BUCKETS); nothing
from `pipeline.orchestration`, `pipeline.tools` or `pipeline.components`.
"""

from pipeline.artifacts.files import MissingArtifact
from pipeline.artifacts.metadata import Run
from pipeline.report.build import (REPORT_CAPTIONS, Report, build_report, report_of,
                                   transform_max_tokens, write_report)
from pipeline.report.charts import COLOURS, nice_ticks, svg_hbars, svg_histogram, svg_line_chart
from pipeline.report.fragments import (REPORT_MAX_LENGTH, REPORT_TOP_TOKENS, anomalies_fragment,
                                       captions_fragment, components_fragment, header_fragment,
                                       input_fragment, length_histogram, lengths_fragment,
                                       missing_fragment, page, perplexity_fragment,
                                       schema_fragment, sources_fragment, statistics_fragment,
                                       training_fragment, vocabulary_fragment)

__all__ = [
    'COLOURS', 'MissingArtifact', 'REPORT_CAPTIONS', 'REPORT_MAX_LENGTH', 'REPORT_TOP_TOKENS',
    'Report', 'Run', 'anomalies_fragment', 'build_report', 'captions_fragment',
    'components_fragment', 'header_fragment', 'input_fragment', 'length_histogram',
    'lengths_fragment', 'missing_fragment', 'nice_ticks', 'page', 'perplexity_fragment',
    'report_of', 'schema_fragment', 'sources_fragment', 'statistics_fragment', 'svg_hbars',
    'svg_histogram', 'svg_line_chart', 'training_fragment', 'transform_max_tokens',
    'vocabulary_fragment', 'write_report',
]
