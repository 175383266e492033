"""The data path: video file -> frames of one clip -> model input.

`video` reads files (decoding only the frames asked for) through its two sources
(`_pyav_source`, `_array_source`, which share `_source`), `sampling` chooses frame indices
(DMVR/Scenic conventions by index, or by presentation time; sliding windows), `transforms` turns
uint8 frames into the float clips the models take (`_resample` resizes only what a crop needs),
`datasets` serves whole labelled sets to a DataLoader. Arrows point one way: `datasets` ->
`transforms` -> `sampling`, `datasets` -> `video` -> sources -> `_source`; nothing here imports
from outside `vivit.data` except the install hint (`vivit._install`).
"""

from .augment import ColorAugment, RandAugment
from .datasets import (
    SkippedVideoWarning,
    VideoDataset,
    VideoRecord,
    collate_videos,
    find_videos,
    read_video_list,
)
from .mixup import Mixup
from .sampling import (
    multiview_clip_starts,
    sample_frame_indices,
    sample_frame_indices_by_time,
    scenic_uniform_frame_indices,
    sliding_windows,
    sliding_windows_by_time,
    view_frame_indices,
    view_frame_indices_by_time,
    window_seconds,
)
from .transforms import (
    DEFAULT_DATA_CFG,
    VideoEvalTransform,
    VideoTrainTransform,
    as_thwc,
    create_transform,
    resolve_data_config,
)
from .video import (
    DEFAULT_MAX_ARRAY_BYTES,
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_TIMEOUT,
    VideoDecoderMissingError,
    VideoReader,
    VideoWarning,
    read_video,
)

__all__ = [
    "DEFAULT_DATA_CFG",
    "DEFAULT_MAX_ARRAY_BYTES",
    "DEFAULT_MAX_ASPECT_RATIO",
    "DEFAULT_MAX_FRAME_PIXELS",
    "DEFAULT_TIMEOUT",
    "ColorAugment",
    "Mixup",
    "RandAugment",
    "SkippedVideoWarning",
    "VideoDataset",
    "VideoDecoderMissingError",
    "VideoEvalTransform",
    "VideoReader",
    "VideoRecord",
    "VideoTrainTransform",
    "VideoWarning",
    "as_thwc",
    "collate_videos",
    "create_transform",
    "find_videos",
    "multiview_clip_starts",
    "read_video",
    "read_video_list",
    "resolve_data_config",
    "sample_frame_indices",
    "sample_frame_indices_by_time",
    "scenic_uniform_frame_indices",
    "sliding_windows",
    "sliding_windows_by_time",
    "view_frame_indices",
    "view_frame_indices_by_time",
    "window_seconds",
]
