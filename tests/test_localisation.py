"""Localisation: pixel metrics against masks and boxes, the published box formats, and `evaluate --masks`."""

import json

import numpy as np
import pytest
from PIL import Image

from helpers import make_folder_dataset, tiny_config, write_png
from medsagan.cli import main
from medsagan.data.sources import SyntheticSource
from medsagan.errors import DataError
from medsagan.evaluate.ground_truth import GroundTruth, box_masks, read_boxes, with_normals
from medsagan.evaluate.localisation import aupro, localisation, pro_curve, top_region
from medsagan.train import fit


def cli(capsys, *args) -> int:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def squares(n_abnormal=4, n_normal=4, size=16):
    masks = np.zeros((n_abnormal + n_normal, size, size), dtype=bool)
    for i in range(n_abnormal):
        row = 2 + i % (size - 6)
        masks[i, row : row + 4, 3:8] = True
    labels = np.array([1] * n_abnormal + [0] * n_normal)
    return masks, labels


def test_a_map_that_is_the_mask_scores_perfectly_and_its_inverse_scores_nothing():
    masks, labels = squares()
    rng = np.random.default_rng(0)
    maps = masks + rng.uniform(0, 0.1, masks.shape)
    every = np.ones(len(labels), dtype=bool)
    perfect = localisation(maps, masks, every, labels, pixel_threshold=0.5)
    assert perfect.pixel_auroc == 1.0 and perfect.pointing_game == 1.0
    assert perfect.aupro == pytest.approx(1.0, abs=1e-3)
    assert perfect.dice == 1.0 and perfect.iou == 1.0 and perfect.regions == 4
    inverse = localisation(-maps, masks, every, labels, pixel_threshold=None)
    assert inverse.pixel_auroc == 0.0 and inverse.pointing_game == 0.0 and inverse.aupro == pytest.approx(0.0)
    assert inverse.dice is None


def test_a_random_map_scores_chance():
    masks, labels = squares(40, 40, 32)
    maps = np.random.default_rng(1).uniform(size=masks.shape)
    result = localisation(maps, masks, np.ones(80, dtype=bool), labels, None)
    assert result.pixel_auroc == pytest.approx(0.5, abs=0.02)
    assert result.aupro == pytest.approx(0.15, abs=0.01)  # PRO follows the FPR: the area under y = x to 0.3


def test_aupro_averages_regions_not_pixels():
    # One large region found whole and one small region missed: the mean overlap is 1/2 at any low FPR,
    # whatever the two regions' sizes (a pixel average would be 0.9).
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 0:9, 0:10] = True  # 90 pixels, found
    masks[0, 15:17, 15:20] = True  # 10 pixels, missed
    maps = np.where(masks, 0.0, 0.5)
    maps[0, 0:9, 0:10] = 1.0
    fpr, pro = pro_curve(maps, masks)
    assert pro[np.searchsorted(fpr, 0.0, side="right") - 1] == pytest.approx(0.5)
    assert aupro(maps, masks) == pytest.approx(0.5)


def test_published_box_formats_scale_to_the_model_and_name_their_faults(tmp_path):
    paths = ["test/00000001_000.png", "test/rsna-patient.dcm", "test/vindr-img.png", "test/normal.png"]
    nih = tmp_path / "BBox_List_2017.csv"
    nih.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Nodule,512,256,128,64\n")
    masks, named = box_masks(read_boxes(nih, "nih"), paths, 64, "nih", nih)
    assert named.tolist() == [True, False, False, False]
    assert np.argwhere(masks[0]).min(axis=0).tolist() == [16, 32] and masks[0].sum() == 4 * 8  # 1024 -> 64 px

    rsna = tmp_path / "stage_2_train_labels.csv"
    rsna.write_text("patientId,x,y,width,height,Target\nrsna-patient,0,0,512,512,1\nnormal,,,,,0\n")
    masks, named = box_masks(read_boxes(rsna, "rsna"), paths, 32, "rsna", rsna)
    assert named.tolist() == [False, True, False, False] and masks[1].sum() == 16 * 16

    vindr = tmp_path / "train.csv"
    vindr.write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "vindr-img,Nodule/Mass,8,R9,100,200,300,400\nvindr-img,Nodule/Mass,8,R10,110,210,310,410\n"
        "normal,No finding,14,R1,,,,\n"
    )
    boxes = read_boxes(vindr, "vindr")
    assert len(boxes["vindr-img"]) == 2 and "normal" not in boxes  # every reader's box is kept
    with pytest.raises(DataError, match="--original-sizes"):
        box_masks(boxes, paths, 32, "vindr", vindr)
    masks, _ = box_masks(boxes, paths, 32, "vindr", vindr, sizes={"vindr-img": (400, 800)})
    assert masks[2].any() and not masks[2, :, 27:].any()  # x up to 310 of 400 -> column 25

    stranger = tmp_path / "other.csv"
    stranger.write_text("patientId,x,y,width,height,Target\nnobody,0,0,10,10,1\n")
    with pytest.raises(DataError, match="nobody"):
        box_masks(read_boxes(stranger, "rsna"), paths, 32, "rsna", stranger)
    outside = tmp_path / "outside.csv"
    outside.write_text("patientId,x,y,width,height,Target\nrsna-patient,1000,0,100,10,1\n")
    with pytest.raises(DataError, match="lies outside its 1024 x 1024 image"):
        box_masks(read_boxes(outside, "rsna"), paths, 32, "rsna", outside)
    with pytest.raises(DataError, match="check --boxes-format"):
        read_boxes(nih, "vindr")


def test_a_normal_image_with_a_lesion_marked_is_refused():
    masks, labels = squares(1, 1)
    masks[1, 0, 0] = True
    with pytest.raises(DataError, match=r"b\.png is a normal test image"):
        with_normals(masks, np.array([True, True]), labels, ["a.png", "b.png"])


def test_the_synthetic_datas_lesion_masks_mark_the_opacities():
    source = SyntheticSource(24, 64)
    abnormal = source.lesion_masks(source.pools["test/1"])
    assert abnormal.any(axis=(1, 2)).all() and abnormal.mean() < 0.2
    assert not source.lesion_masks(source.pools["test/0"]).any()
    images = source.arrays["test/1"].astype(float)
    assert images[abnormal].mean() > images[~abnormal].mean()  # the opacities brighten what they cover


@pytest.mark.slow
def test_evaluate_with_masks_writes_localisation_and_refuses_a_stray_mask(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", n=12)
    run = fit(tiny_config(data={"path": str(data)}), tmp_path / "run", progress=False)
    masks = tmp_path / "masks"
    for path in sorted((data / "test" / "abnormal").iterdir()):
        image = np.asarray(Image.open(path))
        write_png(masks / path.name, ((image > 150) * 255).astype(np.uint8))  # the bright disc of blob_image
    assert cli(capsys, "evaluate", run, "--masks", masks, "--json") == 0
    where = json.loads(capsys.readouterr().out)["localisation"]
    assert where["images_with_ground_truth"] == 6 and where["abnormal_without_ground_truth"] == 0
    assert 0 <= where["aupro"] <= 1 and 0 <= where["pixel_auroc"] <= 1 and where["dice"] is not None
    written = json.loads((run / "evaluation" / "test" / "metrics.json").read_text())
    assert written["localisation"] == where

    rsna = tmp_path / "stage_2_train_labels.csv"
    abnormal = sorted((data / "test" / "abnormal").iterdir())
    rsna.write_text("patientId,x,y,width,height,Target\n" + "".join(f"{p.stem},256,256,512,512,1\n" for p in abnormal))
    assert cli(capsys, "evaluate", run, "--boxes", rsna, "--boxes-format", "rsna", "--json") == 0
    boxed = json.loads(capsys.readouterr().out)["localisation"]
    assert boxed["images_with_ground_truth"] == 6 and 0 <= boxed["pointing_game"] <= 1

    write_png(masks / "stranger.png", 0)
    assert cli(capsys, "evaluate", run, "--masks", masks) == 2
    assert "stranger.png names no test image" in capsys.readouterr().err
    assert cli(capsys, "evaluate", run, "--boxes", masks / "stranger.png") == 2
    assert "--boxes needs --boxes-format" in capsys.readouterr().err


def test_ground_truth_is_masks_or_boxes_not_both(tmp_path):
    with pytest.raises(DataError, match="not both"):
        GroundTruth(masks=tmp_path, boxes=tmp_path / "b.csv", boxes_format="nih")
    with pytest.raises(DataError, match="the lesion ground truth itself"):
        GroundTruth(original_sizes=tmp_path / "sizes.csv")


def test_where_a_map_points_is_the_box_of_its_brightest_region():
    amap = np.full((32, 32), 0.01)
    amap[8:12, 20:26] = 1.0
    amap[25, 2] = 0.4  # a weaker speck elsewhere is not part of it
    assert top_region(amap) == (20 / 32, 8 / 32, 26 / 32, 12 / 32)
