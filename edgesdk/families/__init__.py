"""Model families: what is specific to a kind of model (text encoders today; images and raw tensors next).

A family knows its inputs, how to make example and calibration feeds, and the model rewrites that converters need
(e.g. BERT's finite attention mask for TFLite). Backends call a family through the small interface of
`SourceModel.family` and never assume a model kind themselves.
"""
