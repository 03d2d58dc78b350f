"""Synthetic phantoms: exact ground truth, seeding, optics, noise, confocal defocus, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vessel.data.phantom import Phantom, make_phantom, shifted
from napari_vessel.data.tubes import PIAL, draw_tubes
from napari_vessel.errors import InputError

#: Noise-free, flat-lit rendering: the image shows the vessels and nothing else.
CLEAN = dict(noise=False, haze=0.0, depth_attenuation=0.0, pial_shadow=False, dtype="float32")


@pytest.fixture(scope="module")
def tree() -> Phantom:
    return make_phantom((24, 96, 96), seed=3)


def test_labels_are_exactly_the_voxels_within_radius_of_the_axis_anisotropic():
    spacing = (3.0, 0.7, 1.0)
    shape = (20, 40, 50)
    # Axis along x through voxel centres (z index 7, y index 20), longer than the volume.
    ph = make_phantom(shape, spacing_zyx=spacing, tubes=[((21.0, 14.0, -5.0), (21.0, 14.0, 60.0), 4.5)],
                      noise=False)
    axis = np.zeros(shape, dtype=bool)
    axis[7, 20, :] = True
    distance = ndi.distance_transform_edt(~axis, sampling=spacing)
    np.testing.assert_array_equal(ph.labels, (distance <= 4.5).astype(np.uint8))
    # Round in µm: 2*4.5/3 -> 3 slices across in z, but 13 rows in y.
    assert np.any(ph.labels, axis=(1, 2)).sum() == 3
    assert np.any(ph.labels, axis=(0, 2)).sum() == 13
    np.testing.assert_array_equal(ph.centerlines, axis.astype(np.uint8))
    np.testing.assert_allclose(ph.radius[axis], 4.5)


def test_a_tube_of_known_radius_has_the_analytic_voxel_count():
    spacing = (2.0, 1.0, 1.0)
    r, nx = 10.0, 64
    ph = make_phantom((40, 64, nx), spacing_zyx=spacing, noise=False,
                      tubes=[((39.3, 31.6, -20.0), (39.3, 31.6, 100.0), r)])
    expected = math.pi * r**2 / (spacing[0] * spacing[1]) * nx
    assert ph.labels.sum() == pytest.approx(expected, rel=0.03)


def test_oblique_tube_matches_a_dense_distance_check():
    a, b, r = np.array([3.0, 5.0, 4.0]), np.array([20.0, 30.0, 41.0]), 3.2
    spacing = np.array([2.0, 1.0, 1.0])
    labels, signal, _ = draw_tubes((12, 36, 48), np.array([[*a, *b, r]]), spacing)
    points = np.stack(np.indices(labels.shape), axis=-1) * spacing
    t = np.clip(((points - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    distance = np.linalg.norm(points - (a + t[..., None] * (b - a)), axis=-1)
    np.testing.assert_array_equal(labels, distance <= r)
    # The anti-aliased signal is at least 0.5 inside and at most 0.5 outside.
    assert signal[labels].min() >= 0.5 and signal[~labels].max() <= 0.5


def test_image_shows_the_labels_before_noise(tree):
    ph = make_phantom((24, 96, 96), seed=3, psf_um=(0, 0, 0), **CLEAN)
    np.testing.assert_array_equal(ph.labels, tree.labels)  # imaging never moves the vessels
    background = ph.params["background"]
    assert ph.image[ph.labels > 0].min() > background + 0.2
    near = ndi.binary_dilation(ph.labels, ndi.generate_binary_structure(3, 3))
    np.testing.assert_allclose(ph.image[~near], background, atol=1e-6)
    inside, outside = tree.image[tree.labels > 0].mean(), tree.image[tree.labels == 0].mean()
    assert inside > 3 * outside


def test_centerlines_lie_inside_labels_and_carry_the_radius(tree):
    assert tree.centerlines.sum() > 0
    assert np.all(tree.labels[tree.centerlines > 0] == 1)
    np.testing.assert_array_equal(tree.radius > 0, tree.centerlines > 0)
    assert tree.centerlines.dtype == np.uint8 and tree.labels.dtype == np.uint8


def test_same_seed_same_arrays_other_seed_differs(tree):
    again = make_phantom((24, 96, 96), seed=3)
    for name in ("image", "labels", "centerlines", "radius", "segments"):
        np.testing.assert_array_equal(getattr(again, name), getattr(tree, name))
    other = make_phantom((24, 96, 96), seed=4)
    assert not np.array_equal(other.labels, tree.labels)
    assert not np.array_equal(other.image, tree.image)


def test_params_are_json_and_reproduce_the_phantom(tree):
    params = json.loads(json.dumps(tree.params))
    np.testing.assert_array_equal(make_phantom(**params).image, tree.image)


def test_radii_span_capillaries_to_pial_vessels():
    ph = make_phantom((32, 192, 192), seed=0, noise=False)
    radii = ph.segments[:, 6]
    assert radii.min() == pytest.approx(1.5) and radii.max() == pytest.approx(12.0)
    assert (radii <= 2).sum() > 20  # many capillaries
    assert np.any(ph.segments[:, 8] == PIAL)
    on_axis = ph.radius[ph.centerlines > 0]
    assert on_axis.min() <= 2.0 and on_axis.max() >= 10.0
    # A child segment starts where its parent ends.
    child = ph.segments[ph.segments[:, 7] >= 0]
    parent = ph.segments[child[:, 7].astype(int)]
    np.testing.assert_allclose(child[:, 0:3], parent[:, 3:6])
    assert 0.005 < ph.vessel_fraction < 0.3


def test_depth_attenuation_is_exponential_in_depth():
    common = dict(shape=(11, 20, 20), tubes=[((-5, 10, 10), (30, 10, 10), 3.0)], **CLEAN)
    flat = make_phantom(**common).image
    faded = make_phantom(**{**common, "depth_attenuation": 0.6}).image
    expected = np.broadcast_to(0.4 ** (np.arange(11) / 10)[:, None, None], flat.shape)
    np.testing.assert_allclose(faded / flat, expected, rtol=1e-5)


def test_pial_vessels_shadow_what_lies_beneath():
    common = dict(shape=(24, 96, 96), seed=2, **{**CLEAN, "pial_shadow": False})
    plain = make_phantom(**common).image
    shaded = make_phantom(**{**common, "pial_shadow": 0.6}).image
    np.testing.assert_allclose(shaded[0], plain[0], rtol=1e-5)  # nothing above the top slice
    ratio = shaded[-1] / plain[-1]
    assert ratio.min() < 0.7 and ratio.max() == pytest.approx(1.0, abs=1e-3)


def test_noise_is_poisson_gaussian():
    photons, read = 20.0, 0.05
    ph = make_phantom((8, 64, 64), n_trees=0, haze=0.0, depth_attenuation=0.0, background=0.5,
                      photons=photons, read_noise=read, dtype="float32", seed=1)
    assert ph.labels.sum() == 0
    values = ph.image.astype(float)
    assert values.mean() == pytest.approx(0.5, rel=0.02)
    assert values.var() == pytest.approx(0.5 / photons + read**2, rel=0.08)


def test_dtypes_and_detector_response():
    kw = dict(shape=(8, 48, 48), seed=5, noise=False)
    f = make_phantom(**kw, dtype="float32").image
    u8 = make_phantom(**kw, dtype=np.uint8).image
    u16 = make_phantom(**kw, dtype=np.uint16).image
    assert (f.dtype, u8.dtype, u16.dtype) == (np.float32, np.uint8, np.uint16)
    np.testing.assert_allclose(u8, np.clip(np.rint(f * 255), 0, 255), atol=1)
    np.testing.assert_allclose(u16, np.clip(np.rint(f * 4095), 0, 65535), atol=1)
    np.testing.assert_allclose(make_phantom(**kw, dtype="float32", contrast=2.0).image, 2 * f,
                               rtol=1e-5)
    np.testing.assert_allclose(make_phantom(**kw, dtype="float32", gamma=2.0).image, f**2,
                               rtol=1e-4, atol=1e-7)
    dark = make_phantom(**kw, contrast=0.1).image
    assert dark.max() < 40
    bright = make_phantom(**kw, contrast=5.0).image
    assert (bright == 255).mean() > 0.01  # saturated, like a clipped real stack


def test_confocal_slices_are_sharpest_at_their_own_plane():
    ph = make_phantom((24, 64, 64), kind="confocal", tubes=[((20.0, 32.0, -10.0), (20.0, 32.0, 80.0),
                                                             2.0)], **CLEAN)
    focus = [ndi.laplace(plane.astype(float)).var() for plane in ph.image]
    assert int(np.argmax(focus)) == 10
    assert focus[14] < 0.05 * focus[10]
    assert ph.image[14].max() > 0  # defocused light reaches slices away from the vessel
    assert ph.in_focus.shape == (64, 64) and ph.in_focus.dtype == np.float32
    sharp = make_phantom((24, 64, 64), tubes=ph.params["tubes"], **CLEAN)
    np.testing.assert_allclose(ph.in_focus, sharp.image.max(axis=0), rtol=1e-5, atol=1e-6)


def test_confocal_tree_keeps_labels_and_is_blurrier():
    two = make_phantom((16, 64, 64), seed=1, kind="2pm", noise=False)
    conf = make_phantom((16, 64, 64), seed=1, kind="confocal", noise=False)
    np.testing.assert_array_equal(two.labels, conf.labels)
    assert two.in_focus is None and conf.in_focus.shape == (64, 64)

    def sharpness(img):
        return np.mean([ndi.laplace(p.astype(float)).var() for p in img])

    assert sharpness(conf.image) < sharpness(two.image)


def test_shifted_keeps_the_vessels_and_changes_the_microscope(tree):
    new = shifted(tree, seed=7)
    np.testing.assert_array_equal(new.labels, tree.labels)
    assert not np.array_equal(new.image, tree.image)
    assert new.params["contrast"] != tree.params["contrast"]
    assert new.params["gamma"] != tree.params["gamma"]
    fixed = shifted(tree, seed=7, contrast=3.0)
    assert fixed.params["contrast"] == 3.0
    with pytest.raises(InputError, match="n_trees"):
        shifted(tree, n_trees=5)


def test_default_phantom_completes():
    ph = make_phantom()
    assert ph.image.shape == ph.labels.shape == (64, 256, 256)
    assert ph.image.dtype == np.uint8
    assert ph.spacing_zyx == (2.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(shape=(0, 10, 10)), "positive"),
        (dict(shape=(10, 10)), "three"),
        (dict(shape=(4.5, 10, 10)), "whole"),
        (dict(kind="confocl"), "did you mean 'confocal'"),
        (dict(kind="widefield"), "choose one of"),
        (dict(radius_range=(5, 2)), "min <= max"),
        (dict(radius_range=(0, 2)), "min <= max"),
        (dict(radius_range=3), "two numbers"),
        (dict(spacing_zyx=(0, 1, 1)), "positive"),
        (dict(dtype="int64"), "uint8, uint16 or float32"),
        (dict(n_trees=-1), "n_trees"),
        (dict(n_trees=1.5), "n_trees"),
        (dict(n_trees="many"), "n_trees"),
        (dict(seed="abc"), "seed"),
        (dict(pial_shadow="yes"), "pial_shadow"),
        (dict(depth_attenuation=1.0), "depth_attenuation"),
        (dict(photons=0), "photons"),
        (dict(contrast=-1), "contrast"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(pial_shadow=1.5), "pial_shadow"),
        (dict(tubes=[((0, 0), (1, 1, 1), 2)]), "tube 0"),
        (dict(tubes=[((0, 0, 0), (1, 1, 1), -2)]), "radius of tube 0"),
        (dict(psf_um=(1, 1)), "psf_um"),
        (dict(dimmest=0), "dimmest"),
        (dict(dimmest=1.5), "dimmest"),
        (dict(texture=-0.1), "texture"),
        (dict(texture_um=0), "texture_um"),
    ],
)
def test_bad_input_names_the_problem(kwargs, match):
    kwargs.setdefault("shape", (4, 16, 16))
    with pytest.raises(InputError, match=match):
        make_phantom(**kwargs)


def test_dim_branches_and_texture_change_the_image_not_the_vessels():
    base = make_phantom((8, 64, 64), seed=3, noise=False, dtype="float32", pial_shadow=False,
                        psf_um=(0, 0, 0), haze=0, background=0, depth_attenuation=0)
    dim = make_phantom((8, 64, 64), seed=3, noise=False, dtype="float32", pial_shadow=False,
                       psf_um=(0, 0, 0), haze=0, background=0, depth_attenuation=0, dimmest=0.1)
    assert np.array_equal(base.labels, dim.labels)
    inside = base.labels > 0
    # every vessel voxel is at most as bright as before, and the dimmest reach far lower
    assert np.all(dim.image[inside] <= base.image[inside] + 1e-6)
    assert np.percentile(dim.image[inside], 5) < 0.6 * np.percentile(base.image[inside], 5)
    flat = make_phantom((8, 64, 64), seed=3, noise=False, dtype="float32", pial_shadow=False,
                        psf_um=(0, 0, 0), haze=0, background=0, depth_attenuation=0, texture=0)
    assert np.array_equal(flat.labels, base.labels)
    assert np.all(flat.image[inside] >= base.image[inside] - 1e-6)


def test_sample_data_layers():
    from napari_vessel._napari.sample_data import SAMPLE_SHAPE, sample_confocal

    layers = sample_confocal()
    (image, image_kw, image_type), (labels, labels_kw, labels_type), (ref, _, _) = layers
    assert (image_type, labels_type) == ("image", "labels")
    assert image.shape == labels.shape == SAMPLE_SHAPE and ref.shape == SAMPLE_SHAPE[1:]
    assert labels_kw["name"] == "ground truth"
    assert image_kw["scale"] == labels_kw["scale"] == (2.0, 1.0, 1.0)
    json.dumps(image_kw["metadata"])


# ---- visible labels: what a person would paint ---------------------------------------------


def _one_tube(**kwargs):
    from napari_vessel.data.phantom import make_phantom
    common = dict(shape=(20, 40, 40), spacing_zyx=(1.0, 1.0, 1.0), dtype="float32",
                  tubes=[((10.0, 20.0, -5.0), (10.0, 20.0, 45.0), 2.0)], background=0.05,
                  haze=0.0, depth_attenuation=0.0, texture=0.0, keep_signals=True)
    return make_phantom(**{**common, **kwargs})


def _visible(ph, **kwargs):
    from napari_vessel.data.phantom import visible_labels
    p = ph.params
    return visible_labels(ph.labels, ph.vessel_signal, ph.clean_signal, ph.spacing_zyx,
                          p["psf_um"], kwargs.pop("photons", p["photons"]),
                          kwargs.pop("read_noise", p["read_noise"]), **kwargs).astype(bool)


def test_visible_labels_keep_every_tube_voxel_without_noise_and_widen_along_the_blur():
    sharp = _one_tube(psf_um=(0.3, 0.3, 0.3))
    blurred = _one_tube(psf_um=(4.0, 0.3, 0.3))  # strong axial blur, as in two-photon stacks
    assert np.array_equal(sharp.labels, blurred.labels)  # labels never depend on the optics
    exact = sharp.labels > 0
    for ph in (sharp, blurred):
        seen = _visible(ph, photons=None, read_noise=0.0)
        assert seen[exact].all()  # noise-free: every voxel of the tube can be seen
    wide = _visible(blurred, photons=None, read_noise=0.0)
    narrow = _visible(sharp, photons=None, read_noise=0.0)
    assert wide.sum() > 1.3 * exact.sum() and narrow.sum() < 1.1 * exact.sum()
    # the extra voxels lie above and below the tube (the blurred axis), next to it
    extra = wide & ~exact
    per_slice = extra.sum(axis=(1, 2))
    assert per_slice[[6, 7, 13, 14]].all() and per_slice[9:12].sum() == 0  # not sideways
    assert (extra & ~ndi.binary_dilation(exact, iterations=4)).sum() == 0


def test_visible_labels_drop_a_vessel_lost_in_the_noise():
    ph = _one_tube(psf_um=(1.0, 0.5, 0.5), contrast=1.0)
    bright = _visible(ph, photons=200.0, read_noise=0.01)
    assert bright[ph.labels > 0].mean() > 0.95
    # the same vessel under read noise far above its light: nobody would paint it
    assert _visible(ph, photons=200.0, read_noise=5.0).sum() == 0
    # a stricter criterion never paints more
    strict = _visible(ph, photons=5.0, read_noise=0.05, snr=8.0)
    loose = _visible(ph, photons=5.0, read_noise=0.05, snr=1.0)
    assert not (strict & ~loose).any()


def test_visible_labels_refuse_mismatched_arrays_and_bad_settings():
    from napari_vessel.data.phantom import visible_labels
    ph = _one_tube(psf_um=(1.0, 0.5, 0.5))
    with pytest.raises(InputError, match="one shape"):
        visible_labels(ph.labels[1:], ph.vessel_signal, ph.clean_signal, (1, 1, 1), (1, 1, 1),
                       10.0, 0.0)
    with pytest.raises(InputError, match="snr"):
        visible_labels(ph.labels, ph.vessel_signal, ph.clean_signal, (1, 1, 1), (1, 1, 1),
                       10.0, 0.0, snr=0)
    plain = _one_tube(psf_um=(1.0, 0.5, 0.5), keep_signals=False)
    assert plain.vessel_signal is None and plain.clean_signal is None
    assert np.array_equal(plain.image, ph.image)  # keeping the signals changes nothing else
