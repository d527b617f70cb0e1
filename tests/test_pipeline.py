"""The whole asset graph materialized through Dagster on a slice of the real BBC News corpus."""

import dagster as dg
import pytest

from embetter_assets.defs.refresh import default_resources, materialize_everything
from embetter_assets.demo import LABEL_FILE, TEXT_FILE, prepare_demo_data
from embetter_assets.summary import closing_summary
from embetter_assets.store import EmbeddingStore

PER_TOPIC = 20
N_TRAIN = 50
N_TEST = 40


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_demo_data(data_dir, n_train=N_TRAIN, n_test=N_TEST, limit_per_topic=PER_TOPIC)
    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources(data_dir)
    results = materialize_everything(
        instance,
        text_keys=[TEXT_FILE],
        label_keys=[LABEL_FILE],
        data_dir=data_dir,
        resources=resources,
        run_config={"ops": {"trained_finetuner": {"config": {"n_epochs": 50}}}},
        log_level="INFO",
    )
    return data_dir, instance, resources, results


@pytest.mark.slow
def test_pipeline_materializes_every_asset(materialized):
    _, instance, _, results = materialized

    assert all(result.success for result in results)
    for name in [
        "raw_texts", "base_embeddings", "labelled_subset", "trained_finetuner", "finetuned_embeddings", "evaluation_report",
        "labelling_queue",
    ]:
        assert instance.get_latest_materialization_event(dg.AssetKey(name)) is not None, name


@pytest.mark.slow
def test_pipeline_fills_every_table(materialized):
    data_dir, _, _, _ = materialized
    store = EmbeddingStore(data_dir / "embetter.duckdb")
    n_texts = 5 * PER_TOPIC

    def count(table: str) -> int:
        return store.query(f"SELECT count(*) AS n FROM {table}")["n"][0]

    assert count("texts") == n_texts
    assert count("base_embeddings") == n_texts
    assert count("labels") == N_TRAIN + N_TEST
    assert count("finetuners") == 1
    assert count("finetuned_embeddings") == n_texts
    assert count("evaluation_reports") >= 6
    assert count("text_embeddings") == n_texts
    assert count("labelling_queue") == min(50, store.unlabelled_texts().height)
    assert count("labelling_queue") > 0
    assert (data_dir / "queue" / "labelling_queue_v1.csv").is_file()
    assert store.query("SELECT DISTINCT array_length(embedding) AS width FROM base_embeddings")["width"].to_list() == [384]


@pytest.mark.slow
def test_pipeline_report_writes_charts_page_and_metadata(materialized):
    data_dir, instance, _, _ = materialized
    event = instance.get_latest_materialization_event(dg.AssetKey("evaluation_report"))
    metadata = event.asset_materialization.metadata
    report_dir = data_dir / "reports" / "v1"

    for chart in ["pca_base", "pca_feedforward", "pca_contrastive", "learning_curve"]:
        assert (report_dir / f"{chart}.png").stat().st_size > 1000, chart
        assert metadata[chart].value.startswith("!["), chart
    assert "data:image/png;base64," in (report_dir / "report.html").read_text()
    assert metadata["recommendation"].value.startswith("**")
    assert 0.0 <= metadata["base_accuracy"].value <= 1.0
    assert 0.0 <= metadata["finetuned_accuracy"].value <= 1.0


@pytest.mark.slow
def test_pipeline_report_stores_scores_for_three_spaces(materialized):
    data_dir, _, _, _ = materialized
    store = EmbeddingStore(data_dir / "embetter.duckdb")

    scores = store.query("SELECT space, metric, value FROM evaluation_reports")
    summary = store.query("SELECT * FROM evaluation_summaries")
    curve = store.query("SELECT * FROM learning_curves ORDER BY n_labels")

    assert set(scores["space"]) == {"base", "feedforward", "contrastive"}
    assert set(scores["metric"]) == {"accuracy", "macro_f1", "knn5_accuracy", "cosine_silhouette"}
    assert summary.height == 1
    assert summary["recommended_space"][0] in {"base", "feedforward", "contrastive"}
    assert curve["n_labels"].max() == N_TRAIN


@pytest.mark.slow
def test_pipeline_report_runs_the_not_worse_check(materialized):
    _, _, _, results = materialized
    evaluations = [evaluation for result in results for evaluation in result.get_asset_check_evaluations()]

    not_worse = [evaluation for evaluation in evaluations if evaluation.check_name == "finetuned_not_worse_than_base"]

    assert len(not_worse) == 1
    assert "base_accuracy" in not_worse[0].metadata


@pytest.mark.slow
def test_pipeline_rerun_encodes_nothing_and_keeps_counts(materialized):
    data_dir, instance, resources, _ = materialized

    result = dg.materialize(
        __import__("embetter_assets.definitions", fromlist=["ALL_ASSETS"]).ALL_ASSETS,
        selection=["raw_texts", "base_embeddings"],
        partition_key=TEXT_FILE,
        instance=instance,
        resources=resources,
    )

    encoded = result.asset_materializations_for_node("base_embeddings")[0].metadata["encoded"].value
    store = EmbeddingStore(data_dir / "embetter.duckdb")
    assert encoded == 0
    assert store.query("SELECT count(*) AS n FROM texts")["n"][0] == 5 * PER_TOPIC
    assert store.query("SELECT count(*) AS n FROM base_embeddings")["n"][0] == 5 * PER_TOPIC


@pytest.mark.slow
def test_pipeline_closing_summary_names_scores_and_files(materialized):
    data_dir, _, resources, _ = materialized

    store = resources["store"].get_store()
    recommendation = store.query("SELECT recommendation FROM evaluation_summaries")[0, 0]

    summary = closing_summary(store, data_dir, reused=False)

    assert f"{5 * PER_TOPIC} texts" in summary
    assert "Finetuner version 1 (feedforward), trained on" in summary
    assert "logistic regression accuracy" in summary
    assert "cosine silhouette" in summary
    assert recommendation in summary
    assert str(data_dir / "reports" / "v1" / "report.html") in summary
    assert str(data_dir / "queue" / "labelling_queue_v1.csv") in summary


@pytest.mark.slow
def test_demo_main_reuses_finetuner_on_second_run(tmp_path, monkeypatch, capsys):
    from embetter_assets.demo import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("EMBETTER_DUCKDB_PATH", raising=False)
    arguments = ["--data-dir", str(tmp_path / "data"), "--per-topic", "8", "--train-labels", "20", "--test-labels", "15"]

    main(arguments)
    first = capsys.readouterr()
    main(arguments)
    second = capsys.readouterr()

    assert "Finetuner version 1 (feedforward), trained on" in first.out
    assert "Finetuner version 1 (feedforward), reused: labels and settings unchanged." in second.out
    assert str(tmp_path / "data" / "embetter.duckdb") in second.out
    assert "Training a feedforward finetuner" in first.err
    assert " - DEBUG - " not in first.err + first.out


def test_definitions_load_with_six_assets():
    from embetter_assets.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= {
        "raw_texts", "base_embeddings", "labelled_subset", "trained_finetuner", "finetuned_embeddings", "evaluation_report",
        "labelling_queue",
    }


@pytest.mark.slow
def test_pipeline_embedding_checks_pass(materialized):
    _, _, _, results = materialized

    outcomes = {
        evaluation.check_name: evaluation.passed
        for result in results
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.check_name != "finetuned_not_worse_than_base"
    }

    assert outcomes == {
        "every_text_has_base_embedding": True,
        "base_embeddings_are_finite_and_nonzero": True,
        "finetuned_embeddings_are_finite_and_nonzero": True,
        "finetuned_width_matches_finetuner": True,
    }
