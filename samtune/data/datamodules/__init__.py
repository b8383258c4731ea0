"""Lightning datamodules: the shared base and one module per dataset format."""
