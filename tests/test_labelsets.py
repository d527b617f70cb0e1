import polars as pl

from embetter_assets.labelsets import case_variants, split_labels


def _labels(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["content_hash", "label", "split"], orient="row").with_columns(
        pl.lit("batch.csv").alias("batch")
    )


def test_split_keeps_held_out_texts_out_of_training():
    sets = split_labels(_labels([("a", "x", "train"), ("a", "x", "test"), ("b", "y", "train"), ("c", "y", "train"), ("d", "x", "train")]))

    assert "a" not in sets.train["content_hash"].to_list()
    assert sets.test["content_hash"].to_list() == ["a"]
    assert sets.counts["train_rows_also_held_out"] == 1


def test_split_drops_texts_with_conflicting_labels():
    sets = split_labels(_labels([("a", "x", "train"), ("a", "y", "train"), ("b", "x", "train"), ("c", "x", "train"), ("d", "y", "train"), ("e", "y", "train")]))

    assert sorted(sets.train["content_hash"].to_list()) == ["b", "c", "d", "e"]
    assert sets.counts["conflicting_train_texts_dropped"] == 1


def test_split_drops_classes_with_one_training_text():
    sets = split_labels(_labels([("a", "x", "train"), ("b", "x", "train"), ("c", "y", "train"), ("d", "y", "train"), ("e", "rare", "train")]))

    assert set(sets.train["label"]) == {"x", "y"}
    assert sets.counts["train_classes_with_one_text_dropped"] == 1
    assert sets.single_text_classes == ["rare"]


def test_split_keeps_arrival_order():
    sets = split_labels(_labels([("c", "x", "train"), ("a", "y", "train"), ("b", "x", "train"), ("d", "y", "train")]))

    assert sets.train["content_hash"].to_list() == ["c", "a", "b", "d"]


def test_case_variants_groups_labels_differing_in_case():
    labels = pl.Series(["Tech", "sport", "tech", "TECH", "Sport", "politics", "tech"])

    assert case_variants(labels) == [["Sport", "sport"], ["TECH", "Tech", "tech"]]


def test_case_variants_empty_when_spellings_agree():
    assert case_variants(pl.Series(["tech", "sport", "tech"])) == []
