"""One datamodule per data format, on the shared :class:`~samtune.data.datamodule.SamDataModule`."""
