"""The calibrated rule's constants (``benchmarks/evidence/analyze.py --write``).

Do not edit by hand: rerun the analysis. ``tests/test_evidence.py`` refits them from the
cached studies and checks they match.
"""

MODEL = "sqrt(T), Wang & Aitchison's window middle"
COEF = {"const": 0.0}
FIXED = {"log_T": 0.5}
# 10% and 90% quantiles of log(tau*) - log(prediction) for families left out of the fit
BAND = (-0.5492045754560589, 2.4759397030566848)
STUDIES = 48
FAMILIES = ["cancer-mlp", "charlm", "diabetes-mlp", "digits-cnn", "digits-mlp", "teacher-student"]
EPOCHS = (30.0, 600.0)
EXAMPLES = (88.0, 1638.0)
LOFO_WITHIN_2X = 0.4583
LOFO_RANGE_HOLDS = 0.6667
