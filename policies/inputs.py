"""Camera frames -> the image tensor every policy takes: float32 (..., 3, H, W) in [0, 1]."""
import torch


def images_to_unit(images):
    """uint8 (..., H, W, 3) tensor -> float32 (..., 3, H, W) in [0, 1]; traced into exported graphs too."""
    return images.movedim(-1, -3).float() / 255


def image_to_tensor(images, device):
    """uint8 images (..., H, W, 3) (array or tensor) -> float32 (..., 3, H, W) in [0, 1] on `device`.

    Converted after the move so only uint8 crosses to the device; the result keeps channels-last
    strides, which convolutions run fastest on."""
    return images_to_unit(torch.as_tensor(images).to(device, non_blocking=True))
