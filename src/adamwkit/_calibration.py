"""The calibrated rule's constants (``benchmarks/evidence/analyze.py --write``).

Do not edit by hand: rerun the analysis. ``tests/test_evidence.py`` refits them from the
cached studies and checks they match.
"""

MODEL = 'c * T'
COEF = {"const": -1.2335104227862332}
FIXED = ['log_T']  # terms whose coefficient is 1
BAND = (-0.7353428442341955, 1.0893169883457814)  # 10% and 90% quantiles of log(tau*) - log(prediction)
STUDIES = 10
FAMILIES = ['digits-mlp', 'teacher-student']
EPOCHS = (200.0, 600.0)
EXAMPLES = (200.0, 1437.0)
LOFO_WITHIN_2X = 0.0000
LOFO_RANGE_HOLDS = 0.0000
