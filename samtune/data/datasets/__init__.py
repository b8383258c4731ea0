"""One dataset class per data format, each returning :class:`~samtune.data.sample.Sample`."""
