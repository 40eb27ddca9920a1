"""Reading what a run did: ML Metadata (`metadata`) and the files of its
artifacts (`files`); the artifact types of our own components (`types`);
whether the ML Metadata store can be used at all (`store_health`: damaged,
not SQLite, or locked by another writer).

`metadata` finds a run's executions and output artifacts; `files` is the one
module that knows how an artifact is laid out on disk (split directories,
examples, statistics, schema, anomalies, the vocabulary, the Trainer's
metrics and serving directory, ExampleGen's input report, ImageExampleGen's
summary). The run summary, the report, the scoring command, the benchmarks
and the tests all read through them.

May import: `modules` (feature keys, file names the Trainer writes), TFX and
ML Metadata. Nothing else of `pipeline` (the executors import this package
for the file names they write).
"""
