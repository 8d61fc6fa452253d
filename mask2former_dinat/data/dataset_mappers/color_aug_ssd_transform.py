"""SSD-style photometric distortion (random brightness, contrast, saturation and hue), as the
published Mask2Former ADE20K / Cityscapes configs use with INPUT.COLOR_AUG_SSD."""
import cv2
import numpy as np
from fvcore.transforms.transform import NoOpTransform, Transform

__all__ = ["ColorAugSSDTransform"]


class ColorAugSSDTransform(Transform):
    """Photometric distortion of a uint8 [H, W, 3] image; geometry and labels are untouched.

    Each ``apply_image`` call draws new parameters (from numpy's global RNG): each step runs
    with probability 1/2 -- brightness (add U(-delta, delta)), then either contrast, saturation,
    hue or saturation, hue, contrast (1/2 each); contrast multiplies by U(low, high), saturation
    scales the HSV S channel by U(low, high), hue shifts the HSV H channel (0..179) by an integer
    in [-hue_delta, hue_delta]. Works in BGR; ``img_format`` says what the input is.
    """

    def __init__(
        self,
        img_format,
        brightness_delta=32,
        contrast_low=0.5,
        contrast_high=1.5,
        saturation_low=0.5,
        saturation_high=1.5,
        hue_delta=18,
    ):
        super().__init__()
        if img_format not in ("BGR", "RGB"):
            raise ValueError(f"ColorAugSSDTransform works on RGB or BGR images, not {img_format!r} (INPUT.FORMAT)")
        self._set_attributes(locals())
        self.is_rgb = img_format == "RGB"

    def apply_image(self, img, interp=None):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"ColorAugSSDTransform needs a uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
        if self.is_rgb:
            img = img[:, :, ::-1]
        img = self._brightness(img)
        if np.random.randint(2):
            img = self._hue(self._saturation(self._contrast(img)))
        else:
            img = self._contrast(self._hue(self._saturation(img)))
        if self.is_rgb:
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img)

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def inverse(self):
        return NoOpTransform()

    @staticmethod
    def _affine(img, alpha=1.0, beta=0.0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _brightness(self, img):
        if np.random.randint(2):
            return self._affine(img, beta=np.random.uniform(-self.brightness_delta, self.brightness_delta))
        return img

    def _contrast(self, img):
        if np.random.randint(2):
            return self._affine(img, alpha=np.random.uniform(self.contrast_low, self.contrast_high))
        return img

    def _saturation(self, img):
        if np.random.randint(2):
            hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = self._affine(hsv[:, :, 1], alpha=np.random.uniform(self.saturation_low, self.saturation_high))
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def _hue(self, img):
        if np.random.randint(2):
            hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV)
            shift = np.random.randint(-self.hue_delta, self.hue_delta + 1)
            hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img
