"""MagNet: reformer, detector threshold, defender semantics and checkpoint (advgame.magnet)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from advgame.artifacts import save_checkpoint
from advgame.attacks.pgd import pgd
from advgame.config import TrainParams
from advgame.defenses import magnet
from advgame.defenses.loading import load_defender
from advgame.models import classifier_meta
from advgame.training import fit


@pytest.fixture(scope="module")
def digits():
    from advgame.data import load_mnist5k

    (x, y), (xt, yt) = load_mnist5k(0.2, 0)
    return x, y, xt, yt


@pytest.fixture(scope="module")
def reformer(digits):
    x, y = digits[0][:1000], digits[1][:1000]
    torch.manual_seed(0)
    ae = magnet.Reformer(1)
    before = magnet.recon_errors(ae, digits[0][3000:3200]).mean()
    fit(ae, x, y, magnet.denoising_objective(0.1), TrainParams(epochs=2, batch=16, lr=3e-2))
    return ae, before


def test_reformer_learns_to_reconstruct_unseen_digits(reformer, digits):
    ae, before = reformer
    x = digits[0][3000:3200]
    after = magnet.recon_errors(ae, x)
    assert after.mean() < 0.5 * before
    with torch.no_grad():
        out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_threshold_rejects_exactly_fpr_of_the_calibration_set():
    err = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    for fpr in (0.01, 0.05, 0.1, 0.5):
        t = magnet.threshold_for(err, fpr)
        assert int((err > t).sum()) == int(fpr * 1000)
    assert int((err > magnet.threshold_for(err, 1e-4)).sum()) == 0


def test_threshold_gives_the_false_positive_rate_on_held_out_digits(reformer, digits):
    ae, _ = reformer
    x = digits[0][1000:4000]  # not used to train the reformer
    calib, check = x[:1500], x[1500:]
    fpr = 0.1
    t = magnet.threshold_for(magnet.recon_errors(ae, calib), fpr)
    rate = float((magnet.recon_errors(ae, check) > t).float().mean())
    # binomial sd of each estimate ~0.008 at n=1500; 0.04 is > 3 sd of their difference
    assert abs(rate - fpr) < 0.04


@pytest.fixture(scope="module")
def defender(reformer, trained_smallcnn):
    ae = copy.deepcopy(reformer[0])
    clf, xt, yt = trained_smallcnn
    t = float(magnet.recon_errors(ae, xt).median())  # half the clean test images are rejected
    return magnet.build_defender("magnet", copy.deepcopy(clf), ae, t, 10.0), t, xt, yt


def test_errors_count_rejected_clean_as_error_and_rejected_adversarial_as_defended(defender):
    d, t, x, y = defender
    with torch.no_grad():
        wrong = d.model(x).argmax(1) != y
        rejected = magnet.recon_error(d.model[0], x) > t
    assert 0 < int(rejected.sum()) < len(x) and 0 < int(wrong.sum())
    assert torch.equal(d.reject(x), rejected)
    assert torch.equal(d.errors(x, y, clean=True), wrong | rejected)
    assert torch.equal(d.errors(x, y, clean=False), wrong & ~rejected)
    with torch.no_grad():  # the white-box model is classifier(reformer(x))
        assert torch.allclose(d.model(x), d.classifier(d.model[0](x)))


def test_white_box_loss_penalises_exceeding_the_threshold(defender):
    d, t, x, y = defender
    with torch.no_grad():
        err = magnet.recon_error(d.model[0], x)
        ce = F.cross_entropy(d.model(x), y, reduction="none")
        loss = d.attack_loss(d.model, x, y)
    above = err > t
    assert torch.allclose(loss[~above], ce[~above])
    assert torch.allclose(loss[above], ce[above] - 10.0 * (err[above] - t), atol=1e-5)


def test_white_box_attack_with_the_penalty_is_detected_less_often(defender):
    d, _, x, y = defender
    x, y = x[:100], y[:100]
    ae, clf = d.model[0], d.classifier
    t = float(magnet.recon_errors(ae, x).quantile(0.99))
    plain = magnet.build_defender("m", clf, ae, t, detector_weight=0.0)
    aware = magnet.build_defender("m", clf, ae, t, detector_weight=1000.0)
    x_plain = pgd(plain.model, x, y, 0.3, steps=10, loss=plain.attack_loss)
    x_aware = pgd(aware.model, x, y, 0.3, steps=10, loss=aware.attack_loss)
    assert aware.reject(x_aware).float().mean() < plain.reject(x_plain).float().mean() - 0.2


def test_the_whole_defense_module_classifies_with_its_detector(defender):
    d, t, xt, yt = defender
    whole = magnet.MagNet(d.model[0], d.classifier, t).eval()
    with torch.no_grad():
        pred = whole(xt).argmax(1)
    rejected = pred == 10  # the extra last column: rejected by the detector
    assert 0 < int(rejected.sum()) < len(xt)  # the threshold is the median: some of each
    wrong, rej = d.outcome(xt, yt)
    assert torch.equal(rejected, rej)
    assert torch.equal((pred != yt) & ~rejected, wrong & ~rej)  # adversarial rule: error = wrong, accepted
    assert torch.equal(pred != yt, d.errors(xt, yt, clean=True))  # clean rule: a rejection is an error


def test_checkpoint_round_trip_through_load_defender(defender, tmp_path):
    d, t, x, y = defender
    ae, clf = d.model[0], d.classifier
    meta = magnet.magnet_meta(classifier_meta("smallcnn", x.shape, 10, defender="magnet"), ae, t,
                              10.0, 0.01, 0.1)
    save_checkpoint(clf, meta, tmp_path / "magnet.pt", reformer=ae.state_dict())
    loaded = load_defender("magnet", str(tmp_path / "magnet.pt"))
    assert loaded.meta["kind"] == "magnet" and loaded.meta["threshold"] == t
    assert torch.equal(loaded.errors(x, y, clean=True), d.errors(x, y, clean=True))
    assert torch.equal(loaded.errors(x, y, clean=False), d.errors(x, y, clean=False))
    with torch.no_grad():
        assert torch.allclose(loaded.attack_loss(loaded.model, x, y), d.attack_loss(d.model, x, y))
