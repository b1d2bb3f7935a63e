"""Observations the tests send: the tutorial's first passenger."""

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
