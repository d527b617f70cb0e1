"""scikit-learn's own estimator checks, run on both finetuners.

No check is skipped by this project. scikit-learn itself skips its array API checks
(``check_array_api_input``) unless the environment variable ``SCIPY_ARRAY_API`` is set.
Those checks would not apply anyway, because the finetuners convert every input to a
float32 NumPy array and do not declare array API support.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner


@parametrize_with_checks(
    [
        FeedForwardFinetuner(hidden_dim=8, n_epochs=5, random_state=0),
        ContrastiveFinetuner(hidden_dim=8, n_epochs=5, random_state=0),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
