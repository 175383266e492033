"""The data path: video file -> frames of one clip -> model input.

`video` reads files (decoding only the frames asked for), `sampling` chooses frame indices
(DMVR/Scenic conventions), `transforms` turns uint8 frames into the float clips the models take.
Each module only calls the ones listed before it.
"""

from .sampling import multiview_clip_starts, sample_frame_indices, scenic_uniform_frame_indices
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
    "VideoDecoderMissingError",
    "VideoReader",
    "VideoWarning",
    "VideoEvalTransform",
    "VideoTrainTransform",
    "as_thwc",
    "create_transform",
    "multiview_clip_starts",
    "read_video",
    "resolve_data_config",
    "sample_frame_indices",
    "scenic_uniform_frame_indices",
]
