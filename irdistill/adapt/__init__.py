"""Unsupervised domain adaptation of sparse retrievers: MLM on the domain part (embeddings and
lower layers) and recombination with a task part trained on a labelled source. See
:mod:`irdistill.adapt.recipe`."""
