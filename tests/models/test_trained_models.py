"""Models trained on history: the multivariate detector, the scikit-learn wrapper, artifacts,
batch scoring, and ``fit`` on the streaming built-ins."""

from __future__ import annotations

import random

import pytest

from twinfleet.models import (
    Mahalanobis,
    MemoryArtifacts,
    ModelArtifacts,
    OutlierDetector,
    Reading,
    TrainableModel,
    default_registry,
    prescore,
)


def correlated(n: int, *, seed: int = 3) -> list[Reading]:
    """Motor current ``a`` and temperature ``b`` that move together (b ~ 2a + 20)."""
    rng = random.Random(seed)
    out: list[Reading] = []
    for i in range(n):
        a = rng.gauss(10.0, 1.0)
        out.append((float(i), {"a": a, "b": 2 * a + 20 + rng.gauss(0, 0.1)}))
    return out


def test_mahalanobis_flags_a_broken_relation_that_each_metric_alone_hides() -> None:
    registry = default_registry(plugins=False)
    multi = registry.create("mahalanobis")
    ewma = registry.create("ewma")
    for ts, values in correlated(400):
        multi.update(values, ts)
        ewma.update(values, ts)
    broken = {"a": 11.0, "b": 38.0}  # a one sd high, b one sd low: normal apart, not together
    assert not ewma.update(broken, 500.0).anomalous
    verdict = multi.update(broken, 500.0)
    assert verdict.anomalous
    assert verdict.score > 6
    assert not multi.update({"a": 11.0, "b": 42.0}, 501.0).anomalous


def test_mahalanobis_fit_state_and_parameters() -> None:
    model = Mahalanobis.create({"metrics": ["a", "b"], "warmup": 5})
    assert isinstance(model, TrainableModel)
    model.fit(correlated(300))
    again = Mahalanobis.from_state(model.state())
    assert again.state() == model.state()
    assert again.update({"a": 11.0, "b": 38.0}, 1.0) == model.update({"a": 11.0, "b": 38.0}, 1.0)
    assert model.update({"a": 1.0}, 2.0).score == 0.0  # without every metric: nothing to say
    with pytest.raises(ValueError, match="at least two metrics"):
        Mahalanobis.create({"metrics": ["a"]})
    with pytest.raises(ValueError, match="unknown mahalanobis parameters: nope"):
        Mahalanobis.create({"nope": 1})


@pytest.mark.parametrize(
    "estimator", ["isolation_forest", "lof", "one_class_svm", "elliptic_envelope"]
)
def test_sklearn_detectors_train_and_flag_an_outlier(estimator: str) -> None:
    registry = default_registry(plugins=False)
    model = registry.create("sklearn", {"estimator": estimator})
    assert not model.update({"a": 100.0, "b": 0.0}, 0.0).anomalous  # untrained: flags nothing
    assert isinstance(model, TrainableModel)
    model.fit(correlated(500))
    assert model.update({"a": 25.0, "b": -10.0}, 1.0).anomalous
    assert not model.update({"a": 10.0, "b": 40.0}, 2.0).anomalous


def test_sklearn_state_names_its_artifact_and_twins_share_one_estimator() -> None:
    backend = MemoryArtifacts()
    registry = default_registry(plugins=False, artifacts=ModelArtifacts(backend))
    model = registry.create("sklearn", {"estimator": "isolation_forest"})
    model.fit(correlated(300))
    state = model.state()
    assert set(state) == {"params", "artifact", "inputs"}  # no estimator inside
    assert state["inputs"] == ["a", "b"]
    assert backend.load_artifact(state["artifact"])
    # Another process (empty cache, same backend) brings it back from the bytes.
    elsewhere = default_registry(plugins=False, artifacts=ModelArtifacts(backend))
    one, two = (elsewhere.restore("sklearn", state) for _ in range(2))
    assert isinstance(one, OutlierDetector)
    assert isinstance(two, OutlierDetector)
    assert one.batch_group == two.batch_group == state["artifact"]
    assert one.update({"a": 30.0, "b": 0.0}, 1.0) == model.update({"a": 30.0, "b": 0.0}, 1.0)
    with pytest.raises(KeyError, match="no model artifact"):
        default_registry(plugins=False).restore("sklearn", state)


def test_sklearn_rejects_bad_parameters_and_short_history() -> None:
    registry = default_registry(plugins=False)
    with pytest.raises(ValueError, match="neither"):
        registry.create("sklearn", {"estimator": "os.system"})
    with pytest.raises(ValueError, match="no scikit-learn estimator"):
        registry.create("sklearn", {"estimator": "sklearn.ensemble.NoSuchForest"})
    with pytest.raises(ValueError, match="not an outlier detector"):
        registry.create("sklearn", {"estimator": "sklearn.linear_model.LinearRegression"})
    with pytest.raises(TypeError):
        registry.create("sklearn", {"estimator": "lof", "options": {"no_such_option": 1}})
    model = registry.create("sklearn", {"min_history": 100})
    with pytest.raises(ValueError, match="100 needed"):
        model.fit(correlated(20))


def test_prescore_gives_each_reading_the_verdict_it_would_get_alone() -> None:
    registry = default_registry(plugins=False)
    trained = registry.create("sklearn")
    trained.fit(correlated(300))
    state = trained.state()
    twins = [registry.restore("sklearn", state) for _ in range(50)]
    ewma = registry.create("ewma")  # not batch-scored: passed over
    readings = [(twin, {"a": 10.0 + i, "b": 40.0 - i}) for i, twin in enumerate(twins)]
    assert prescore([*readings, (ewma, {"a": 1.0})]) == 50
    alone = registry.restore("sklearn", state)
    for twin, values in readings:
        assert twin.update(values, 0.0) == alone.update(values, 0.0)
    # A primed verdict for other values is not handed out for these.
    twin = twins[0]
    prescore([(twin, {"a": 30.0, "b": 0.0})])
    assert twin.update({"a": 10.0, "b": 40.0}, 0.0) == alone.update({"a": 10.0, "b": 40.0}, 0.0)


@pytest.mark.parametrize("name", ["ewma", "mad", "stuck", "combined"])
def test_streaming_builtins_fit_as_if_the_history_had_streamed_in(name: str) -> None:
    registry = default_registry(plugins=False)
    history = correlated(200)
    fitted, streamed = registry.create(name), registry.create(name)
    assert isinstance(fitted, TrainableModel)
    fitted.update({"a": 1e6}, -1.0)  # fit forgets what was learnt before
    fitted.fit(history)
    for ts, values in history:
        streamed.update(values, ts)
    assert fitted.state() == streamed.state()


def test_only_static_detectors_are_pooled_over_a_family() -> None:
    registry = default_registry(plugins=False)
    assert {spec.name for spec in registry.specs() if spec.pooled} == {"sklearn"}
    assert registry.spec("sklearn").describe()["pooled"] is True


def test_a_model_behind_its_declared_inputs_is_trainable_only_if_it_is() -> None:
    from twinfleet.models import ModelSpec, SelectedInputs, Verdict, is_trainable

    class Fixed:
        name = "fixed"

        def update(self, values: object, ts: float) -> Verdict:
            return Verdict(0.0, False)

        def state(self) -> dict[str, object]:
            return {}

    spec = ModelSpec("fixed", lambda p: Fixed(), lambda s: Fixed(), inputs=("a",))
    registry = default_registry(plugins=False)
    registry.register(spec)
    assert isinstance(registry.create("fixed"), SelectedInputs)
    assert not is_trainable(registry.create("fixed"))
    assert is_trainable(registry.create("ewma"))


def test_sklearn_leaves_counters_out_of_its_default_inputs() -> None:
    history = [(ts, {**values, "energy": 10.0 + ts}) for ts, values in correlated(200)]
    model = default_registry(plugins=False).create("sklearn")
    model.fit(history)
    assert model.state()["inputs"] == ["a", "b"]  # energy only ever grows: left out
    chosen = default_registry(plugins=False).create("sklearn", {"metrics": ["a", "energy"]})
    chosen.fit(history)
    assert chosen.state()["inputs"] == ["a", "energy"]  # unless asked for


def test_combined_with_a_mahalanobis_spread_finds_broken_relations_and_frozen_metrics() -> None:
    registry = default_registry(plugins=False)
    model = registry.create("combined", {"spread": "mahalanobis", "stuck": {"repeats": 5}})
    for ts, values in correlated(400):
        model.update(values, ts)
    assert model.update({"a": 11.0, "b": 38.0}, 400.0).anomalous  # the relation breaks
    frozen = [model.update({"a": 10.0, "b": 40.0}, 401.0 + k) for k in range(40)]
    assert any(v.anomalous for v in frozen)  # and then the metrics freeze
    state = model.state()
    assert state["spread"] == "mahalanobis"
    assert registry.restore("combined", state).state() == state
    assert "spread" not in registry.create("combined").state()  # ewma: as before
    with pytest.raises(ValueError, match="spread 'iforest' is not one of ewma, mahalanobis"):
        registry.create("combined", {"spread": "iforest"})
    with pytest.raises(ValueError, match="unknown combined parameters: ewma"):
        registry.create("combined", {"spread": "mahalanobis", "ewma": {}})
