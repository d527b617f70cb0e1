"""Dynamic partitions: one per text file and one per label file, keyed by file name."""

import dagster as dg

text_batches = dg.DynamicPartitionsDefinition(name="text_batches")
label_batches = dg.DynamicPartitionsDefinition(name="label_batches")
