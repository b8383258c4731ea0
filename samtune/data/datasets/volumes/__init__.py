"""Volume formats read next to NIfTI and DICOM (see :mod:`samtune.data.volumes`)."""
