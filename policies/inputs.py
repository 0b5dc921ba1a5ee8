"""Camera frames -> the image tensor every policy takes: float32 (..., 3, H, W) in [0, 1]; and an
observation history -> the inputs of one query."""
import torch


def images_to_unit(images):
    """uint8 (..., H, W, 3) tensor -> float32 (..., 3, H, W) in [0, 1]; traced into exported graphs too."""
    return images.movedim(-1, -3).float() / 255


def image_to_tensor(images, device):
    """uint8 images (..., H, W, 3) (array or tensor) -> float32 (..., 3, H, W) in [0, 1] on `device`.

    Converted after the move so only uint8 crosses to the device; the result keeps channels-last
    strides, which convolutions run fastest on."""
    return images_to_unit(torch.as_tensor(images).to(device, non_blocking=True))


def history_inputs(history):
    """[(qpos (1, S), image (1, K, 3, H, W)), ...] oldest first -> one query's inputs: the pair itself
    for one observation, else qpos (1, To, S) and image (1, To, K, 3, H, W) stacked on a time axis."""
    if len(history) == 1:
        return history[0]
    return (torch.stack([q for q, _ in history], dim=1), torch.stack([im for _, im in history], dim=1))
