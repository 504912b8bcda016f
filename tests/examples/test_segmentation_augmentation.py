"""examples/segmentation_augmentation.py: masks and boxes follow the pixels on real photos."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402


def number(pattern, text):
    match = re.search(pattern, text)
    assert match, pattern
    return [float(g) for g in match.groups()]


@pytest.mark.slow
def test_segmentation_augmentation_quick(run_example):
    result, out = run_example("segmentation_augmentation")
    written = (out / "results.md").read_text()
    assert written.strip() in result.stdout  # the printed tables are the written ones

    # Masks against the colour rule re-applied to the augmented pixels.
    cells = r"\| (\d+) / (\d+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|"
    regions, _, median, p5, median_full, p5_full = number(r"\| all " + cells, written)
    assert regions >= 60
    assert median >= 0.9 and median_full >= 0.9
    assert 0.5 <= p5 <= median and 0.5 <= p5_full <= median_full
    _, _, sky_median, sky_p5, _, sky_p5_full = number(r"\| sky & water " + cells, written)
    assert sky_median >= 0.95 and sky_p5 >= 0.85 and sky_p5_full >= 0.85  # large regions
    assert "| masks identical with and without RandomBrightness | yes |" in written

    kept, n_kept, n_before = number(r"\| boxes kept \(min_visibility=0.3\) \| ([0-9.]+) \((\d+) "
                                    r"of (\d+)\) \|", written)
    assert n_before >= 100 and 0.3 <= kept < 1.0  # the crops do drop some boxes
    assert abs(kept - n_kept / n_before) < 1e-3
    with_class, = number(r"\| kept boxes containing mask pixels of their class \| ([0-9.]+) \|",
                         written)
    assert with_class >= 0.95
    speed, = number(r"\| pipeline throughput .*\| ([0-9.]+) images/s \|", written)
    assert speed > 5

    # A tiny network reaches a usable held-out IoU with either training set, even in quick mode.
    for name in ("plain tiles", "Pipeline-augmented tiles"):
        orange, sky, mean = number(rf"\| {name} \| ([0-9.]+) \([0-9. -]+\) \| ([0-9.]+) "
                                   r"\([0-9. -]+\) \| ([0-9.]+) \([0-9. -]+\) \|", written)
        assert orange >= 0.4 and sky >= 0.8, (name, orange, sky)
        assert abs(mean - (orange + sky) / 2) < 2e-3

    picture = mpimg.imread(out / "segmentation_preview.png")
    assert picture.shape == (3 * 200, 6 * 200, 4)  # originals + 2 epochs, 6 tiles, 2-inch panels
