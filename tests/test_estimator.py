"""scikit-learn estimators: API checks, certificate, Pipeline and GridSearchCV."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from cvxsnn.estimator import (
    EXPECTED_FAILED_CHECKS,
    ConvexSNNClassifier,
    ConvexSNNRegressor,
    encode_labels,
)
from cvxsnn.solver import duality_gap
from cvxsnn.tasks import make_task


def _xor(n=200, T=6, seed=0):
    td = make_task("xor", steps=T, n_train=n, n_val=2, n_test=2, seed=seed)
    X = td.train.x.numpy().transpose(1, 0, 2)  # (n, T, d)
    return X, td.train.targets[-1, :, 0].numpy()


@parametrize_with_checks(
    [
        ConvexSNNClassifier(branches=4, width=8, random_state=0),
        ConvexSNNRegressor(branches=4, width=16, random_state=0),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_fit_certified_and_network_reproduces_dictionary():
    X, y = _xor()
    clf = ConvexSNNClassifier(branches=4, width=16, random_state=0, rho=0.01).fit(X, y)
    fit = clf.fit_
    # independent recomputation of the certificate from the stored dictionary
    Y, heads, _, _ = encode_labels(y, 2, "squared")
    cert = duality_gap(fit.dictionary.atoms, Y, clf.coef_, clf.intercept_, 0.01, heads=heads)
    assert cert.gap == pytest.approx(clf.dual_gap_, abs=1e-12)
    assert clf.certified_ and cert.rel_gap <= 1e-6
    # the network's decision equals D W + b on the training rows
    dec = clf.decision_function(X)
    ref = fit.dictionary.atoms @ clf.coef_[:, 0] + clf.intercept_[0]
    np.testing.assert_allclose(dec, ref, atol=1e-9)
    assert clf.classes_.tolist() == [0, 1]
    assert clf.n_features_in_ == X.shape[1] * X.shape[2]
    assert isinstance(clf.network_, torch.nn.Module)


def test_2d_input_with_n_steps_equals_3d():
    X, y = _xor(n=120)
    a = ConvexSNNClassifier(branches=2, width=8, rho=0.02, random_state=1).fit(X, y)
    b = ConvexSNNClassifier(branches=2, width=8, rho=0.02, random_state=1, n_steps=6)
    b.fit(X.reshape(len(X), -1), y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X.reshape(len(X), -1)))
    with pytest.raises(ValueError, match="multiple of n_steps"):
        ConvexSNNClassifier(n_steps=5).fit(X.reshape(len(X), -1), y)
    with pytest.raises(ValueError, match=r"\(T, d\)"):
        a.predict(X[:, :5])


def test_parameter_validation_message():
    X, y = _xor(n=40)
    with pytest.raises(InvalidParameterError, match="The 'tol' parameter of ConvexSNNClassifier"):
        ConvexSNNClassifier(tol=-1.0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="'loss' parameter"):
        ConvexSNNClassifier(loss="hinge").fit(X, y)


@pytest.mark.parametrize("loss", ["logistic", "softmax"])
def test_predict_proba(loss):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3, 2))
    y = (X[:, -1, 0] > 0).astype(int) + (X[:, -1, 1] > 0.5).astype(int)  # 3 classes
    clf = ConvexSNNClassifier(branches=3, width=8, loss=loss, rho=0.01, random_state=0)
    clf.fit(X, y)
    p = clf.predict_proba(X)
    assert p.shape == (90, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[p.argmax(axis=1)], clf.predict(X))
    assert not hasattr(ConvexSNNClassifier(loss="squared"), "predict_proba")


def test_pipeline_and_grid_search_over_rho():
    X, y = _xor(n=160)
    X2 = X.reshape(len(X), -1)
    pipe = make_pipeline(
        FunctionTransformer(lambda Z: 2.0 * Z),
        ConvexSNNClassifier(branches=2, width=8, n_steps=6, random_state=0),
    )
    gs = GridSearchCV(pipe, {"convexsnnclassifier__rho": [0.1, 0.01]}, cv=2).fit(X2, y)
    assert gs.best_params_["convexsnnclassifier__rho"] in (0.1, 0.01)
    assert 0.0 <= gs.score(X2, y) <= 1.0


def test_import_cvxsnn_stays_light():
    code = (
        "import sys, cvxsnn; "
        "print(any(m in sys.modules for m in ('sklearn', 'snntorch', 'nir', 'matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
