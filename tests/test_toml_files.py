"""The TOML files users write (device registry, tariffs, deferrable loads): any mistake is one
ValueError naming the file, never a TypeError or AttributeError from inside the reader (which the
CLI would print as `AttributeError: 'int' object has no attribute 'get'`).

The hypothesis cases start from the real examples (deploy/tariffs.example.toml, the registry the
device-format tests use, a loads file) and damage them the way hand-edited files go wrong: a key
dropped, a value of another type, a stray key, an entry repeated."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.energy.plan_input import load_specs_from_toml
from pipeline.energy.tariff.toml import book_from_toml
from pipeline.ingest.registry import Registry
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
LOADS = """\
[[load]]
name = "dishwasher"
hours = 2
earliest = "19:00"
deadline = "07:00"
energy_kwh = 1.2

[[load]]
name = "washer"
hours = 1.5
earliest = "08:00"
deadline = "18:00"
power_w = 900
interruptible = true
"""

ANY_VALUE = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=20),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=2),
    st.dates(), st.times(), st.datetimes(),
)


@st.composite
def damaged(draw, doc):
    """``doc`` with some keys dropped, some values replaced by any TOML value, a stray key here and
    there and entries repeated."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            fate = draw(st.integers(0, 9))
            if fate == 0:
                continue
            out[key] = draw(ANY_VALUE) if fate == 1 else draw(damaged(value))
        if draw(st.integers(0, 9)) == 0:
            out[draw(st.text(min_size=1, max_size=8))] = draw(ANY_VALUE)
        return out
    if isinstance(doc, list):
        items = [draw(damaged(item)) for item in doc]
        return items + items[:1] if items and draw(st.booleans()) else items
    return doc if draw(st.integers(0, 3)) else draw(ANY_VALUE)


def _examples(tmp: Path) -> list[tuple[str, dict, object]]:
    loads = tmp / "loads.toml"
    loads.write_text(LOADS)
    return [(name, tomllib.loads(path.read_text()), reader) for name, path, reader in (
        ("tariffs", ROOT / "deploy" / "tariffs.example.toml", book_from_toml),
        ("registry", FIXTURES / "registry_devices.toml", Registry.load),
        ("loads", loads, load_specs_from_toml))]


def test_the_examples_read_as_they_are(tmp_path):
    assert len(book_from_toml(ROOT / "deploy" / "tariffs.example.toml").default) >= 1
    assert len(Registry.load(FIXTURES / "registry_devices.toml")._entries) >= 5
    loads = tmp_path / "loads.toml"
    loads.write_text(LOADS)
    assert [s.name for s in load_specs_from_toml(loads)] == ["dishwasher", "washer"]


@pytest.mark.parametrize("which", ["tariffs", "registry", "loads"])
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_damaged_file_is_read_or_refused_with_a_value_error(tmp_path_factory, which, data):
    tmp = tmp_path_factory.mktemp(which)
    name, doc, reader = next(e for e in _examples(tmp) if e[0] == which)
    path = tmp / f"{name}.toml"
    # A tariff's price file is found beside the tariff file.
    (tmp / "prices.example.csv").write_text((ROOT / "deploy" / "prices.example.csv").read_text())
    path.write_text(tomli_w.dumps(data.draw(damaged(doc))))
    try:
        reader(path)
    except ValueError as exc:
        assert str(path) in str(exc), str(exc)


@pytest.mark.parametrize(("which", "text", "says"), [
    ("tariffs", 'currency = "GBP"\n[tariff]\neffective_from = 2024-01-01\nimport_price = 0.25\n',
     "write [[tariff]] with double brackets"),
    ("tariffs", 'currency = "GBP"\ntariff = 5\n', "'tariff' must be [[tariff]] tables, not int 5"),
    ("tariffs", 'currency = "GBP"\nhome = ["h1"]\n', "homes are [home.<home id>] tables"),
    ("tariffs", 'currency = "GBP"\n[[tariff]]\neffective_from = 2024-01-01\nkind = "tou"\n'
                '[[tariff.period]]\nstart = "00:00"\nend = "07:00"\nimport_price = 0.1\ndays = 5\n',
     "days must be all, weekdays, weekends or a list of day names, not 5"),
    ("tariffs", 'currency = "GBP"\n[[tariff]]\neffective_from = 2024-01-01\nkind = "tou"\n'
                '[[tariff.period]]\nstart = "00:00"\nend = "07:00"\nimport_price = 0.1\nmonths = 3\n',
     "months must be a list of numbers 1-12"),
    ("tariffs", 'currency = "GBP"\n[[tariff]]\neffective_from = 2024-01-01\nkind = "dynamic"\nprice_file = 7\n',
     "price_file is a file name, not 7"),
    ("registry", '[device]\nsource = "shelly"\nvendor_id = "x"\nhome_id = "h"\ndevice_id = "d"\n',
     "write [[device]] with double brackets"),
    ("registry", 'device = [1, 2]\n', "'device' must be [[device]] tables"),
    ("registry", '[[device]]\nsource = "shelly"\nvendor_id = "x"\nhome_id = "h"\ndevice_id = "d"\nchannel = true\n',
     "'channel' must be a whole number >= 0"),
    ("loads", '[load]\nname = "x"\n', "write [[load]] with double brackets"),
    ("registry", b"\xff\xfe not utf-8", "not UTF-8 text"),
])
def test_the_usual_slips_are_named(tmp_path, which, text, says):
    path = tmp_path / "file.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    reader = {"tariffs": book_from_toml, "registry": Registry.load, "loads": load_specs_from_toml}[which]
    with pytest.raises(ValueError) as caught:
        reader(path)
    assert says in str(caught.value) and str(path) in str(caught.value), str(caught.value)


def test_a_type_the_reader_did_not_foresee_is_still_a_value_error_naming_the_file():
    """The net under the three readers: what their own checks miss (none the cases above find
    today) still ends as one ValueError with the file's name, not an AttributeError."""
    from pipeline.tomlfile import wrong_types_are_errors

    value: object = 5
    with pytest.raises(ValueError, match=r"^tariffs.toml: a value has the wrong type \(.*'get'"):
        with wrong_types_are_errors("tariffs.toml"):
            value.get("x")  # type: ignore[attr-defined]
