"""Constant imputation for string columns that treats None and NaN alike."""

from custom_transformers.text import CellTransformer, as_text


class CategoricalImputer(CellTransformer):
    """Replace missing or blank cells with `fill_value` and turn the rest into strings.

    SimpleImputer only recognises one missing marker (NaN by default), so a None coming from a
    JSON null would slip through it and reach the encoder as an unknown category.
    """

    def _cell(self, value: object) -> str:
        text = as_text(value)
        return self.fill_value if text is None else text
