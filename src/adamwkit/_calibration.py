"""The calibrated rule's constants (``benchmarks/evidence/analyze.py --write``).

Do not edit by hand: rerun the analysis. ``tests/test_evidence.py`` refits them from the
cached studies and checks they match.
"""

MODEL = "c * T"
COEF = {"const": -1.7541256707729798}
FIXED = ["log_T"]  # terms whose coefficient is 1
# 10% and 90% quantiles of log(tau*) - log(prediction) over the studies fitted
BAND = (-1.2821448588821036, 1.576748923985676)
STUDIES = 19
FAMILIES = ["digits-cnn", "digits-mlp", "teacher-student"]
EPOCHS = (50.0, 600.0)
EXAMPLES = (102.0, 1638.0)
LOFO_WITHIN_2X = 0.0526
LOFO_RANGE_HOLDS = 0.0526
