"""Sizes, token ids and model defaults shared by preprocessing, training and
the pipeline that configures them.

Values a user may change per run (vocabulary size, tokens kept, batch size,
...) are only defaults here: the pipeline passes the run's values to
`preprocessing_fn` and `run_fn` as `custom_config` (part of each
component's cache key), see `pipeline.settings`.
"""

# ---------------------------------------------------------------- transform
VOCAB_SIZE = 5000            # top-k caption tokens kept; the rest share one OOV id
NUM_OOV_BUCKETS = 1
MAX_TOKENS = 16              # caption tokens kept per caption (pad/truncate)
VOCAB_NAME = 'caption_vocab'  # file name of the vocabulary in transform_output
IMAGE_SIZE = 128             # images are IMAGE_SIZE x IMAGE_SIZE (ImageExampleGen resizes)

# Model-side token ids: ids 0 and 1 are reserved, vocabulary ids start at 2.
PAD_ID = 0
BOUNDARY_ID = 1              # start-of-caption input and end-of-caption target
FIRST_WORD_ID = 2


def num_classes(vocab_size: int) -> int:
  """Output classes of the model for a vocabulary of `vocab_size` tokens."""
  return FIRST_WORD_ID + vocab_size + NUM_OOV_BUCKETS


# ---------------------------------------------------------------- trainer
# 1000 x 128 captions (about 8 passes over val2017's 16.6k train captions),
# trained on a sampled softmax in length-bucketed batches: each step costs
# about half of a full-softmax one (bench/results/trainer-ablation-2026-12-07.md).
TRAIN_STEPS = 1000
EVAL_STEPS = None            # None: score the whole eval split (exact perplexity)
# run_fn's hyperparameters; `custom_config` overrides any of them.
TRAINER_DEFAULTS = {
    'batch_size': 128,
    'embed_dim': 256,
    'gru_units': 256,
    'dropout': 0.4,               # on embeddings and GRU outputs
    'learning_rate': 8e-3,        # peak of a warm-up + cosine schedule
    'adam_beta_1': 0.85,          # Adam's first-moment decay (Keras' default 0.9)
    'warmup_steps': 100,
    'steps_per_epoch': 250,       # "epoch" = logging/eval interval, in steps
    'epoch_eval_captions': 1024,  # eval captions scored after each epoch (final: all)
    'patience': 2,                # epochs without a better eval loss before stopping
    'seed': 42,
    # >0: a sampled softmax of that many classes in training only (the export
    # and every perplexity keep the full one); bench/trainer_ablation.py.
    'sampled_softmax': 512,
    # The sampled classes are drawn in proportion to (train-split count + 1) to
    # this power; None: log-uniformly. modules/model.py, sampler_weights.
    'sampler_distortion': 1.0,
    'length_buckets': True,       # training batches of one length bucket, cut to it
    # Scoring mixes in a Kneser-Ney model of this order, fitted on the train
    # split, with this weight (0: the GRU alone); modules/model.py, CaptionLM.
    'kneser_ney_order': 4,
    'kneser_ney_weight': 0.18,
}
EVAL_BATCH = 512

# ---------------------------------------------------------------- export
SCORE_SIGNATURE = 'score_captions'     # raw caption strings -> scores
SERVING_SIGNATURE = 'serving_default'  # serialized tf.Examples -> scores
METRICS_FILE = 'metrics.json'          # the Trainer's metrics, next to Format-Serving
TRANSFORM_SIGNATURE = 'transformed_features'  # serialized tf.Examples -> slice features (TFMA)
IMAGE_SIGNATURE = 'decoded_images'     # serialized tf.Examples (JPEG bytes) -> pixels (images on)
# What both scoring signatures return per caption.
LOG_LIKELIHOOD_OUTPUT = 'log_likelihood'
PERPLEXITY_OUTPUT = 'perplexity'
PREDICTED_TOKENS_OUTPUT = 'num_predicted_tokens'
KNESER_NEY_OUTPUT = 'kneser_ney_trigram_perplexity'  # the Trainer's same-split baseline
# Evaluation slices by caption length in kept tokens: (upper bound, name).
LENGTH_BUCKETS = ((8, '<=8'), (12, '9-12'), (None, '>=13'))
