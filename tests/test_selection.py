"""Model selection uses the in-domain dev metrics of the trained tasks only: MELD and the
metrics reported beside the paper's never move a dev score, a mean rank or a promotion."""

from __future__ import annotations

import pytest

from scd_core.evaluation import dev_score, selection_metrics
from tuning.leaderboard import build_leaderboard
from tuning.promote import choose_run
from tuning.tracking import CHILD, Tracking

SWEEP = "selection"
# Trial "a" wins four of the six in-domain metrics, "b" the other two.
IN_DOMAIN = {
    "a": {"mosei_mmf1": 0.60, "mosei_mwacc": 0.61, "fiv2_macc": 0.90, "fiv2_mccc": 0.40, "bah_mf1": 0.50, "bah_uar": 0.49},
    "b": {"mosei_mmf1": 0.55, "mosei_mwacc": 0.58, "fiv2_macc": 0.89, "fiv2_mccc": 0.35, "bah_mf1": 0.52, "bah_uar": 0.51},
}
NOT_SELECTED = ("meld_mf1", "meld_wf1", "meld_uar", "mosei_mf1_present", "fiv2_mccc_pooled")


def log_best(tracking: Tracking, run_id: str, metrics: dict[str, float], step: int) -> None:
    client = tracking.client()
    for name, value in metrics.items():
        client.log_metric(run_id, f"best/{name}", value, step=step)


def board_ranks(tracking: Tracking) -> dict[str, float]:
    return {r["trial"]: r["mean_rank"] for r in build_leaderboard(tracking, SWEEP).rows}


@pytest.fixture
def sweep(tmp_path, mlflow_uri) -> tuple[Tracking, dict[str, str]]:
    """Two finished trial runs of one sweep, with their best dev metrics and score."""
    tracking = Tracking(mlflow_uri, artifact_location=str(tmp_path / "artifacts"))
    client = tracking.client()
    ids = {}
    for name, metrics in IN_DOMAIN.items():
        run = client.create_run(tracking.experiment_id(client), run_name=name,
                                tags={"sweep": SWEEP, "role": CHILD, "trial_id": name})
        ids[name] = run.info.run_id
        log_best(tracking, ids[name], {**metrics, "dev_score": dev_score(metrics, ["emo", "pt", "ah"])}, 0)
        client.set_terminated(ids[name])
    return tracking, ids


def test_selection_metrics_are_in_domain_metrics_of_the_trained_tasks():
    assert selection_metrics(["pt"]) == ("fiv2_macc", "fiv2_mccc")
    assert selection_metrics(["ah", "emo"]) == ("mosei_mmf1", "mosei_mwacc", "bah_mf1", "bah_uar")
    assert set(selection_metrics()) == {m for metrics in IN_DOMAIN.values() for m in metrics}


def test_dev_score_ignores_meld_and_reported_metrics():
    metrics = IN_DOMAIN["a"]
    score = dev_score(metrics, ["emo", "pt", "ah"])
    assert score == pytest.approx((0.605 + 0.65 + 0.495) / 3)
    assert dev_score({**metrics, **{m: 0.0 for m in NOT_SELECTED}}, ["emo", "pt", "ah"]) == score


def test_meld_and_reported_metrics_never_move_ranks_or_promotion(sweep):
    tracking, ids = sweep
    # Every metric that is not selected on favours "a" first, then "b" by a wide margin.
    for step, (high, low) in enumerate([("a", "b"), ("b", "a")], start=1):
        log_best(tracking, ids[high], {m: 0.9 for m in NOT_SELECTED}, step)
        log_best(tracking, ids[low], {m: 0.1 for m in NOT_SELECTED}, step)
        board = build_leaderboard(tracking, SWEEP)
        assert set(NOT_SELECTED) <= set(board.columns)  # reported beside the ranked metrics
        # a: ranks 1, 1, 1, 1, 2, 2 on the six in-domain metrics; b the converse.
        assert board_ranks(tracking) == {"a": pytest.approx(8 / 6), "b": pytest.approx(10 / 6)}
        assert choose_run(tracking, SWEEP) == ids["a"]


def test_single_task_trials_rank_on_their_own_metrics(sweep):
    tracking, ids = sweep
    client = tracking.client()
    for name in ("c", "d"):  # a PT-only sweep: only FIv2 metrics exist
        run = client.create_run(tracking.experiment_id(client), run_name=name,
                                tags={"sweep": "pt-only", "role": CHILD, "trial_id": name})
        log_best(tracking, run.info.run_id, {"fiv2_macc": 0.9 if name == "c" else 0.8,
                                             "fiv2_mccc": 0.3 if name == "c" else 0.2,
                                             "meld_mf1": 0.1 if name == "c" else 0.9, "dev_score": 0.5}, 0)
        client.set_terminated(run.info.run_id)
    ranks = {r["trial"]: r["mean_rank"] for r in build_leaderboard(tracking, "pt-only").rows}
    assert ranks == {"c": 1.0, "d": 2.0}
