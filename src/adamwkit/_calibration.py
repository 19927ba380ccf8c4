"""The calibrated rule's constants (``benchmarks/evidence/analyze.py --write``).

Do not edit by hand: rerun the analysis. ``tests/test_evidence.py`` refits them from the
cached studies and checks they match.
"""

MODEL = "sqrt(T), Wang & Aitchison's window middle"
COEF = {"const": 0.0}
FIXED = {"log_T": 0.5}
# 10% and 90% quantiles of log(tau*) - log(prediction) for families left out of the fit
BAND = (-0.693394817373752, 2.2194625599182185)
STUDIES = 54
FAMILIES = ["cancer-mlp", "charlm", "diabetes-mlp", "digits-cnn", "digits-mlp", "teacher-student"]
EPOCHS = (15.0, 600.0)
EXAMPLES = (88.0, 1638.0)
LOFO_WITHIN_2X = 0.4444
LOFO_RANGE_HOLDS = 0.7037
