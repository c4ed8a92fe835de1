"""Map metrics (`onnxcam.metrics`): a known-evidence model ranks correct maps first, the
arithmetic matches pytorch-grad-cam, batches equal per-image means, flagged maps are not scored,
and Grad-CAM boxes on a real photo composite fall on their objects."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import Explainer, OnnxcamError
from onnxcam.metrics import (
    ROAD,
    ConfidenceChange,
    Deletion,
    Insertion,
    Localization,
    Removal,
    Scene,
    get_metric,
    noisy_linear_imputation,
    parse_metrics,
)
from support.evidence import DARK_CLASS, SIZE, SQUARE, SQUARE_CLASS, export_evidence_net, photo, square_map
from support.images import random_rgb
from support.photos import CAT_CLASSES, ESPRESSO, side_by_side

PLACES = [(8, 36), (40, 8), (24, 24), (4, 44), (44, 44)]  # (top, left) of each photo's square


def all_metrics():
    return [ConfidenceChange(), Removal(), Deletion(), Insertion(), ROAD(), Localization(tolerance=0)]


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    model, path = export_evidence_net(tmp_path_factory.mktemp("evidence") / "evidence.onnx")
    return model, Explainer(path, providers=["cpu"])


@pytest.fixture(scope="module")
def photos():
    return [photo(top, left, seed=i) for i, (top, left) in enumerate(PLACES)]


def square_boxes():
    return [[[left, top, left + SQUARE, top + SQUARE]] for top, left in PLACES]


def scores(scene, heatmaps, boxes=None, zero_maps=None) -> dict:
    maps = scene.maps(heatmaps, zero_maps)
    out = {}
    for metric in all_metrics():
        out.update(metric.evaluate(scene, maps, boxes).mean)
    return out


def test_the_evidence_model_sees_only_the_square(evidence, photos):
    """The premise: the square holds all of the class's evidence."""
    _, explainer = evidence
    scene = Scene.build(explainer, photos + [np.full((SIZE, SIZE, 3), 40, np.uint8)], targets=SQUARE_CLASS)
    assert (scene.probs[:-1, 0] > 0.75).all() and scene.probs[-1, 0] < 0.2


def test_correct_map_beats_random_and_inverted_maps(evidence, photos):
    """Grad-CAM (and the square itself) against a random map and the inverted Grad-CAM map, on
    every metric: lower deletion AUC, higher insertion AUC, a larger drop when the top 25 % goes,
    pointing game hits, and the rest."""
    _, explainer = evidence
    result = explainer.explain(photos, targets=SQUARE_CLASS)
    scene = Scene.build(explainer, photos, result.classes)
    rng = np.random.default_rng(0)
    maps = {"gradcam": result.heatmaps,
            "square": [square_map(top, left)[None] for top, left in PLACES],
            "random": [rng.random((1, SIZE, SIZE)).astype(np.float32) for _ in PLACES],
            "inverted": [1.0 - heat for heat in result.heatmaps]}
    got = {name: scores(scene, heat, square_boxes()) for name, heat in maps.items()}
    lower = ["drop", "remove_most", "deletion_auc", "road_morf"]
    higher = ["remove_least", "insertion_auc", "road_lerf", "pointing", "iou", "energy", "least_energy", "found"]
    for good in ("gradcam", "square"):
        for bad in ("random", "inverted"):
            for name in lower:
                assert got[good][name] < got[bad][name], (good, bad, name, got[good][name], got[bad][name])
            for name in higher:
                assert got[good][name] > got[bad][name], (good, bad, name, got[good][name], got[bad][name])
    assert got["gradcam"]["pointing"] == 100.0 and got["inverted"]["pointing"] == 0.0
    assert got["gradcam"]["remove_most"] < -80 and abs(got["gradcam"]["remove_least"]) < 15


def test_confidence_change_equals_pytorch_grad_cam(evidence, photos):
    """Drop and increase in confidence from pytorch-grad-cam's CamMultImageConfidenceChange, given
    the same maps in the network's frame and the same convention: the image in pixel space
    (the model normalizes), the target's softmax probability."""
    import torch
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torch import nn

    model, explainer = evidence

    class PixelModel(nn.Module):
        def forward(self, x):
            return model((x - 0.5) / 0.25)

    rng = np.random.default_rng(1)
    images = photos + photos[:3]
    heat = explainer.explain(images, targets=[SQUARE_CLASS, DARK_CLASS]).heatmaps
    heat = [h if i < len(photos) else rng.random(h.shape).astype(np.float32) for i, h in enumerate(heat)]
    scene = Scene.build(explainer, images, [SQUARE_CLASS, DARK_CLASS])
    maps = scene.maps(heat)
    ours = ConfidenceChange().evaluate(scene, maps)
    reference = CamMultImageConfidenceChange()
    for k in range(2):
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in scene.classes[:, k]]
        args = (torch.from_numpy(scene.pixels), maps.at_input[:, k], targets, PixelModel())
        diff = reference(*args)
        after = reference(*args, return_diff=False)
        before = after - diff
        np.testing.assert_allclose(ours.values["drop"][:, k], 100 * np.maximum(0, -diff) / before,
                                   rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(ours.values["increase"][:, k], 100.0 * (diff > 0))
    assert 0 < ours.mean["increase"] < 100  # both outcomes occur, so the comparison can fail


def test_imputation_equals_road_reference():
    """Noisy linear imputation without noise equals ROAD's reference (pytorch-grad-cam's copy)."""
    import torch
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    rng = np.random.default_rng(2)
    image = rng.random((3, 40, 56)).astype(np.float32)
    removed = rng.random((40, 56)) < 0.6
    removed[:10, :20] = True  # a large hole, and the border
    ours = noisy_linear_imputation(image, removed)
    kept = torch.from_numpy((~removed).astype(np.float32))  # the reference's mask: 1 = kept
    reference = NoisyLinearImputer(noise=0.0)(torch.from_numpy(image), kept)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[:, ~removed], image[:, ~removed])
    noisy = noisy_linear_imputation(image, removed, 0.01 * rng.standard_normal(image.shape))
    assert 0.005 < np.std(noisy[:, removed] - ours[:, removed]) < 0.015


def test_localization_values_by_hand():
    """Two blobs (sums 100 and 50), boxed exactly: the values follow from their definitions."""
    from onnxcam.render.boxes import Box, parse_rule

    RULE = parse_rule("peak:0.15")
    heat = np.zeros((40, 60), np.float32)
    heat[5:15, 5:15] = 1.0
    heat[20:30, 40:50] = 0.5
    first, second = Box(5, 5, 15, 15), Box(40, 20, 50, 30)
    both = Localization(tolerance=0).one(heat, [first, second], RULE)
    assert both == pytest.approx({"pointing": 100.0, "iou": 1.0, "box_acc": 100.0, "energy": 100.0,
                                  "least_energy": 100 / 3, "found": 100.0})
    # the peak (row 5, column 5) is 38.1 pixels from the second box
    alone = Localization(tolerance=38).one(heat, [second], RULE)
    assert alone == pytest.approx({"pointing": 0.0, "iou": 0.0, "box_acc": 0.0, "energy": 100 / 3,
                                   "least_energy": 100 / 3, "found": 100.0})
    assert Localization(tolerance=38.1).one(heat, [second], RULE)["pointing"] == 100.0
    assert Localization().one(heat, [first, second], parse_rule(0.6))["found"] == 50.0
    assert Localization().one(heat, [Box(0, 0, 10, 10)], RULE)["iou"] == pytest.approx(25 / 175)


def test_batch_equals_mean_of_images(evidence, photos):
    _, explainer = evidence
    rng = np.random.default_rng(3)
    heat = [rng.random((1, SIZE, SIZE)).astype(np.float32) for _ in PLACES]
    whole = Scene.build(explainer, photos, SQUARE_CLASS, forward_batch_size=7)
    maps = whole.maps(heat)
    for metric in all_metrics():
        batch = metric.evaluate(whole, maps, square_boxes())
        singles = []
        for i, image in enumerate(photos):
            alone = Scene.build(explainer, [image], SQUARE_CLASS, forward_batch_size=5)
            singles.append(metric.evaluate(alone, alone.maps([heat[i]]), square_boxes()[i:i + 1]))
        for name, values in batch.values.items():
            per_image = np.concatenate([single.values[name] for single in singles])
            np.testing.assert_allclose(values, per_image, rtol=1e-5, atol=1e-6, err_msg=name)
            assert batch.mean[name] == pytest.approx(np.mean([s.mean[name] for s in singles]), rel=1e-6, abs=1e-9)


def test_flagged_maps_are_reported_not_scored(synthetic_explainer):
    """A class whose Grad-CAM is all zero (flagged): NaN, counted, left out of the means; an
    all-zero map passed without a flag is flagged too."""
    explainer = synthetic_explainer
    images = [random_rgb(24, 32, seed=s) for s in range(3)]
    result = explainer.explain(images, targets=[0, 2])
    assert result.zero_maps[:, 1].all() and not result.zero_maps[:, 0].any()
    scene = Scene.build(explainer, images, result.classes)
    for metric in all_metrics():
        scored = metric.evaluate(scene, scene.maps(result.heatmaps, result.zero_maps), [[[0, 0, 16, 12]]] * 3)
        assert scored.zero_maps[:, 1].all() and not scored.zero_maps[:, 0].any()
        for name, values in scored.values.items():
            assert np.isnan(values[:, 1]).all() and not np.isnan(values[:, 0]).any(), name
            assert scored.mean[name] == pytest.approx(values[:, 0].mean()) and scored.counts[name] == 3
        for curve in scored.curves.values():
            assert np.isnan(curve[:, 1]).all()
    unflagged = scene.maps([np.stack([h[0], np.zeros_like(h[0])]) for h in result.heatmaps])
    assert unflagged.zero[:, 1].all()
    only_zero = scene.maps([np.zeros_like(h) for h in result.heatmaps])
    deletion = Deletion().evaluate(scene, only_zero)
    assert np.isnan(deletion.mean["deletion_auc"]) and deletion.counts["deletion_auc"] == 0


def test_metric_options_and_bad_inputs(evidence, photos):
    _, explainer = evidence
    scene = Scene.build(explainer, photos[:2], SQUARE_CLASS)
    heat = [square_map(*PLACES[i])[None] for i in range(2)]
    for make, message in [(lambda: Removal(fraction=1.5), "fraction"), (lambda: Removal(fill="grey"), "fill"),
                          (lambda: Deletion(steps=0), "steps"), (lambda: ROAD(percentiles=[0, 50]), "percentiles"),
                          (lambda: get_metric("nope"), "unknown metric 'nope'"),
                          (lambda: parse_metrics(" , "), "no metric"),
                          (lambda: Localization(rule=2), "box rule"),
                          (lambda: scene.maps([h * 2 for h in heat]), r"in \[0, 1\]"),
                          (lambda: scene.maps(heat[:1]), "got 1 for 2 images"),
                          (lambda: scene.maps([h[:, :10] for h in heat]), "expected shape"),
                          (lambda: Localization().evaluate(scene, scene.maps(heat), [[[0, 0, 65, 10]], None]),
                           "lies outside the image"),
                          (lambda: Localization().evaluate(scene, scene.maps(heat), [[[5, 0, 5, 10]], None]),
                           "x0 < x1"),
                          (lambda: Localization().evaluate(scene, scene.maps(heat)), "needs boxes")]:
        with pytest.raises(OnnxcamError, match=message):
            make()
    # class-keyed boxes score only their class; images without boxes are not scored
    keyed = Localization(tolerance=0).evaluate(scene, scene.maps(heat), [{SQUARE_CLASS: square_boxes()[0]}, None])
    assert keyed.values["pointing"][0, 0] == 100.0 and np.isnan(keyed.values["pointing"][1, 0])
    other = Localization().evaluate(scene, scene.maps(heat), [{DARK_CLASS: square_boxes()[0]}, None])
    assert np.isnan(other.values["iou"]).all()
    # other fills remove the square's evidence too
    assert Removal(fill="black").evaluate(scene, scene.maps(heat)).mean["remove_most"] < -50
    assert Deletion(steps=4, fill="blur").evaluate(scene, scene.maps(heat)).curves["deletion"].shape == (2, 1, 5)


def test_gradcam_boxes_on_the_real_cat_espresso_composite(lite0):
    """Real EfficientNet-Lite0, real photos: the cat's Grad-CAM box lies in the left half, the
    espresso's in the right half, and each map points into its own half. Boxes at half the peak:
    Lite0's 7 x 7 grid has its middle column across the seam, and at the paper's 15 % the
    espresso map's faint response over the cat (a quarter of its peak) joins its segment."""
    import skimage.data

    explainer = Explainer(lite0[1])
    image = side_by_side()
    split = skimage.data.chelsea().shape[1]
    cat = int(explainer.explain(skimage.data.chelsea()).classes[0, 0])
    assert cat in CAT_CLASSES
    result = explainer.explain(image, targets=[cat, ESPRESSO])
    (cat_box,), (espresso_box,) = result.boxes(0, 0, 0.5), result.boxes(0, 1, 0.5)
    assert cat_box.x1 <= split and espresso_box.x0 >= split, (cat_box, espresso_box, split)
    height, width = image.shape[:2]
    halves = {cat: [[0, 0, split, height]], ESPRESSO: [[split, 0, width, height]]}
    scene = Scene.build(explainer, [image], result.classes)
    scored = Localization(tolerance=0).evaluate(scene, scene.maps(result.heatmaps), [halves])
    assert (scored.values["pointing"] == 100.0).all() and (scored.values["energy"] > 70).all()
