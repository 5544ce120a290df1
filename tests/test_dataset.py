import pytest
import torch

from helpers import make_folder_dataset
from medsagan.config import load_config
from medsagan.data.check import inspect
from medsagan.data.dataset import build_training_data, load_images, load_split
from medsagan.data.sampler import PairSampler
from medsagan.data.sources import open_dataset
from medsagan.errors import ConfigError, DataError


@pytest.mark.slow
def test_protocol_training_data_on_real_pneumonia(shared_data, tmp_path):
    source = open_dataset(str(shared_data / "medad-pneumonia64"))
    data = build_training_data(source, load_config(overrides={"data": {"val_unlabeled_fraction": 0}}), tmp_path)
    assert len(data.normal) == 630 and len(data.val_normal) == 70  # 10 % of the labelled normals held out
    assert int((data.unlabeled.labels == 1).sum()) == 420 and int((data.unlabeled.labels == 0).sum()) == 280
    # Prefixes in file order, as the official loader.
    assert data.unlabeled.ids[:420] == source.pools["train/unlabeled/1"][:420]
    assert data.unlabeled.ids[420:] == source.pools["train/unlabeled/0"][:280]
    assert set(data.normal.ids).isdisjoint(data.val_normal.ids)
    assert data.validation == "aucp"
    assert data.normal.images.dtype == torch.uint8 and data.normal.images.shape[1:] == (1, 64, 64)


@pytest.mark.slow
def test_random_draw_is_seeded_and_differs_from_prefix(shared_data, tmp_path):
    source = open_dataset(str(shared_data / "medad-pneumonia64"))
    cfg = load_config(
        overrides={
            "data": {
                "unlabeled_draw": "random",
                "anomaly_ratio": 0.4,
                "unlabeled_size": 100,
                "val_unlabeled_fraction": 0,
            },
            "model": {"image_size": 32},
            "evaluation": {"val_max_images": 50},
        }
    )
    a = build_training_data(source, cfg.replace(train={"seed": 3}), tmp_path)
    b = build_training_data(source, cfg.replace(train={"seed": 3}), tmp_path)
    c = build_training_data(source, cfg.replace(train={"seed": 4}), tmp_path)
    assert a.unlabeled.ids == b.unlabeled.ids != c.unlabeled.ids
    assert a.unlabeled.ids[:40] != source.pools["train/unlabeled/1"][:40]
    assert int((a.unlabeled.labels == 1).sum()) == 40 and len(a.val_positive) == 50  # capped for selection


@pytest.mark.slow
def test_label_free_selection_uses_unlabelled_images_held_out_of_training(shared_data, tmp_path):
    source = open_dataset(str(shared_data / "medad-pneumonia64"))
    data = build_training_data(source, load_config(overrides={"data": {"val_unlabeled_fraction": 0.2}}), tmp_path)
    assert data.validation == "aucp_heldout"
    assert len(data.val_positive) == 140 and len(data.unlabeled) == 560  # 20 % of the 700 held out
    assert set(data.val_positive.ids).isdisjoint(data.unlabeled.ids)
    assert int((data.unlabeled.labels == 1).sum()) + int((data.val_positive.labels == 1).sum()) == 420
    assert 0 < int((data.val_positive.labels == 1).sum()) < 140  # a random share of the mixture, not one class
    again = build_training_data(source, load_config(overrides={"train": {"seed": 5}}), tmp_path)
    assert again.val_positive.ids == build_training_data(source, load_config(), tmp_path).val_positive.ids


@pytest.mark.slow
def test_labeled_size_limits_the_labelled_normals_and_the_unlabelled_set_follows(shared_data, tmp_path):
    source = open_dataset(str(shared_data / "medad-pneumonia64"))
    small = {"data": {"labeled_size": 200, "unlabeled_size": -1, "val_unlabeled_fraction": 0.1}}
    data = build_training_data(source, load_config(overrides=small), tmp_path)
    assert len(data.normal) + len(data.val_normal) == 200 and len(data.val_normal) == 20
    assert len(data.unlabeled) + len(data.val_positive) == 200  # as many as the labelled normals
    assert int((data.unlabeled.labels == 1).sum()) + int((data.val_positive.labels == 1).sum()) == 120
    with pytest.raises(DataError, match=r"data\.labeled_size 5000 exceeds the 700 labelled normal"):
        build_training_data(source, load_config(overrides={"data": {"labeled_size": 5000}}), tmp_path)


def test_labelled_val_split_is_used_when_present(tmp_path):
    source = open_dataset(str(make_folder_dataset(tmp_path / "d", n=8, val=True)))
    data = build_training_data(source, load_config(overrides={"model": {"image_size": 32}}), None)
    assert data.validation == "labelled" and len(data.normal) == 8
    assert len(data.val_normal) == 4 and len(data.val_positive) == 4
    assert (data.unlabeled.labels == -1).all()


def test_data_validation_chooses_the_val_split_or_held_out_images_and_warns_of_a_small_split(tmp_path, caplog):
    source = open_dataset(str(make_folder_dataset(tmp_path / "d", n=10, val=True)))
    size = {"model": {"image_size": 32}}
    with caplog.at_level("WARNING", logger="medsagan"):
        labelled = build_training_data(source, load_config(overrides=size), None)
    assert labelled.validation == "labelled" and "rest on 4 normal and 4 abnormal images" in caplog.text
    report = inspect(source, load_config().data)
    assert "data.validation=heldout" in report["validation"]["warning"]
    held = load_config(overrides={**size, "data": {"validation": "heldout"}})
    data = build_training_data(source, held, None)
    assert data.validation == "aucp_heldout" and len(data.normal) == 9 and len(data.val_normal) == 1
    assert inspect(source, held.data)["validation"]["kind"] == "aucp_heldout"
    plain = open_dataset(str(make_folder_dataset(tmp_path / "e", n=6)))
    with pytest.raises(DataError, match=r"data\.validation = labelled, but there is no labelled val split"):
        build_training_data(plain, load_config(overrides={**size, "data": {"validation": "labelled"}}), None)


def test_cache_serves_the_second_load_without_decoding(tmp_path):
    source = open_dataset(str(make_folder_dataset(tmp_path / "d", n=6)))
    first = load_images(source, source.pools["train/0"], 0, 32, 1, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    def refuse(*args):
        raise AssertionError("decoded again")

    source.decode = refuse
    second = load_images(source, source.pools["train/0"], 0, 32, 1, cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, second.images) and first.ids == second.ids
    touched = tmp_path / "d" / source.pools["train/0"][0]
    touched.write_bytes(touched.read_bytes() + b"\0")  # changed content -> new key -> decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_images(source, source.pools["train/0"], 0, 32, 1, cache_dir=tmp_path / "cache")


def test_skip_bad_skips_and_reports(tmp_path):
    root = make_folder_dataset(tmp_path / "d", n=6)
    (root / "normal" / "zz.png").write_bytes(b"broken")
    source = open_dataset(str(root))
    with pytest.raises(DataError, match=r"zz\.png: unreadable or corrupt"):
        load_images(source, source.pools["train/0"], 0, 32, 1)
    kept = load_images(source, source.pools["train/0"], 0, 32, 1, skip_bad=True)
    assert len(kept) == 6 and len(kept.skipped) == 1 and "zz.png" in kept.skipped[0]


def test_empty_test_class_is_an_error_naming_the_split(tmp_path):
    source = open_dataset(str(make_folder_dataset(tmp_path / "d", n=6)))
    source.pools["test/1"] = []
    with pytest.raises(DataError, match=r"the test split has no abnormal images"):
        load_split(source, "test", load_config(overrides={"model": {"image_size": 32}}), None)


def test_sampler_repairs_each_epoch_or_keeps_official_pairs():
    def epoch_pairs(fixed):
        sampler = PairSampler(8, 8, 4, fixed, torch.Generator().manual_seed(0))
        epochs = []
        for _ in range(3):
            pairs = [sampler.next() for _ in range(2)]
            epochs.append({(int(n), int(u)) for a, b, _ in pairs for n, u in zip(a, b, strict=True)})
        return epochs

    fixed, fresh = epoch_pairs(True), epoch_pairs(False)
    assert all(pairs == {(i, i) for i in range(8)} for pairs in fixed)
    assert fresh[0] != fresh[1] or fresh[1] != fresh[2]
    assert all(sorted(n for n, _ in pairs) == list(range(8)) for pairs in fresh)  # every normal once per epoch


def test_sampler_state_round_trip_continues_identically():
    a = PairSampler(10, 7, 3, False, torch.Generator().manual_seed(1))
    for _ in range(4):
        a.next()
    state, rng_state = a.state_dict(), a.rng.get_state()
    expected = [a.next() for _ in range(5)]
    b = PairSampler(10, 7, 3, False, torch.Generator())
    b.load_state_dict(state)
    b.rng.set_state(rng_state)
    got = [b.next() for _ in range(5)]
    assert all(all(map(torch.equal, x, y)) for x, y in zip(expected, got, strict=True))


def test_batch_larger_than_the_normals_is_refused():
    with pytest.raises(ConfigError, match="exceeds the 5 labelled normal"):
        PairSampler(5, 5, 8, False, torch.Generator())


def test_fixed_pairing_uses_every_unlabelled_image_and_keeps_the_ratio():
    # RSNA after the 10 % hold-out: 3465 training normals, 3851 unlabelled images (2310 abnormal, 1541 normal).
    n_normal, n_abnormal, n_unlabeled = 3465, 2310, 3851
    sampler = PairSampler(n_normal, n_unlabeled, 32, True, torch.Generator().manual_seed(0))
    drawn = torch.cat([sampler.next()[1] for _ in range(2000)])
    assert set(drawn.tolist()) == set(range(n_unlabeled))  # the last 386 (all normal) are drawn too
    ratio = (drawn < n_abnormal).float().mean().item()  # abnormals come first in the unlabelled set
    assert ratio == pytest.approx(n_abnormal / n_unlabeled, abs=0.005)
    first = PairSampler(8, 8, 4, True, torch.Generator().manual_seed(0))
    normal, unlabeled, _ = first.next()
    assert torch.equal(normal, unlabeled)  # with as many of each, the official pairs: unlabelled i with normal i


def test_pseudo_anomaly_sources_are_other_normals_from_the_whole_set():
    sampler = PairSampler(50, 10, 4, False, torch.Generator().manual_seed(0))
    batches = [sampler.next() for _ in range(300)]
    normal = torch.cat([b[0] for b in batches])
    source = torch.cat([b[2] for b in batches])
    assert (normal != source).all() and set(source.tolist()) == set(range(50))
