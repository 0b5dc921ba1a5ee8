"""LeRobot's video encoding: its encoder settings, and mp4 files that hold episodes one after the other."""
import os

import numpy as np

from formats.lerobot import CRF, FALLBACK_VCODEC, GOP, PIX_FMT, SVTAV1_PRESET, VIDEO_CODEC, LeRobotFormatError


def available_vcodec(vcodec=None):
    """The encoder to use: `vcodec` if PyAV has it (else an error listing the choice), by default
    LeRobot's AV1 encoder, or H.264 where it is missing."""
    import av
    wanted = [vcodec] if vcodec else [VIDEO_CODEC, FALLBACK_VCODEC]
    for name in wanted:
        try:
            return av.codec.Codec(name, 'w').name
        except (av.error.FFmpegError, ValueError):
            continue
    raise LeRobotFormatError(f'--vcodec {vcodec}: PyAV has no such encoder here (try {VIDEO_CODEC} or '
                             f'{FALLBACK_VCODEC})')


def encoder_options(vcodec):
    options = {'g': str(GOP)}
    if vcodec in ('libsvtav1', 'libx264', 'h264', 'hevc', 'libx265', 'libaom-av1'):
        options['crf'] = str(CRF)
    if vcodec == 'libsvtav1':
        options['preset'] = str(SVTAV1_PRESET)
    return options


def encode_video(path, frames, fps, vcodec):
    """frames (T, H, W, 3) uint8 -> an mp4 at `path` (LeRobot's encoder settings), timestamps t / fps."""
    import av
    os.environ.setdefault('SVT_LOG', '1')  # the AV1 encoder prints its configuration otherwise
    with av.open(path, 'w') as container:
        stream = container.add_stream(vcodec, rate=fps, options=encoder_options(vcodec))
        stream.pix_fmt, stream.height, stream.width = PIX_FMT, frames.shape[1], frames.shape[2]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')))
        container.mux(stream.encode())


class VideoFile:
    """One mp4 holding episodes one after the other, as LeRobot concatenates them: each episode is
    encoded alone (starting on a keyframe) and its packets copied in, shifted to follow the
    previous episode's; `count` frames so far, `bytes` their encoded size."""

    def __init__(self, path, fps, vcodec):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.fps, self.vcodec = path, fps, vcodec
        self.count, self.bytes, self.container, self.stream = 0, 0, None, None

    def write(self, frames):
        import av
        part = os.path.join(os.path.dirname(self.path), f'.episode.{os.getpid()}.mp4')
        encode_video(part, frames, self.fps, self.vcodec)
        try:
            with av.open(part) as source:
                stream = source.streams.video[0]
                if self.container is None:
                    self.container = av.open(self.path, 'w')
                    self.stream = self.container.add_stream_from_template(stream, opaque=True)
                    self.stream.time_base = stream.time_base
                offset = round(self.count / self.fps / stream.time_base)
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    packet.stream = self.stream
                    self.bytes += packet.size
                    self.container.mux(packet)
        finally:
            os.remove(part)
        self.count += len(frames)

    def close(self):
        if self.container is not None:
            self.container.close()
