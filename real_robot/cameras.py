"""Cameras: one background grabber thread per camera that always hands out the newest frame.

A Camera wraps a *source* whose read() blocks until the next frame (RGB uint8 (H, W, 3)) and
returns it, or None on a failed grab. Sources: OpenCV / V4L2 devices, ROS image topics (with the
Interbotix driver), generated test patterns (set a device to 'test_pattern' in settings to run
without cameras), and the simulator's renderer.
"""
import glob
import os
import threading
import time

import numpy as np

from real_robot import settings
from real_robot.bots import RobotFault

LIST_CAMERAS_HINT = ('list video devices with `v4l2-ctl --list-devices` or `ls -l /dev/video* /dev/CAM_*` '
                     '(ALOHA udev rules name them /dev/CAM_*)')
TEST_PATTERN = 'test_pattern'  # device name that selects GeneratedSource


class CameraError(RobotFault):
    """A camera is missing, cannot be opened, or stopped delivering frames."""


class Camera:
    """Newest-frame grabber. latest() -> (frame (H, W, 3) uint8 RGB or None, monotonic time of it)."""

    def __init__(self, name, source):
        self.name, self.source = name, source
        self._frame, self._stamp = None, time.monotonic()  # age of "no frame yet" counts from opening
        self.error = None  # exception that stopped the grabber thread
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._grab, name=f'camera {name}', daemon=True)
        self._thread.start()

    def _grab(self):
        while self._running:
            try:
                frame = self.source.read()
            except Exception as e:  # reported by whoever finds the frames stale
                self.error = e
                return
            if frame is None:
                time.sleep(0.001)
                continue
            with self._lock:
                self._frame, self._stamp = frame, time.monotonic()

    @property
    def device(self):
        return self.source.device

    def latest(self):
        with self._lock:
            return self._frame, self._stamp

    def wait_first_frame(self, timeout):
        deadline = time.monotonic() + timeout
        while self.latest()[0] is None:
            if time.monotonic() > deadline:
                raise CameraError(f"camera '{self.name}' ({self.device}) gave no frame within "
                                  f'{timeout:.1f} s; {LIST_CAMERAS_HINT}')
            time.sleep(0.005)

    def close(self):
        self._running = False
        self.source.close()
        self._thread.join(timeout=0.5)


class CameraSet:
    """The cameras of a robot: get_images() -> {name: newest frame}, checked for freshness."""

    def __init__(self, cameras):
        self.cameras = dict(cameras)  # name -> Camera

    def get_images(self):
        """Newest frame of each camera; waits (the arms holding their goals) while a frame is older
        than CAMERA_STALE_S, and raises CameraError once it is older than CAMERA_TIMEOUT_S."""
        images = {}
        for name, camera in self.cameras.items():
            while True:
                frame, stamp = camera.latest()
                age = time.monotonic() - stamp
                if frame is not None and age <= settings.CAMERA_STALE_S:
                    images[name] = frame
                    break
                if age > settings.CAMERA_TIMEOUT_S:
                    raise CameraError(_stall_message(name, camera, frame, age))
                time.sleep(0.002)
        return images

    def close(self):
        for camera in self.cameras.values():
            camera.close()


def _stall_message(name, camera, frame, age):
    what = 'gave no frame' if frame is None else 'gave no new frame'
    cause = f'; its grabber failed: {camera.error!r}' if camera.error else ''
    return (f"camera '{name}' ({camera.device}) stalled: {what} for {age:.2f} s (CAMERA_TIMEOUT_S = "
            f'{settings.CAMERA_TIMEOUT_S} s){cause}; check its USB cable, power and hub bandwidth')


class OpenCVSource:
    """A V4L2 camera through OpenCV, converted to RGB."""

    def __init__(self, name, device, hw=None, fps=None):
        import cv2
        self._cv2 = cv2
        self.device = device
        if isinstance(device, str) and not os.path.exists(device):
            present = ', '.join(sorted(glob.glob('/dev/CAM_*') + glob.glob('/dev/video*'))) or 'none'
            raise CameraError(f"camera '{name}': device {device} not found (present: {present}); "
                              f'{LIST_CAMERAS_HINT}, then set CAMERA_DEVICES in real_robot/settings.py')
        self._capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not self._capture.isOpened():
            raise CameraError(f"camera '{name}': cannot open {device} (busy or not a camera?); {LIST_CAMERAS_HINT}")
        height, width = hw or settings.CAMERA_HW
        self._capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*settings.CAMERA_FOURCC))
        self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._capture.set(cv2.CAP_PROP_FPS, fps or settings.CAMERA_FPS)
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def read(self):
        ok, frame = self._capture.read()
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB) if ok else None

    def close(self):
        self._capture.release()


class GeneratedSource:
    """Synthetic frames at a fixed rate: a gradient that moves with the frame counter, which is
    also written into the first pixel row (little-endian bytes) so tests can tell frames apart."""
    device = TEST_PATTERN

    def __init__(self, hw=None, fps=None, seed=0):
        self.hw = hw or settings.CAMERA_HW
        self.period = 1.0 / (fps or settings.CAMERA_FPS)
        self.count = 0
        self.stalled = threading.Event()  # set() to freeze the camera (as a hung USB camera does)
        self._closed = threading.Event()
        height, width = self.hw
        tint = np.random.default_rng(seed).integers(0, 256, size=3, dtype=np.uint8)
        gradient = (np.add.outer(np.arange(height), np.arange(width + 256)) % 256).astype(np.uint8)
        self._tile = gradient[..., None] ^ tint  # (H, W + 256, 3): frame k is a window shifted by k

    def read(self):
        if self._closed.wait(self.period) or self.stalled.is_set():
            return None
        self.count += 1
        shift = self.count % 256
        frame = self._tile[:, shift:shift + self.hw[1]].copy()  # (H, W, 3)
        frame[0, :8, 0] = np.frombuffer(self.count.to_bytes(8, 'little'), dtype=np.uint8)
        return frame

    def close(self):
        self._closed.set()


class RosImageSource:
    """A sensor_msgs/Image topic (usb_cam publishes rgb8) with the Interbotix driver."""

    def __init__(self, topic):
        import rospy
        from sensor_msgs.msg import Image
        self.device = topic
        self._frame = None
        self._new = threading.Condition()
        self._subscriber = rospy.Subscriber(topic, Image, self._callback, queue_size=1)

    def _callback(self, msg):
        frame = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, -1)[..., :3]
        if msg.encoding == 'bgr8':
            frame = frame[..., ::-1]
        with self._new:
            self._frame = np.ascontiguousarray(frame)
            self._new.notify()

    def read(self):
        with self._new:
            self._new.wait(timeout=0.1)
            frame, self._frame = self._frame, None
        return frame

    def close(self):
        self._subscriber.unregister()


def open_camera(name, device=None):
    """A started Camera for a device path or index from settings.CAMERA_DEVICES (or TEST_PATTERN)."""
    device = settings.CAMERA_DEVICES[name] if device is None else device
    source = GeneratedSource() if device == TEST_PATTERN else OpenCVSource(name, device)
    camera = Camera(name, source)
    camera.wait_first_frame(settings.CAMERA_OPEN_TIMEOUT_S)
    return camera
