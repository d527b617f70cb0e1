"""Asset checks that fail loudly when the stored embeddings cannot be trusted."""

import dagster as dg

from embetter_assets.defs.assets.finetuner import finetuned_embeddings
from embetter_assets.defs.assets.texts import base_embeddings
from embetter_assets.defs.resources import EncoderResource, StoreResource

# A vector whose sum is not finite contains a NaN or an infinity. A vector whose absolute values
# sum to zero is all zeros. Either would corrupt every cosine similarity it takes part in.
_BAD_VECTORS = """
    SELECT count(*) FILTER (WHERE NOT isfinite(list_sum(embedding::FLOAT[]))) AS non_finite,
           count(*) FILTER (WHERE list_sum(list_transform(embedding::FLOAT[], lambda x: abs(x))) = 0) AS all_zero
    FROM {table}
"""


@dg.asset_check(asset=base_embeddings, description="Every stored text has a base embedding under the configured model.")
def every_text_has_base_embedding(store: StoreResource, encoder: EncoderResource) -> dg.AssetCheckResult:
    missing = store.get_store().query(
        """
        SELECT t.batch, count(DISTINCT t.content_hash) AS missing
        FROM texts AS t
        ANTI JOIN (SELECT content_hash FROM base_embeddings WHERE model = ?) AS e USING (content_hash)
        GROUP BY t.batch ORDER BY t.batch
        """,
        [encoder.model],
    )
    total = int(missing["missing"].sum()) if missing.height else 0
    return dg.AssetCheckResult(
        passed=total == 0,
        metadata={"texts_without_embedding": total, "batches_affected": missing["batch"].to_list()},
        description=None if total == 0 else "Materialize base_embeddings for the batches listed in the metadata.",
    )


@dg.asset_check(asset=base_embeddings, description="No base embedding contains NaN, an infinity or only zeros.")
def base_embeddings_are_finite_and_nonzero(store: StoreResource) -> dg.AssetCheckResult:
    return _check_vectors(store, "base_embeddings")


@dg.asset_check(asset=finetuned_embeddings, description="No finetuned embedding contains NaN, an infinity or only zeros.")
def finetuned_embeddings_are_finite_and_nonzero(store: StoreResource) -> dg.AssetCheckResult:
    return _check_vectors(store, "finetuned_embeddings")


@dg.asset_check(
    asset=finetuned_embeddings,
    description="Every finetuned embedding has the width its finetuner version was trained to produce.",
)
def finetuned_width_matches_finetuner(store: StoreResource) -> dg.AssetCheckResult:
    mismatched = store.get_store().query(
        """
        SELECT f.finetuner_version, count(*) AS rows
        FROM finetuned_embeddings AS f JOIN finetuners AS v ON v.version = f.finetuner_version
        WHERE len(f.embedding::FLOAT[]) <> v.output_dim
        GROUP BY f.finetuner_version
        """
    )
    return dg.AssetCheckResult(
        passed=mismatched.height == 0,
        metadata={"versions_with_wrong_width": mismatched["finetuner_version"].to_list()},
    )


def _check_vectors(store: StoreResource, table: str) -> dg.AssetCheckResult:
    # ``table`` is one of two literals above, never user input.
    counts = store.get_store().query(_BAD_VECTORS.format(table=table)).row(0, named=True)
    return dg.AssetCheckResult(
        passed=counts["non_finite"] == 0 and counts["all_zero"] == 0,
        metadata={"non_finite_vectors": counts["non_finite"], "all_zero_vectors": counts["all_zero"]},
    )


ALL_CHECKS = [
    every_text_has_base_embedding,
    base_embeddings_are_finite_and_nonzero,
    finetuned_embeddings_are_finite_and_nonzero,
    finetuned_width_matches_finetuner,
]
