"""Preprocessing: the Beam job that turns raw corpora into tokenized TFRecord shards."""
