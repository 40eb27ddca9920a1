"""Custom TFX components and executors: what runs inside a component, on this
machine, in the component image on Kubeflow/Vertex and on Beam workers.

- `csv_example_gen`: CsvExampleGen with the input checks (the checking,
  pyarrow executor behind TFX's component; its limits come in custom_config);
- `transform_executor`: TFX's Transform with batched TFRecord I/O;
- `image_example_gen`: ImageExampleGen, the image stage as a component;
- `evaluator`: TFX's Evaluator, reusing the evaluation of a candidate that is
  its own baseline (a re-run with the Trainer cached);
- `pusher`: TFX's filesystem Pusher, idempotent for the newest version.

Executors subclass the stock ones and never read the environment: what they
need arrives as exec properties. May import `modules`, `pipeline.artifacts`,
`pipeline.csv_input` and `pipeline.images`.
"""
