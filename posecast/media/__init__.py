"""Reading images, videos and audio; writing MP4. Every ffmpeg call lives in `ffmpeg.py`."""

from posecast.media.audio import AudioClip, load_audio
from posecast.media.ffmpeg import Mp4Stream, VideoInfo, iter_video_frames, probe_video, write_mp4
from posecast.media.image import load_image, load_portrait, save_image

__all__ = ["AudioClip", "Mp4Stream", "VideoInfo", "iter_video_frames", "load_audio", "load_image",
           "load_portrait", "probe_video", "save_image", "write_mp4"]
