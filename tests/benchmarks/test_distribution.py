"""The distribution measures on cases computed by hand (and JSD against SciPy's, which the papers used)."""
import math

import pytest

from culturepark.benchmarks import distribution as d


@pytest.mark.parametrize("p,q,w1", [
    ([1, 0, 0, 0], [0, 0, 0, 1], 1.0),            # all mass at opposite ends: W1 = 3 of a possible 3
    ([0.5, 0.5, 0], [0, 0.5, 0.5], 0.5),          # CDF gaps .5 + .5 = 1, over N − 1 = 2
    ([0.2, 0.3, 0.5], [0.5, 0.3, 0.2], 0.3),      # CDF gaps .3 + .3 = .6, over 2
    ([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25], 0.0),
    ([1, 0], [0, 1], 1.0),
    ([1] + [0] * 9, [0] * 4 + [1] + [0] * 5, 4 / 9),  # 10-point scale: 1 vs 5 is 4 steps of 9
])
def test_normalised_w1_and_representativeness_by_hand(p, q, w1):
    assert d.normalised_w1(p, q) == pytest.approx(w1)
    assert d.normalised_w1(q, p) == pytest.approx(w1)  # symmetric
    assert d.representativeness(p, q) == pytest.approx(1 - w1)


@pytest.mark.parametrize("p,q,jsd", [
    ([1, 0], [0, 1], math.sqrt(math.log(2))),     # disjoint: divergence ln 2
    ([0.5, 0.5], [1, 0], math.sqrt((0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25) + math.log(1 / 0.75)) / 2)),
    ([0.2, 0.8, 0], [0.2, 0.8, 0], 0.0),
])
def test_jensen_shannon_distance_by_hand_and_as_scipy_computes_it(p, q, jsd):
    assert d.js_distance(p, q) == pytest.approx(jsd, abs=1e-9)
    scipy = pytest.importorskip("scipy.spatial.distance")  # not a dependency; where installed, it must agree
    assert d.js_distance(p, q) == pytest.approx(float(scipy.jensenshannon(p, q)), abs=1e-9)
    assert d.js_similarity(p, q) == pytest.approx(1 - jsd, abs=1e-9)


def test_distribution_counts_only_the_options_and_shares_below_the_cut_off():
    assert d.distribution([1, 1, 2, 4, 9], [1, 2, 3, 4]) == [0.5, 0.25, 0.0, 0.25]  # 9 is not an option
    assert d.share_below([0.1, 0.19, 0.2, 0.5]) == 0.5  # 0.2 itself is not below
    with pytest.raises(ValueError):
        d.normalised_w1([0.5, 0.5], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        d.normalised_w1([0.5, 0.6], [1.0, 0.0])


def test_bootstrap_intervals_are_seeded_contain_the_estimate_and_narrow_with_more_data():
    values = [0.1, 0.15, 0.3, 0.05, 0.5, 0.25, 0.12, 0.4]
    lo, hi = d.bootstrap(values, d.mean, seed=3)
    assert (lo, hi) == d.bootstrap(values, d.mean, seed=3) and lo <= d.mean(values) <= hi and lo < hi
    assert d.bootstrap([0.2] * 5, d.mean) == (0.2, 0.2)
    codes = [1, 2, 3, 4]
    people = [1] * 30 + [2] * 50 + [3] * 15 + [4] * 5
    model = [1] * 1 + [2] * 3 + [3] * 4 + [4] * 2  # far enough from the people that W1 is not at its floor
    w1 = d.normalised_w1(d.distribution(model, codes), d.distribution(people, codes))
    small = d.item_interval(model, people, codes, seed=1)
    large = d.item_interval(model * 20, people * 20, codes, seed=1)
    assert small[0] <= w1 <= small[1] and large[1] - large[0] < small[1] - small[0]
    exact = d.item_interval({1: 0.1, 2: 0.3, 3: 0.4, 4: 0.2}, people * 20, codes, seed=1)  # probabilities: no model noise
    assert exact[1] - exact[0] < large[1] - large[0]
