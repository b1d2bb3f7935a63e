"""Observations the tests send (the tutorial's first passenger), and the tolerances they
compare numbers with."""

# Retraining on another CPU may pick another BLAS kernel, which moves the last digits of a
# fitted coefficient (1.1e-12 seen on an AMD EPYC without AVX-512) and of a probability
# (7e-13). A retrained model agrees with the committed one to this absolute tolerance, on any
# machine; far below anything a user could notice, far above any kernel's rounding.
RETRAIN_TOLERANCE = 1e-9

PASSENGER = {
    "Age": 22.0,
    "Cabin": None,
    "Embarked": "S",
    "Fare": 7.25,
    "Parch": 0,
    "Pclass": 3,
    "Sex": "male",
    "SibSp": 1,
}
