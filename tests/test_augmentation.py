"""Data augmentation as searched regularizers: the spec, the draws, each operation against its
definition, training rows only, and the same augmentation in both engines and any stack."""

from __future__ import annotations

import math
import re

import numpy as np
import optuna
import pytest
import torch
from device_tests import DEVICE
from equivalence import assert_close, assert_identical
from torch.nn import functional as F

from service.store.warmstart import fitting, misfit
from trainer import rng
from trainer.data.builtin_sets import load_builtin
from trainer.engines import augmentation as aug
from trainer.engines.augmentation import Augmentation, StackedAugmentation
from trainer.engines.per_trial import cross_validate
from trainer.engines.population import Population, train_population
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import SpecError, StudySpec
from trainer.tuning.cv_protocol import CVProtocol
from trainer.tuning.refit import refit
from trainer.tuning.space import grid, searched, suggest

# benchmarks/gpu_check.sh runs the engine comparisons on the GPU.
EVERY = {"noise": 0.3, "mixup": 0.4, "shift": 1, "flip": 0.5, "rotate": 20.0, "scale": 0.15}


def config(spec: StudySpec, **augment: float) -> TrialConfig:
    base = {"weight_decay": 1e-3, "l1": 1e-5, "dropout": 0.0, "bn_momentum": 0.3, "patience": 4}
    return TrialConfig.from_values(spec, base | {f"augment.{k}": v for k, v in augment.items()})


def problems(search_space: dict) -> dict[str, str]:
    """The spec's errors as {'dotted.field': message}."""
    try:
        StudySpec.model_validate({"dataset": "builtin:digits", "search_space": search_space})
    except Exception as exc:  # pydantic's ValidationError
        return {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}  # type: ignore[attr-defined]
    return {}


# --- the spec and the draws -----------------------------------------------------------------


def test_augmentations_are_given_dotted_or_nested_and_are_off_when_absent() -> None:
    dotted = {"augment.noise": {"low": 0.0, "high": 0.5}, "augment.shift": 2}
    nested = {"augment": {"noise": {"low": 0.0, "high": 0.5}, "shift": 2}}
    specs = [StudySpec(dataset="builtin:digits", search_space=s) for s in (dotted, nested)]
    assert specs[0].search_space == specs[1].search_space
    written = specs[0].model_dump(mode="json")["search_space"]
    assert written["augment.noise"] == {"low": 0.0, "high": 0.5, "log": False}
    assert written["augment.shift"] == 2 and "augment" not in written
    assert StudySpec.model_validate(specs[0].model_dump(mode="json")) == specs[0]
    plain = StudySpec(dataset="builtin:digits")
    assert not any(k.startswith("augment") for k in plain.model_dump()["search_space"])
    assert TrialConfig.from_values(plain, config(plain).hyperparameters()).augmentation == (
        Augmentation()
    )


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"augment.noise": -0.1}, "noise", "[0, inf)"),
        ({"augment.mixup": 0}, "mixup", "(0, inf)"),
        ({"augment.shift": 1.5}, "shift", "an integer"),
        ({"augment": {"flip": [0.2, 1.5]}}, "flip", "[0, 1]"),
        ({"augment.rotate": {"low": 0, "high": 270}}, "rotate", "[0, 180]"),
        ({"augment.scale": 1}, "scale", "[0, 1)"),
        ({"augment.scale": "big"}, "scale", "got 'big'"),
        ({"augment.blur": 1}, "blur", "Extra inputs are not permitted"),
    ],
)
def test_an_augmentation_out_of_its_domain_is_refused_by_name(
    entry: dict, field: str, fragment: str
) -> None:
    found = problems(entry)
    where = f"search_space.augment.{field}"
    assert list(found) == [where] and fragment in found[where], found


def test_optuna_draws_each_augmentation_under_its_name() -> None:
    spec = StudySpec(
        dataset="builtin:digits",
        search_space={
            "augment.noise": {"low": 0.01, "high": 1.0, "log": True},
            "augment.shift": {"low": 0, "high": 3},
            "augment.flip": [0.0, 0.5],
            "augment.rotate": 10,
        },
    )
    assert {"augment.noise", "augment.shift", "augment.flip", "augment.rotate"} <= set(
        searched(spec)
    )
    assert grid(spec, 4)["augment.shift"] == [0, 1, 2, 3]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        trial = study.ask()
        values = suggest(trial, spec)
        assert isinstance(trial.params["augment.shift"], int)
        assert 0.01 <= trial.params["augment.noise"] <= 1.0
        assert values["augment.rotate"] == 10 and "augment.rotate" not in trial.params
        drawn = TrialConfig.from_values(spec, values)
        assert drawn.augmentation.shift == values["augment.shift"]
        recorded = drawn.hyperparameters()  # what a trial records and the final model reads
        assert TrialConfig.from_values(spec, recorded) == drawn
        assert recorded["augment.rotate"] == 10.0


@pytest.mark.parametrize(
    ("dataset", "entry", "message"),
    [
        ("builtin:wine", "rotate", "needs images [C, H, W], the dataset is a table of 13 features"),
        ("builtin:wine", "shift", "needs signals [C, L] or images [C, H, W]"),
        ("builtin:mnist1d:600", "flip", "the dataset is signals [C, L] = [1, 40]"),
        ("builtin:mnist1d:600", "scale", "needs images [C, H, W]"),
    ],
)
def test_an_augmentation_the_data_cannot_take_is_a_spec_error(
    dataset: str, entry: str, message: str
) -> None:
    spec = StudySpec(dataset=dataset, search_space={f"augment.{entry}": EVERY[entry]})
    with pytest.raises(SpecError, match=re.escape(message)) as raised:
        CVProtocol.of(spec, load_builtin(dataset), check_network=False)
    assert raised.value.field == f"search_space.augment.{entry}"
    assert str(raised.value).startswith(f"search_space.augment.{entry}: ")


def test_what_each_data_can_take_passes() -> None:
    for dataset, entries in (
        ("builtin:wine", ["noise", "mixup"]),
        ("builtin:mnist1d:600", ["noise", "mixup", "shift"]),
        ("builtin:digits", list(EVERY)),
    ):
        spec = StudySpec(dataset=dataset, search_space={f"augment.{e}": EVERY[e] for e in entries})
        CVProtocol.of(spec, load_builtin(dataset))


# --- each operation against its definition -------------------------------------------------


def test_flip_reverses_the_last_axis_where_drawn() -> None:
    x = torch.arange(2 * 3 * 1 * 2 * 4, dtype=torch.float32).view(2, 3, 1, 2, 4)
    drawn = torch.tensor([[True, False, True], [False, False, True]])
    out = aug.flip(x, drawn)
    for m in range(2):
        for i in range(3):
            want = x[m, i].flip(-1) if drawn[m, i] else x[m, i]
            assert torch.equal(out[m, i], want)


def test_shift_moves_by_the_drawn_integer_with_zero_fill() -> None:
    x = torch.arange(1, 1 + 2 * 5 * 5, dtype=torch.float32).view(1, 2, 1, 5, 5)
    offsets = torch.tensor([[[1, -2], [0, 0]]])  # sample 0: down 1, left 2; sample 1: none
    out = aug.shift(x, offsets)
    image = x[0, 0, 0]
    want = torch.zeros(5, 5)
    want[1:, :3] = image[:4, 2:]  # out[i, j] = x[i − 1, j + 2]
    assert torch.equal(out[0, 0, 0], want)
    assert torch.equal(out[0, 1], x[0, 1])
    signal = torch.arange(1.0, 7.0).view(1, 1, 1, 6)  # [C, L]
    assert aug.shift(signal, torch.tensor([[[2]]])).flatten().tolist() == [0, 0, 1, 2, 3, 4]


def test_rotate_by_90_degrees_matches_rot90() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, 6, 6)
    quarter = torch.full((1, 2), math.pi / 2)
    out = aug.affine(x, quarter, torch.ones(1, 2), torch.tensor([True]))
    torch.testing.assert_close(out, torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)
    # A zoom by 2 at 0°: the centre pixels of an image constant there stay; a model that is
    # off keeps its images bit for bit.
    flat = torch.ones(2, 1, 1, 4, 4)
    zoom = aug.affine(flat, torch.zeros(2, 1), torch.full((2, 1), 2.0), torch.tensor([True, False]))
    torch.testing.assert_close(zoom[0, 0, 0], torch.ones(4, 4))
    assert torch.equal(zoom[1], flat[1])


def test_noise_has_its_sigma_and_mixup_its_beta() -> None:
    keys = rng.keys(torch.arange(4), 7)
    z = aug.normal(keys, (500, 64))
    assert z.mean().item() == pytest.approx(0.0, abs=0.01)
    assert z.std().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(aug.normal(keys, (3, 64)), z[:, :3])  # a row's draws: its own
    many = rng.keys(torch.arange(20000), 3)
    for alpha in (0.1, 0.4, 1.0, 4.0):
        lam = aug.beta(many, torch.full((20000,), alpha))
        assert ((lam >= 0) & (lam <= 1)).all()
        assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
        # Var Beta(α, α) = 1/(4(2α + 1))
        assert lam.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_mix_pairs_rows_and_their_targets_with_one_lambda() -> None:
    x = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    y = F.one_hot(torch.tensor([[0, 1, 2, 1]]), 3).float()
    pairs, lam = torch.tensor([[2, 0, 3, 1]]), torch.tensor([0.3])
    out, soft = aug.mix(x, y, pairs, lam)
    torch.testing.assert_close(out, 0.3 * x + 0.7 * x[:, [2, 0, 3, 1]])
    torch.testing.assert_close(soft, 0.3 * y + 0.7 * y[:, [2, 0, 3, 1]])


def partners(x: torch.Tensor, mixed: torch.Tensor) -> tuple[list[int], list[float]]:
    """For each row of ``mixed`` ``[b, d]``, the row j of ``x`` and the λ with mixed[i] =
    λx[i] + (1 − λ)x[j] (j = i, λ = 1: the row as it was)."""
    found: list[tuple[int, float]] = []
    for i in range(len(x)):
        if torch.allclose(mixed[i], x[i], atol=1e-5):
            found.append((i, 1.0))
            continue
        fits = []
        for j in range(len(x)):
            step = x[i] - x[j]
            lam = float((mixed[i] - x[j]) @ step / (step @ step)) if j != i else math.nan
            if j != i and torch.allclose(lam * x[i] + (1 - lam) * x[j], mixed[i], atol=1e-5):
                fits.append((j, lam))
        assert len(fits) == 1, fits
        found += fits
    return [j for j, _ in found], [lam for _, lam in found]


def test_the_stack_applies_each_models_own_values() -> None:
    """Noise of σ per model, mixup's targets mixed with the λ of its inputs and padding rows
    never paired with real ones, a model with neither untouched."""
    M, b, C = 3, 6, 4
    stack = StackedAugmentation(M, (5,), "classification", C, "cpu")
    stack.load(slice(0, 1), Augmentation(noise=2.0))
    stack.load(slice(1, 2), Augmentation(mixup=50.0))  # λ near 1/2: every pair shows
    stack.use([Augmentation(noise=2.0), Augmentation(mixup=50.0), Augmentation()])
    torch.manual_seed(0)
    x = torch.randn(M, b, 5)
    y = torch.tensor([[0, 1, 2, 3, 0, 1]] * M)
    valid = torch.arange(b)[None, :] < torch.tensor([6, 4, 6])[:, None]
    keys = aug.step_keys(rng.keys(torch.tensor([1, 2, 3]), 0), 2)[1]
    out, soft = stack.apply(x, y, valid, keys, b)
    noise = aug.normal(keys[aug.OPS.index("noise")], (b, 5))
    torch.testing.assert_close(out[0], x[0] + 2.0 * noise[0])
    assert torch.equal(out[2], x[2]) and torch.equal(soft[2], F.one_hot(y[2], C).float())
    pairs, lams = partners(x[1], out[1])
    assert sorted(pairs[:4]) == [0, 1, 2, 3] and sorted(pairs[4:]) == [4, 5]
    lam = next(v for v in lams if v != 1.0)
    assert 0 <= lam <= 1 and all(v == pytest.approx(lam, abs=1e-4) for v in lams if v != 1.0)
    onehot = F.one_hot(y[1], C).float()
    for i, j in enumerate(pairs):
        want = onehot[i] if i == j else lam * onehot[i] + (1 - lam) * onehot[j]
        torch.testing.assert_close(soft[1, i], want)


def test_an_augmented_batch_depends_on_the_models_key_and_values_only() -> None:
    values = Augmentation(**EVERY)  # type: ignore[arg-type]
    x, y = torch.randn(1, 8, 64), torch.randint(0, 10, (1, 8))
    keys = aug.step_keys(rng.keys(torch.tensor([5]), 3), 4)[2]

    def alone() -> tuple[torch.Tensor, torch.Tensor]:
        stack = StackedAugmentation(1, (1, 8, 8), "classification", 10, "cpu")
        stack.load(slice(0, 1), values)
        stack.use([values])
        return stack.apply(x, y, None, keys, 8)

    first, again = alone(), alone()
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], x)
    # Beside a neighbour with other values and another seed, in a stack of three.
    stack = StackedAugmentation(3, (1, 8, 8), "classification", 10, "cpu")
    stack.load(slice(0, 1), Augmentation(noise=1.0, rotate=90.0))
    stack.load(slice(1, 2), values)
    stack.use([Augmentation(noise=1.0, rotate=90.0), values])
    neighbour_keys = aug.step_keys(rng.keys(torch.tensor([9, 5, 0]), 3), 4)[2]
    batch = torch.cat([torch.randn(1, 8, 64), x, torch.randn(1, 8, 64)])
    out, soft = stack.apply(batch, torch.cat([y, y, y]), None, neighbour_keys, 8)
    torch.testing.assert_close(out[1], first[0][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(soft[1], first[1][0], rtol=0, atol=1e-6)


# --- training rows only, and the same in both engines --------------------------------------


def test_validation_and_scored_rows_are_never_augmented(digits) -> None:
    """A huge noise changes training, yet the population's validation loss and score are those
    of its exported fold model on the rows as they are."""
    spec = StudySpec(
        dataset=digits.name,
        model={"hidden": [16], "batch_norm": False},
        training={"max_epochs": 2},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, digits).splits
    noisy, plain = config(spec, noise=100.0), config(spec)
    results = {}
    for name, cfg in (("noisy", noisy), ("plain", plain)):
        population = Population(digits, splits, cfg, slots=1, metric="accuracy")
        population.assign(0, cfg, 3)
        population.train_epoch()
        population.end_epoch()
        results[name] = population
    noisy_pop = results["noisy"]
    assert noisy_pop.record.train_curves[0] != results["plain"].record.train_curves[0]
    result = noisy_pop.result(0)
    for k, split in enumerate(splits):
        net = noisy_pop.module(0, k)
        scaler = result.folds[k].x_scaler
        with torch.no_grad():
            val = net(torch.as_tensor(scaler.transform(digits.X[split.val])))
            scored = net(torch.as_tensor(scaler.transform(digits.X[split.score])))
        val_loss = F.cross_entropy(val, torch.as_tensor(digits.y[split.val])).item()
        assert val_loss == pytest.approx(result.folds[k].val_loss[0], rel=1e-5)
        accuracy = float((scored.argmax(1).numpy() == digits.y[split.score]).mean())
        assert accuracy == pytest.approx(result.folds[k].score, rel=1e-6)


@pytest.mark.parametrize(
    ("dataset", "model", "augment"),
    [
        ("builtin:digits", {"kind": "cnn", "channels": [4], "hidden": [8]}, EVERY),
        ("builtin:mnist1d:600", {"kind": "cnn", "channels": [4], "hidden": [8]}, {"shift": 3}),
        ("builtin:diabetes", {"hidden": [16]}, {"noise": 0.2, "mixup": 0.3}),
    ],
)
def test_both_engines_and_any_neighbours_train_the_same_augmentation(
    dataset: str, model: dict, augment: dict
) -> None:
    data = load_builtin(dataset)
    metric = "accuracy" if data.task == "classification" else "mse"
    spec = StudySpec(
        dataset=data.name,
        model=model | {"batch_norm": False},
        training={"max_epochs": 3, "batch_size": 50},
        cv={"folds": 2},
    )
    splits = CVProtocol.of(spec, data).splits
    target = config(spec, **augment)
    neighbours = [config(spec, noise=0.05), config(spec, mixup=1.0), config(spec)]
    if data.input_shape == (1, 8, 8):
        neighbours[1] = config(spec, mixup=1.0, rotate=45.0, flip=1.0)

    def beside(neighbour: TrialConfig, seed: int) -> object:
        return train_population(
            data, [neighbour, target], splits, seeds=[seed, 5], metric=metric, device=DEVICE
        )[1]

    first = beside(neighbours[0], 6)
    for seed, neighbour in enumerate(neighbours[1:], 7):
        assert_identical(first, beside(neighbour, seed))  # a stack of the same size: exactly
    alone = cross_validate(data, target, splits, metric=metric, seed=5, device=DEVICE)
    assert_close(first, alone)  # the per-trial engine: float order only
    unaugmented = cross_validate(data, config(spec), splits, metric=metric, seed=5, device=DEVICE)
    assert alone.folds[0].train_loss != unaugmented.folds[0].train_loss
    # A trial without augmentation beside an augmented one trains as beside a plain one.
    plain = config(spec)
    pair = train_population(
        data, [target, plain], splits, seeds=[6, 5], metric=metric, device=DEVICE
    )[1]
    other = train_population(
        data, [config(spec), plain], splits, seeds=[6, 5], metric=metric, device=DEVICE
    )[1]
    assert_identical(pair, other)


def test_the_refit_trains_with_the_trials_augmentation(digits) -> None:
    spec = StudySpec(dataset=digits.name, model={"hidden": [16]}, cv={"folds": 2})
    protocol = CVProtocol.of(spec, digits)
    fitted = {
        name: refit(digits, cfg, protocol.pool, protocol.test, metric="accuracy", epochs=2)
        for name, cfg in (("plain", config(spec)), ("augmented", config(spec, **EVERY)))
    }
    assert fitted["plain"].train_loss != fitted["augmented"].train_loss
    assert fitted["augmented"].config.augmentation == Augmentation(**EVERY)  # type: ignore[arg-type]


def test_augmented_targets_mix_regression_values() -> None:
    stack = StackedAugmentation(1, (3,), "regression", 1, "cpu")
    stack.load(slice(0, 1), Augmentation(mixup=1.0))
    stack.use([Augmentation(mixup=1.0)])
    x = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    y = torch.arange(4, dtype=torch.float32).view(1, 4, 1) * 10
    keys = aug.step_keys(rng.keys(torch.tensor([2]), 0), 1)[0]
    out, mixed = stack.apply(x, y, None, keys, 4)
    # x's rows are 3i + (0, 1, 2) and y = 10i: a mixed row λ·i + (1 − λ)·j reads back in both.
    position = out[0, :, 0] / 3
    np.testing.assert_allclose(mixed[0, :, 0].numpy(), 10 * position.numpy(), rtol=1e-5)


def test_a_warm_start_keeps_the_augmentations_the_new_space_searches() -> None:
    space = StudySpec(
        dataset="builtin:digits",
        search_space={"augment.noise": {"low": 0.0, "high": 0.5}, "augment.shift": [0, 2]},
    ).search_space
    kept, dropped = fitting(
        space,
        {"augment.noise": 0.2, "augment.shift": 2, "augment.flip": 0.5, "augment.noise.x": 1},
    )
    assert kept == {"augment.noise": 0.2, "augment.shift": 2}
    assert dropped == [
        "augment.flip=0.5: not a search-space parameter",
        "augment.noise.x=1: not a search-space parameter",
    ]
    assert misfit(space, "augment.noise", 0.7) == "outside [0, 0.5]"
