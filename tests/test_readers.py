import numpy as np
import pytest
from PIL import Image

from helpers import write_dicom, write_png
from medsagan.data.readers import load_resized, read_benchmark_dicom, read_dicom, read_image
from medsagan.errors import DataError


def ramp16(bits: int = 12) -> np.ndarray:
    return np.linspace(0, 2**bits - 1, 64 * 64).reshape(64, 64).astype(np.uint16)


def test_png_grey_and_rgb(tmp_path):
    grey = write_png(tmp_path / "g.png", 51)
    assert np.allclose(read_image(grey), 0.2)
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "c.png")
    as_grey = read_image(tmp_path / "c.png")
    assert as_grey.shape == (1, 16, 16) and np.allclose(as_grey, 76 / 255, atol=1 / 255)  # ITU-R 601 luma
    kept = read_image(tmp_path / "c.png", channels=3)
    assert kept.shape == (3, 16, 16) and np.allclose(kept[0], 1) and np.allclose(kept[1:], 0)


def test_jpeg_and_sixteen_bit_tiff(tmp_path):
    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8)).save(tmp_path / "a.jpg", quality=95)
    assert abs(read_image(tmp_path / "a.jpg").mean() - 200 / 255) < 0.01
    Image.fromarray(ramp16()).save(tmp_path / "r.tif")
    image = read_image(tmp_path / "r.tif")
    assert image.min() == 0 and image.max() == 1  # high bit depth: min-max, as the benchmark recipe
    resized = load_resized(tmp_path / "r.tif", 16, 1)
    assert resized.shape == (1, 16, 16) and resized.dtype == np.uint8
    assert resized[0, 0, 0] < 10 and resized[0, -1, -1] > 245


def test_resize_is_antialiased_like_pil_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    path = write_png(tmp_path / "n.png", array)
    expected = np.asarray(Image.fromarray(array).resize((32, 32), Image.BILINEAR))
    assert np.array_equal(load_resized(path, 32, 1)[0], expected)
    assert load_resized(path, 32, 1).std() < array.std() / 2  # averaging, not point sampling


def test_dicom_monochrome2_sixteen_bit_without_window_is_min_max(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", ramp16(), bits_stored=12)
    image = read_dicom(path)
    assert image.dtype == np.float32 and image.min() == 0 and image.max() == 1
    assert image[0, 0] < image[-1, -1]


def test_dicom_monochrome1_is_inverted(tmp_path):
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp16(), bits_stored=12))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp16(), "MONOCHROME1", bits_stored=12))
    assert np.allclose(m1, 1 - m2)


def test_dicom_window_is_applied_before_scaling(tmp_path):
    pixels = ramp16()
    image = read_dicom(write_dicom(tmp_path / "w.dcm", pixels, bits_stored=12, window=(1024, 512)))
    assert np.all(image[pixels <= 767] == 0)
    assert np.all(image[pixels >= 1281] == 1)
    middle = image[(pixels > 1000) & (pixels < 1050)]
    assert np.all((middle > 0.4) & (middle < 0.6))


def test_dicom_modality_lut_comes_before_the_window(tmp_path):
    pixels = ramp16()
    # Stored values v become 2v - 1000; a window centred on 1048 then sees stored value 1024 at its centre.
    image = read_dicom(
        write_dicom(tmp_path / "r.dcm", pixels, bits_stored=12, window=(1048, 512), rescale=(2.0, -1000.0))
    )
    centre = image[np.abs(pixels.astype(int) - 1024) < 8]
    assert np.all((centre > 0.4) & (centre < 0.6))


def test_dicom_eight_bit_monochrome1(tmp_path):
    pixels = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    image = read_dicom(write_dicom(tmp_path / "e.dcm", pixels, "MONOCHROME1"))
    assert image[0, 0] == 1 and image[0, -1] == 0


def test_compressed_dicom_without_decoder_names_file_and_package(tmp_path):
    path = write_dicom(tmp_path / "c.dcm", ramp16(), compressed=True)
    with pytest.raises(DataError, match=r"c\.dcm.*JPEG 2000.*medsagan\[dicom\]"):
        read_dicom(path)


def test_benchmark_recipe_inverts_with_max_minus_x_and_min_max_scales(tmp_path):
    pixels = ramp16()
    out = read_benchmark_dicom(write_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME1", bits_stored=12, window=(100, 50)))
    assert out.dtype == np.uint8 and out[0, 0] == 255 and out[-1, -1] == 0  # no VOI window in the recipe


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"broken\.png: unreadable or corrupt image.*--skip-bad"):
        read_image(bad)
    with pytest.raises(DataError, match=r"nothere\.png: file not found"):
        load_resized(tmp_path / "nothere.png", 16, 1)


@pytest.mark.parametrize("side", [1, 8])
def test_an_image_too_small_to_hold_anatomy_is_refused_by_name(tmp_path, side):
    Image.new("L", (side, side), 128).save(tmp_path / "icon.png")
    with pytest.raises(DataError, match=rf"icon\.png: {side} x {side} pixels, too small .*--skip-bad"):
        load_resized(tmp_path / "icon.png", 64, 1)
