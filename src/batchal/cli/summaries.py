"""The commands' one-line summaries, in the order `batchal --help` lists them: the one home of these
strings, read by each command's parser and by the top-level help, which is built without importing
the commands (and PyTorch)."""

SUMMARIES = {
    'run': 'simulate active learning on a data set (no arguments: the built-in demonstration)',
    'compare': 'does active learning pay on your data? strategies x seeds against random, with a verdict',
    'score': 'score a pool (images, .npy or Parquet) shard by shard into Parquet, in-process or on Ray',
    'select': "select a batch from a scored folder (batchal score's output)",
    'datasets': 'list the data sets and where their files are',
    'strategies': 'list the acquisition strategies with their formulas and options',
    'report': 'plots and a Markdown summary of finished runs',
    'label': 'label real images in a browser, batch by batch, as the model asks',
    'label-studio': 'serve a labelling project to Label Studio as its ML backend (batch-aware ranking)',
}
