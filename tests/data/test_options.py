"""The data sets' shared options: one definition, every data set holding to it, and the docs showing it."""

from pathlib import Path

import pytest

from mtssl.data.options import SHARED, shared_options
from mtssl.registry import DATASETS

SHARING = ["la", "msd", "nnunet", "images2d", "phantom"]


@pytest.mark.parametrize("name", SHARING)
def test_each_data_set_takes_every_shared_option_and_documents_it_once(name):
    entry = DATASETS.get(name)
    assert set(SHARED) <= set(entry.defaults())
    doc = entry.factory.__doc__
    for option, (_, meaning) in SHARED.items():
        assert doc.count(f"\n    {option}: ") == 1 and meaning in doc


def test_a_drifting_type_or_a_missing_option_fails_at_import():
    with pytest.raises(TypeError, match=r"seed is typed <class 'float'>, the shared option's type is <class 'int'>"):

        @shared_options("seed")
        def f(seed: float = 0.0):
            """A data set.

            Args:
                seed: a seed.
            """

    with pytest.raises(TypeError, match="declares the shared option 'val' but does not take it"):

        @shared_options("val")
        def g(seed: int = 0):
            """A data set.

            Args:
                seed: a seed.
            """

    with pytest.raises(TypeError, match="'seeds' is not a shared data-set option"):
        shared_options("seeds")


def test_the_data_page_shows_the_shared_options():
    page = (Path(__file__).parents[2] / "docs" / "data.md").read_text()
    for option, (_, meaning) in SHARED.items():
        assert f"| `{option}` | {meaning.replace('``', '`')} |" in page
