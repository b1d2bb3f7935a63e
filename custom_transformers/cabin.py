"""The deck letter of a Titanic cabin."""

from custom_transformers.text import CellTransformer, as_text


class CabinDeck(CellTransformer):
    """Map each cabin such as "C85" to its deck letter "C", and missing cabins to `fill_value`.

    Multi-cabin bookings ("C23 C25 C27") share one deck, so the first character is enough.
    """

    def _cell(self, value: object) -> str:
        text = as_text(value)
        return self.fill_value if text is None else text[0]
