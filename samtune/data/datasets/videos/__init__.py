"""Videos, volumes and time-lapse sequences as datasets of :class:`~samtune.data.clip.Clip`.

``source`` (``VideoSource``: one video read frame by frame), ``sampling`` (``ClipSampling``:
SAM 2's training clips, keyed by seed, epoch and index), ``base`` (``ClipDataset``), and one file
per format: ``vos`` (DAVIS / MOSE / YouTube-VOS), ``frames`` (plain frame and label folders),
``volumes`` (every volume format, slices as frames) and ``ctc`` (Cell Tracking Challenge).
"""

from samtune.data.datasets.videos.base import ClipDataset
from samtune.data.datasets.videos.ctc import CtcDataset
from samtune.data.datasets.videos.frames import FramesDataset
from samtune.data.datasets.videos.sampling import ClipSampling
from samtune.data.datasets.videos.source import VideoSource
from samtune.data.datasets.videos.volumes import VolumeClipDataset
from samtune.data.datasets.videos.vos import VosDataset

__all__ = [
    "ClipDataset",
    "ClipSampling",
    "CtcDataset",
    "FramesDataset",
    "VideoSource",
    "VolumeClipDataset",
    "VosDataset",
]
