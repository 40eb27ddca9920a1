"""Command-line tools: thin argparse wrappers; the work lives in the packages they call."""
