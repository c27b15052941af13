"""The in-process federated simulation: the issue's accuracy claims, the CLI and its plot.

Runs are small but real: 8 clients on Dirichlet(0.5) shards of the shipped digits, 20 rounds,
the MLP. Each takes about half a second, so every claim is checked on every CI run.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from p2pnode_simulations.federated import FederatedConfig, main, parse_args, run_federated
from p2pnode_simulations.plots import Series, accuracy_chart, training_chart

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clean() -> float:
    result = run_federated(FederatedConfig(clients=8, rounds=20, alpha=0.5, model="mlp", seed=0))
    assert result.accuracy >= 0.95, result.accuracy
    assert result.centralized - result.accuracy <= 0.01, (result.accuracy, result.centralized)
    assert all(r.outliers == () for r in result.rounds)  # FedAvg flags nothing without clipping
    return result.accuracy


def test_clean_run_reaches_95_percent_within_a_point_of_centralized(clean: float) -> None:
    assert clean >= 0.95


def _attacked(rule: str, seed: int = 0, mixing: bool | None = None) -> FederatedConfig:
    return FederatedConfig(
        rule=rule, mixing=mixing, attackers=2, attack="sign_flip", attack_scale=10.0, seed=seed
    )


def test_fedavg_collapses_under_two_flipping_scaling_attackers() -> None:
    result = run_federated(_attacked("fedavg"), centralized=False)
    assert result.rule_name == "fedavg"  # the default leaves FedAvg plain
    assert result.accuracy < 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_rules_in_their_default_configuration_stay_within_two_points(seed: int) -> None:
    # The claim, as a user runs it: `--rule X` with nothing else, so NNM in front (the
    # library default for robust rules), against clean default FedAvg on the same seed.
    clean_acc = run_federated(FederatedConfig(seed=seed), centralized=False).accuracy
    for rule in ("trimmed_mean", "krum", "centered_clip"):
        result = run_federated(_attacked(rule, seed), centralized=False)
        assert result.rule_name == f"nnm+{rule}"
        assert result.accuracy >= clean_acc - 0.02, (rule, seed, result.accuracy, clean_acc)
        # The evidence points at the attackers and at nobody else, every round.
        assert all(r.attackers_flagged == 2 and r.honest_flagged == 0 for r in result.rounds)


@pytest.mark.parametrize("rule", ["trimmed_mean", "krum", "centered_clip", "median"])
def test_plain_robust_rules_survive_but_lose_accuracy_on_non_iid(rule: str) -> None:
    # Without nearest-neighbour mixing (mixing=False) the rules still hold off the attack (far
    # above FedAvg's collapse), but trimming non-IID clients costs several points: why NNM is on
    # by default for them.
    result = run_federated(_attacked(rule, mixing=False), centralized=False)
    assert result.rule_name == rule
    assert result.accuracy > 0.75, (rule, result.accuracy)


@pytest.mark.parametrize("attack", ["scaled", "gaussian", "label_flip"])
def test_other_attacks_are_held_off_by_trimmed_mean(attack: str, clean: float) -> None:
    cfg = FederatedConfig(rule="trimmed_mean", attackers=2, attack=attack, seed=0)
    result = run_federated(cfg, centralized=False)
    assert result.accuracy >= clean - 0.03, (attack, result.accuracy)


def test_top_one_percent_with_error_feedback_trains_at_50x_fewer_bytes(clean: float) -> None:
    with_ef = run_federated(FederatedConfig(compression="topk", ratio=0.01), centralized=False)
    without = run_federated(
        FederatedConfig(compression="topk", ratio=0.01, error_feedback=False), centralized=False
    )
    assert with_ef.accuracy >= without.accuracy
    assert with_ef.accuracy >= clean - 0.03
    # float16 values and 2-byte offsets: 4 bytes per kept coordinate + 32 (91.5x on the MLP).
    assert 4 * with_ef.params_count / with_ef.bytes_per_update >= 90


def test_cli_mixing_defaults_to_the_library_default_and_can_be_switched_off() -> None:
    assert parse_args(["--rule", "krum"])[0].mixing is None
    assert parse_args(["--rule", "krum", "--no-mixing"])[0].mixing is False
    assert parse_args(["--rule", "fedavg", "--mixing"])[0].mixing is True
    cfg = parse_args(["--compression", "topk", "--sparse-values", "float32"])[0]
    assert cfg.sparse_values == "float32"


def test_runs_are_reproducible() -> None:
    cfg = FederatedConfig(rounds=3, compression="int8", seed=4)
    a = run_federated(cfg, centralized=False)
    b = run_federated(cfg, centralized=False)
    assert [r.accuracy for r in a.rounds] == [r.accuracy for r in b.rounds]


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(matplotlib.image.imread(path))


def test_accuracy_chart_draws_each_series(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    accuracy_chart(path, [Series("a", [0.1, 0.5, 0.9]), Series("b", [0.2])], width=300, height=200)
    img = _read_png(path)
    assert img.shape[:2] == (200, 300)
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 10  # more than a blank canvas
    with pytest.raises(ValueError):
        accuracy_chart(path, [])


def test_training_chart_writes_a_png(tmp_path: Path) -> None:
    history = [
        {"round": r, "accuracy": 0.5 + r / 10, "loss": 1.0 / r, "phases": {"training": 0.3 * r}}
        for r in (1, 2, 3)
    ]
    path = tmp_path / "t.png"
    training_chart(path, history, centralized=[0.7, 0.8, 0.9], title="demo")
    assert _read_png(path).shape[:2] == (800, 900)
    with pytest.raises(ValueError):
        training_chart(path, [])


def test_cli_writes_report_and_plot_and_ends_with_the_accuracy_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["--clients", "4", "--rounds", "3", "--rule", "median", "--out", str(tmp_path)])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"accuracy=(\d\.\d+) centralized=(\d\.\d+)", last)
    assert m, last
    report = (tmp_path / "report.md").read_text()
    assert report.count("\n| ") == 4  # header row + 3 rounds
    img = _read_png(tmp_path / "accuracy.png")
    assert img.shape[:2] == (500, 800)


def test_python_dash_m_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pnode_simulations.federated",
            "--clients=8",
            "--rounds=2",
            "--alpha=0.5",
            "--model=softmax",
            "--rule=krum",
            "--compression=int8",
            "--optimizer=adam",
            "--server-lr=0.01",
            "--attackers=2",
            "--attack=gaussian",
            f"--out={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert re.fullmatch(r"accuracy=\S+ centralized=\S+", out.stdout.strip().splitlines()[-1])
    bad = subprocess.run(
        [sys.executable, "-m", "p2pnode_simulations.federated", "--attackers=9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "attackers" in bad.stderr
