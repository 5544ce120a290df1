"""Image files to arrays: PNG, JPEG, TIFF (8 and 16 bit) and DICOM, one code path for every source.

`read_image` gives float32 [C, H, W] in [0, 1]; `load_resized` gives the uint8 [C, S, S] the cache keeps,
resized with antialiasing (PIL bilinear, as the official loader) before any quantisation.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
DECODER_HINT = "pip install 'medsagan[dicom]' (pylibjpeg and its JPEG and JPEG 2000 plugins; or python-gdcm)"
# Largest image read, in pixels (8192 x 8192): far above any radiograph or fundus photo, and small enough
# that a crafted file (a "decompression bomb": a few KB that decode to gigabytes) is refused unread.
MAX_PIXELS = 8192 * 8192
# A side below this holds no anatomy to learn from: such a file is a thumbnail, an icon or a broken export.
MIN_SIDE = 16
BAD_HINT = "fix or remove it, or pass --skip-bad"


def _check_pixels(path: Path, width: int, height: int, frames: int = 1) -> None:
    if min(width, height) < MIN_SIDE:
        raise DataError(
            f"{path}: {width} x {height} pixels, too small to be a medical image (at least {MIN_SIDE} on each "
            f"side, medsagan.data.readers.MIN_SIDE); {BAD_HINT}"
        )
    if width * height * frames > MAX_PIXELS:
        raise DataError(
            f"{path}: {width} x {height}{f' x {frames} frames' if frames > 1 else ''} pixels, over the limit of "
            f"{MAX_PIXELS:,} (medsagan.data.readers.MAX_PIXELS) that guards against decompression bombs; "
            f"downscale the image first, or {BAD_HINT}"
        )


def is_image_file(path: Path) -> bool:
    """A file medsagan can read by its suffix (hidden files are not)."""
    return path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def is_dicom(path: Path) -> bool:
    """DICOM by suffix, or for a file without a known suffix, by the DICM magic at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None


def _dicom_output_range(ds, pixels: np.ndarray) -> tuple[float, float]:
    """The range the VOI stage maps into (PS3.3 C.11.2); the image's own range when there is no VOI."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowWidth" in ds and "WindowCenter" in ds:
        if ds.get("ModalityLUTSequence"):
            low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        elif int(ds.PixelRepresentation) == 0:
            low, high = 0.0, float(2 ** int(ds.BitsStored) - 1)
        else:
            low, high = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is not None and intercept is not None:
            low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
        return low, high
    return float(pixels.min()), float(pixels.max())


def _dicom_pixels(source, name=None):
    """The dataset and pixel array of a DICOM file or file object; errors name `name` (default the path)."""
    path = name or source
    import pydicom

    try:
        ds = pydicom.dcmread(source)
    except Exception as err:
        raise DataError(f"{path}: not a readable DICOM file ({err}); {BAD_HINT}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: a DICOM file without pixel data (not an image); {BAD_HINT}")
    try:
        _check_pixels(path, int(ds.Columns), int(ds.Rows), int(ds.get("NumberOfFrames", 1) or 1))
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: DICOM image without valid Rows and Columns; {BAD_HINT}") from None
    try:
        pixels = ds.pixel_array
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and syntax.is_compressed:
            raise DataError(
                f"{path}: compressed DICOM ({syntax.name}) that no installed decoder can read; {DECODER_HINT}"
            ) from None
        raise DataError(f"{path}: DICOM pixel data cannot be decoded ({err}); {BAD_HINT}") from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # a multi-frame image: its first frame
    return ds, pixels


def read_dicom(path, name: str | None = None) -> np.ndarray:
    """DICOM display pipeline: modality LUT, then VOI LUT or window, then MONOCHROME1 inversion -> [H, W] in [0, 1].

    Colour DICOMs (RGB, YBR) are converted to grey luma.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space

    ds, pixels = _dicom_pixels(path if hasattr(path, "read") else Path(path), name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        grey = np.asarray(Image.fromarray(pixels.astype(np.uint8)).convert("L"), dtype=np.float32)
        return grey / 255.0
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds, prefer_lut=True).astype(np.float64)
    low, high = _dicom_output_range(ds, values)
    scaled = np.clip((values - low) / (high - low), 0, 1) if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)


def read_benchmark_dicom(path: str | Path) -> np.ndarray:
    """A DICOM as uint8 [H, W] by the Med-AD conversion recipe (DDAD-ASR data/preprocess_cxr.py).

    Raw pixels, MONOCHROME1 inverted as max - x, min-max to uint8 unless already uint8; no modality or VOI LUT.
    """
    ds, pixels = _dicom_pixels(Path(path))
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = pixels.max() - pixels
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float64)
        span = pixels.max() - pixels.min()
        pixels = (pixels - pixels.min()) / span * 255 if span > 0 else np.zeros_like(pixels)
        pixels = pixels.astype(np.uint8)
    return pixels


def _open(path, name: str | None = None) -> Image.Image:
    """Open and fully decode an image file (or file object); any failure is a DataError that names it."""
    source, path = path, name or path
    try:
        image = Image.open(source)
        _check_pixels(path, *image.size)
        image.load()
    except Image.DecompressionBombError:
        raise DataError(
            f"{path}: refused as a decompression bomb (far more pixels than its file size suggests); {BAD_HINT}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(f"{path}: unreadable or corrupt image ({err}); {BAD_HINT}") from None
    return image


def _float_from_pil(image: Image.Image) -> np.ndarray:
    """A high-bit-depth or float image to [0, 1] by its own min and max, as the benchmark treats non-8-bit data."""
    values = np.asarray(image, dtype=np.float64)
    span = values.max() - values.min()
    return ((values - values.min()) / span if span > 0 else np.zeros_like(values)).astype(np.float32)


def read_image(path: str | Path, channels: int = 1) -> np.ndarray:
    """Any supported file -> float32 [channels, H, W] in [0, 1]. Colour becomes grey luma when channels == 1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if is_dicom(path):
        plane = read_dicom(path)
        return np.repeat(plane[None], channels, axis=0)
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        plane = _float_from_pil(image)
        return np.repeat(plane[None], channels, axis=0)
    mode = "L" if channels == 1 else "RGB"
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """Float [H, W] in [0, 1] -> uint8 [size, size], PIL bilinear with antialiasing on the float values."""
    if plane.shape != (size, size):
        plane = np.asarray(Image.fromarray(plane.astype(np.float32)).resize((size, size), Image.BILINEAR))
    return np.clip(np.rint(plane * 255.0), 0, 255).astype(np.uint8)


def resize_uint8(array: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> uint8 [channels, size, size], as PIL convert + bilinear resize."""
    image = Image.fromarray(array)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    out = np.asarray(image, dtype=np.uint8)
    return out[None] if channels == 1 else out.transpose(2, 0, 1).copy()


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")


def from_array(array: np.ndarray, size: int, channels: int) -> np.ndarray:
    """An in-memory image -> uint8 [channels, size, size], the way a file with the same pixels is read.

    Takes [H, W], [H, W, C] or [C, H, W] with C = 1 or 3, uint8 or float in [0, 1]. uint8 goes through PIL as
    a decoded file does; float colour becomes grey by the same ITU-R 601 weights.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise DataError(
            f"an image array must be [H, W], [H, W, C] or [C, H, W] with 1 or 3 channels, not {array.shape}"
        )
    if array.dtype == np.uint8:
        return resize_uint8(array, size, channels)
    planes = np.clip(array.astype(np.float32), 0.0, 1.0)
    if planes.ndim == 2:
        planes = np.repeat(planes[None], channels, axis=0)
    elif channels == 1:
        planes = (planes @ LUMA)[None]
    else:
        planes = planes.transpose(2, 0, 1)
    return np.stack([resize_plane(plane, size) for plane in planes])


HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I", "F")
SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"BM": "BMP"}


def sniff(data: bytes) -> str | None:
    """The format of a file's bytes by their signature (DICOM by its preamble), or None."""
    if data[128:132] == b"DICM":
        return "DICOM"
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


def decode_bytes(data: bytes, name: str, size: int, channels: int) -> np.ndarray:
    """An uploaded file's bytes -> uint8 [channels, size, size], decoded in memory as load_resized decodes files."""
    import io

    if sniff(data) == "DICOM":
        planes = np.repeat(read_dicom(io.BytesIO(data), name)[None], channels, axis=0)
    else:
        image = _open(io.BytesIO(data), name)
        if image.mode not in HIGH_DEPTH:
            return resize_uint8(np.asarray(image.convert("L" if channels == 1 else "RGB")), size, channels)
        planes = np.repeat(_float_from_pil(image)[None], channels, axis=0)
    return np.stack([resize_plane(plane, size) for plane in planes])


def load_resized(path: str | Path, size: int, channels: int) -> np.ndarray:
    """A file -> uint8 [channels, size, size]. 8-bit files are resized by PIL exactly as the official loader."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not is_dicom(path):
        image = _open(path)
        if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
            return resize_uint8(np.asarray(image.convert("L" if channels == 1 else "RGB")), size, channels)
    planes = read_image(path, channels)
    return np.stack([resize_plane(plane, size) for plane in planes])
