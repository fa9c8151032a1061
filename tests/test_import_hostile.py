"""`shems import` checks every row as the flow checks a message: a hostile file's bad rows land in
dead_letter with file, row and reason, every good row is stored once, and nothing (a bad file, a
bad argument, a store that is not there) ever ends in a traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest.tabular import ROW, TableSpec, check_file, dead_letters, parse_device_cols, validated_batches
from pipeline.settings import ValidationSettings
from sinks.stores import open_store
from tests.conftest import FIXTURES

HOSTILE = FIXTURES / "import_hostile" / "hostile.csv"
REFIT = FIXTURES / "refit_house2_2h_wide.csv"
UTC = timezone.utc

# hostile.csv: data row -> (the flow's dead-letter code, a piece of the reason), None for a good
# row. Written by hand from the file, not by the code under test.
EXPECTED = {
    1: None, 2: None, 3: None, 4: None, 5: None, 6: None, 7: None,
    8: ("bad_timestamp", "time stamp '01/05/2024 12:04' is not ISO 8601"),
    9: ("invalid_payload", "power_w 'abc' is not a number"),
    10: ("not_finite", "power_w is not a finite number: nan"),
    11: ("not_finite", "power_w is not a finite number: inf"),
    12: ("not_finite", "energy_wh is not a finite number: -inf"),
    13: ("out_of_bounds", "power_w 1e+09 is outside the bounds"),
    14: ("out_of_bounds", "power_w -1e+09 is outside the bounds"),
    15: ("invalid_payload", "kind 'toaster' is not one of meter, appliance, pv, battery, ev"),
    16: ("bad_id", "no home id"),
    17: ("bad_id", "no device id"),
    18: ("bad_id", "home id is 10000 characters long (at most 128)"),
    19: ("bad_id", "device id 'ket\x1btle' contains a control character"),
    20: ("bad_id", "home id 'h1/x' contains a control character or one of / + #"),
    21: ("timestamp_in_future", "ts 2099-01-01T00:00:00+00:00 is"),
    22: ("out_of_bounds", "energy_wh -5 is negative"),
    23: ("missing_field", "no time stamp"),
    24: ("missing_field", "no value in column power_w"),
    25: ("invalid_payload", "the row has more fields than the header has columns"),
    26: ("bad_timestamp", "time stamp '1e30' is not ISO 8601"),
    27: ("bad_timestamp", "time stamp '0001-01-01T00:00:00' is outside the years 1-9999"),
    28: None,
}
# The good rows as the store must hold them: (home, device, ts UTC, power W, energy Wh).
GOOD = {
    ("h1", "mains", datetime(2024, 5, 1, 12, 0, tzinfo=UTC), 500.0, 1000.0),
    ("h1", "mains", datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC), 510.0, 1004.0),
    ("h1", "kettle", datetime(2024, 5, 1, 11, 1, tzinfo=UTC), 2000.0, None),
    ("h1", "kettle", datetime(2024, 5, 1, 12, 1, 30, tzinfo=UTC), 2100.0, None),  # 13:01:30+01:00
    ("h2", "pv", datetime(2024, 5, 1, 12, 2, tzinfo=UTC), -1500.0, None),  # epoch 1714564920
    ("h2", "pv", datetime(2024, 5, 1, 12, 2, 30, 250000, tzinfo=UTC), -1400.0, None),
    ("h2", "ev", datetime(2024, 5, 1, 12, 3, tzinfo=UTC), 7000.0, None),
    ("h2", "ev", datetime(2024, 5, 1, 12, 20, tzinfo=UTC), 7100.0, None),
}


def shems(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def printed_counts(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^  ([a-z_]+)\s+([\d,]+)$", stdout, re.M)}


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("shems: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def stored(url: str):
    store = open_store(url)
    store.migrate()
    try:
        return store.readings(), store.dead_letters(), store.counts()
    finally:
        store.close()


def test_a_hostile_csv_stores_every_good_row_once_and_dead_letters_every_bad_one(store_url):
    proc = shems("import", str(HOSTILE), "--store-url", store_url, "--no-insights")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    bad = {row: want for row, want in EXPECTED.items() if want}
    want_counts: dict[str, int] = {}
    for code, _ in bad.values():
        want_counts[code] = want_counts.get(code, 0) + 1
    assert printed_counts(proc.stdout) == want_counts
    assert f"imported {len(GOOD)} readings" in proc.stdout
    assert f"rejected {len(bad)} of {len(EXPECTED)} rows of hostile.csv" in proc.stdout

    readings, letters, _ = stored(store_url)
    assert {(r.home_id, r.device_id, r.ts, r.power_w, r.energy_wh) for r in readings} == GOOD
    assert len(readings) == len(GOOD)
    assert all(r.source.value == "import" for r in readings)
    by_topic = {d.topic: d for d in letters}
    assert set(by_topic) == {f"import:hostile.csv:{row}" for row in bad}
    lines = HOSTILE.read_text(encoding="utf-8").splitlines()
    for row, (code, fragment) in bad.items():
        d = by_topic[f"import:hostile.csv:{row}"]
        assert (d.step, d.error) == ("import", code)
        assert d.reason.startswith(f"hostile.csv row {row}: ") and fragment in d.reason, d.reason
        # Keyed by the file's time, so a second import of the same file adds no dead letter twice.
        assert d.received_at == datetime.fromtimestamp(HOSTILE.stat().st_mtime, UTC)
        if row not in (18, 25):  # the row's own cells, as JSON
            ts_cell = lines[row].split(",")[0]
            assert f'"ts":"{ts_cell}"' in d.payload or (ts_cell == "" and '"ts":null' in d.payload)
    assert by_topic["import:hostile.csv:25"].payload == lines[25]  # as written: its cells are not in place
    huge = by_topic["import:hostile.csv:18"]  # a 10,000-character id: the payload is a bounded prefix
    assert huge.payload_bytes > 10_000 and len(huge.payload) <= 4097

    again = shems("import", str(HOSTILE), "--store-url", store_url, "--no-insights")
    assert again.returncode == 0, again.stderr
    readings, letters_again, _ = stored(store_url)
    assert len(readings) == len(GOOD)  # a second import stores no row twice
    assert len(letters_again) == len(letters)  # ... and no dead letter twice


def test_strict_stores_nothing_and_exits_1_when_a_row_is_rejected(store_url):
    proc = shems("import", str(HOSTILE), "--store-url", store_url, "--no-insights", "--strict")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == \
        f"shems: error: --strict: 20 rejected row(s) in {HOSTILE}; nothing stored"
    assert "  row 9: power_w 'abc' is not a number" in proc.stderr
    assert "\x1b" not in proc.stderr  # a control character in a file is shown escaped
    _, _, counts = stored(store_url)
    assert counts["readings"] == 0 and counts["dead_letter"] == 0 and counts["device_1m"] == 0


def test_strict_imports_a_clean_file(sqlite_url, tmp_path):
    clean = tmp_path / "clean.csv"
    lines = HOSTILE.read_text(encoding="utf-8").splitlines()
    clean.write_text("\n".join([lines[0]] + [lines[r] for r, code in EXPECTED.items() if code is None]) + "\n")
    proc = shems("import", str(clean), "--store-url", sqlite_url, "--no-insights", "--strict")
    assert proc.returncode == 0, proc.stderr
    assert len(stored(sqlite_url)[0]) == len(GOOD)


def test_a_parquet_file_with_nan_and_inf_imports_the_finite_rows(store_url, tmp_path):
    path = tmp_path / "odd.parquet"
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    power = [100.0, float("nan"), float("inf"), float("-inf"), 140.0, 150.0]
    energy = [None, None, None, None, float("nan"), 7.0]
    pl.DataFrame({"ts": [t0 + timedelta(seconds=30 * i) for i in range(6)], "home_id": ["h"] * 6,
                  "device_id": ["d"] * 6, "power_w": power, "energy_wh": energy}).write_parquet(path)
    proc = shems("import", str(path), "--store-url", store_url, "--no-insights")
    assert proc.returncode == 0, proc.stderr
    assert printed_counts(proc.stdout) == {"not_finite": 4}
    readings, letters, _ = stored(store_url)
    assert sorted((r.ts, r.power_w) for r in readings) == [(t0, 100.0), (t0 + timedelta(seconds=150), 150.0)]
    assert sorted(d.topic for d in letters) == [f"import:odd.parquet:{row}" for row in (2, 3, 4, 5)]
    assert all(d.error == "not_finite" for d in letters)


def _refit_spec() -> TableSpec:
    return TableSpec(layout="wide", ts_col="timestamp", home_col="house", tz="Europe/London",
                     device_cols=parse_device_cols("aggregate_w=mains:meter,kettle_w=kettle"))


def test_one_row_in_another_date_format_rejects_that_row_only(tmp_path, sqlite_url):
    lines = REFIT.read_text().splitlines()
    lines[10] = lines[10].replace("2013-09-20T06:14:00.000000", "20/09/2013 06:14")
    assert "20/09/2013 06:14" in lines[10]
    path = tmp_path / "refit.csv"
    path.write_text("\n".join(lines) + "\n")
    rows = len(lines) - 1
    checked = check_file(path, _refit_spec(), datetime.now(UTC), ValidationSettings())
    assert checked.readings.height == 2 * (rows - 1)
    assert checked.rejected[ROW].to_list() == [10, 10]  # one reading per device column of the row
    proc = shems("import", str(path), "--layout", "wide", "--home-col", "house", "--tz", "Europe/London",
                 "--device-cols", "aggregate_w=mains:meter,kettle_w=kettle", "--store-url", sqlite_url,
                 "--no-insights")
    assert proc.returncode == 0, proc.stderr
    assert printed_counts(proc.stdout) == {"bad_timestamp": 1}
    readings, letters, _ = stored(sqlite_url)
    assert len(readings) == 2 * (rows - 1)
    assert [(d.topic, d.error) for d in letters] == [("import:refit.csv:10", "bad_timestamp")]
    assert "'20/09/2013 06:14' is not ISO 8601" in letters[0].reason


def test_abc_as_power_in_a_wide_row_rejects_that_device_only(tmp_path):
    lines = REFIT.read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[5].split(",")
    cells[head.index("kettle_w")] = "abc"
    lines[5] = ",".join(cells)
    path = tmp_path / "refit.csv"
    path.write_text("\n".join(lines) + "\n")
    checked = check_file(path, _refit_spec(), datetime.now(UTC), ValidationSettings())
    assert checked.rejected.rows() == [(5, "invalid_payload", "kettle_w 'abc' is not a number")]
    row5 = checked.readings.filter(pl.col(ROW) == 5)
    assert row5["device_id"].to_list() == ["mains"]  # the meter's cell of the same row is good
    [letter] = dead_letters(checked, checked.rejected, datetime.now(UTC))
    assert letter.topic == "import:refit.csv:5" and '"kettle_w":"abc"' in letter.payload


def test_unknown_kind_and_its_neighbours(tmp_path):
    path = tmp_path / "kinds.csv"
    path.write_text("ts,home_id,device_id,power_w,kind\n"
                    "2024-05-01T12:00:00,h,a,1,meter\n"
                    "2024-05-01T12:00:00,h,b,1,heat_pump\n"
                    "2024-05-01T12:00:00,h,c,1,\n")
    checked = check_file(path, TableSpec(), datetime.now(UTC), ValidationSettings())
    assert checked.readings.select("device_id", "kind").rows() == [("a", "meter"), ("c", "appliance")]
    assert checked.rejected.rows() == [
        (2, "invalid_payload", "kind 'heat_pump' is not one of meter, appliance, pv, battery, ev")]


def test_every_built_reading_also_passes_the_flows_validate(tmp_path):
    """A bound that validate() has and the expressions lack still applies: the batches run it."""
    path = tmp_path / "p.csv"
    path.write_text("ts,home_id,device_id,power_w\n2024-05-01T12:00:00,h,d,50\n2024-05-01T12:00:30,h,d,500\n")
    now = datetime.now(UTC)
    checked = check_file(path, TableSpec(), now, ValidationSettings())
    assert checked.rejected.is_empty()
    refused: list[tuple[int, str, str]] = []
    stricter = ValidationSettings(max_power_w=100.0)
    batches = list(validated_batches(checked, now, stricter, lambda row, code, reason: refused.append((row, code, reason))))
    assert [r.power_w for b in batches for r in b] == [50.0]
    assert refused == [(2, "out_of_bounds", "power_w 500 is outside the bounds [-100000, 100] W")]


def test_file_and_argument_errors_are_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not a parquet file at all")
    assert_one_line_error(shems("import", str(corrupt), "--store-url", url), "cannot read", "corrupt.parquet")
    assert_one_line_error(shems("import", str(HOSTILE), "--power-col", "watts", "--store-url", url),
                          "missing column(s) watts")
    assert_one_line_error(shems("import", str(HOSTILE), "--layout", "interval", "--store-url", url),
                          "--interval-kwh")
    assert_one_line_error(shems("import", str(HOSTILE), "--layout", "wide", "--device-cols", "power_w=a/b",
                                "--store-url", url), "device id")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    assert_one_line_error(shems("import", str(binary), "--store-url", url), "missing column(s)")
    quote = tmp_path / "quote.csv"
    quote.write_text('ts,home_id,device_id,power_w\n"2024-05-01,h,d,1\n')
    assert_one_line_error(shems("import", str(quote), "--store-url", url), "cannot read")
    # argparse's own errors (pipeline/cli/args.py) print the usage first; the error is still one line.
    proc = shems("import", str(tmp_path / "missing.csv"), "--store-url", url)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(f"no such file: {tmp_path / 'missing.csv'}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_store_is_one_line_and_a_non_zero_exit(tmp_path):
    refused = f"postgresql://postgres:s3cret@127.0.0.1:{_free_port()}/shems"
    # The store is retried for 20 s (a server restarting as the import starts); the rest is
    # Python starting on a busy machine.
    proc = shems("import", str(HOSTILE), "--store-url", refused, timeout=90)
    assert_one_line_error(proc, "cannot open the store", "Connection refused")
    assert "s3cret" not in proc.stderr
    assert_one_line_error(shems("export", "--store-url", refused, "--out", str(tmp_path), timeout=90),
                          "cannot open the store")
    # A server that accepts the connection and then never answers (a hung or half-dead host).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        proc = shems("import", str(HOSTILE), "--store-url",
                     f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/shems", timeout=90)
        took = time.monotonic() - started
    assert_one_line_error(proc, "cannot open the store")
    assert took < 60  # bounded: the connect timeout and the 20 s of retries, not a hang


def test_export_of_a_missing_sqlite_store_is_one_line(tmp_path):
    proc = shems("export", "--store-url", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "no SQLite store")
    assert not (tmp_path / "none.db").exists()


def test_a_spreadsheet_export_with_semicolons_and_decimal_commas_imports(tmp_path, sqlite_url):
    """What Excel or LibreOffice write in locales with a decimal comma (de, fr, nl...): ';'
    between fields, "300,5" in them. A cell whose comma could be a thousands separator is
    rejected with its reason, never guessed."""
    path = tmp_path / "export.csv"
    path.write_text("\ufeffts;home_id;device_id;power_w;energy_wh\r\n"
                    "2024-05-01 12:00:00;h;mains;300,5;1000\r\n"
                    "2024-05-01 12:00:30;h;mains;-12,25;1001,5\r\n"
                    "2024-05-01 12:01:00;h;mains;1.234,5;1002\r\n"
                    "2024-05-01 12:01:30;h;mains;80;1003\r\n", encoding="utf-8")
    checked = check_file(path, TableSpec(), datetime.now(UTC), ValidationSettings())
    assert checked.readings.select("power_w", "energy_wh").rows() == [
        (300.5, 1000.0), (-12.25, 1001.5), (80.0, 1003.0)]
    assert checked.rejected.rows() == [(3, "invalid_payload", "power_w '1.234,5' is not a number")]
    proc = shems("import", str(path), "--store-url", sqlite_url, "--no-insights")
    assert proc.returncode == 0, proc.stderr
    readings, letters, _ = stored(sqlite_url)
    assert sorted(r.power_w for r in readings) == [-12.25, 80.0, 300.5]
    [letter] = letters
    assert letter.topic == "import:export.csv:3" and '"power_w":"1.234,5"' in letter.payload


def test_tab_separated_and_comma_files_with_semicolons_in_cells(tmp_path):
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("ts\thome_id\tdevice_id\tpower_w\n2024-05-01T12:00:00\th\td\t7,5\n")
    assert check_file(tabs, TableSpec(), datetime.now(UTC), ValidationSettings()).readings["power_w"].to_list() == [7.5]
    # A comma file stays a comma file whatever its cells hold, and keeps '.' decimals only.
    commas = tmp_path / "commas.csv"
    commas.write_text('ts,home_id,device_id,power_w\n2024-05-01T12:00:00,h,"a;b",5\n2024-05-01T12:00:30,h,c,"7,5"\n')
    checked = check_file(commas, TableSpec(), datetime.now(UTC), ValidationSettings())
    assert checked.readings.select("device_id", "power_w").rows() == [("a;b", 5.0)]
    assert checked.rejected.rows() == [(2, "invalid_payload", "power_w '7,5' is not a number")]


_CELL_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_CELL_IDS, _CELL_IDS,
                               st.floats(-50_000, 50_000, allow_nan=False).map(lambda x: round(x, 3))),
                     min_size=1, max_size=20),
       separator=st.sampled_from([",", ";", "\t"]))
def test_any_separator_reads_the_same_readings(tmp_path, rows, separator):
    """The same readings written comma-separated with '.' decimals, or by a decimal-comma
    spreadsheet (';' or tab, ',' decimals), read back the same."""
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    lines = [separator.join(["ts", "home_id", "device_id", "power_w"])]
    for i, (home, device, power) in enumerate(rows):
        text = repr(power) if separator == "," else repr(power).replace(".", ",")
        lines.append(separator.join([(t0 + timedelta(seconds=30 * i)).isoformat(), home, device, text]))
    path = tmp_path / f"any-{ord(separator)}.csv"
    path.write_text("\n".join(lines) + "\n")
    checked = check_file(path, TableSpec(), datetime.now(UTC), ValidationSettings())
    assert checked.rejected.is_empty(), checked.rejected.rows()
    assert checked.readings.select("home_id", "device_id", "power_w").rows() == [
        (home, device, power) for home, device, power in rows]


def test_a_header_longer_than_any_csv_field_is_a_missing_column_not_a_csv_error(tmp_path):
    """Deciding the separator reads a bounded header and never fails where polars would not."""
    path = tmp_path / "one-line.csv"
    path.write_text("a" * 300_000)  # over csv's field limit (131,072), no line break
    with pytest.raises(ValueError, match="missing column"):
        check_file(path, TableSpec(), datetime.now(UTC), ValidationSettings())


def test_a_file_in_kilowatts_imports_as_the_same_file_in_watts(tmp_path):
    """Exports in kW and kWh (Pecan Street's Dataport, most utility portals) read a thousand times
    too small before --power-unit / --energy-unit, and passed every bound doing so. The real REFIT
    sample written in kW (wide) and as a long file with a kWh counter imports to exactly the
    readings the watt files give."""
    wide = pl.read_csv(FIXTURES / "refit_house2_2h_wide.csv")
    watts = [c for c in wide.columns if c.endswith("_w")]
    in_kw = tmp_path / "refit_kw.csv"
    wide.with_columns(pl.col(c) / 1000 for c in watts).write_csv(in_kw)
    mapping = "aggregate_w=mains:meter,kettle_w=kettle"
    common = ["--layout", "wide", "--home-col", "house", "--device-cols", mapping, "--no-insights"]
    in_w_url, in_kw_url = f"sqlite:///{tmp_path / 'w.db'}", f"sqlite:///{tmp_path / 'kw.db'}"
    assert shems("import", str(FIXTURES / "refit_house2_2h_wide.csv"), *common, "--store-url", in_w_url).returncode == 0
    assert shems("import", str(in_kw), *common, "--power-unit", "kW", "--store-url", in_kw_url).returncode == 0

    def rows(url: str) -> list[tuple]:
        return sorted((r.home_id, r.device_id, r.ts, round(r.power_w, 6), r.energy_wh) for r in stored(url)[0])

    assert rows(in_w_url) == rows(in_kw_url) and len(rows(in_w_url)) == 2 * wide.height
    assert max(r[3] for r in rows(in_kw_url)) > 1000  # the kettle, in W

    long_kwh = tmp_path / "long_kwh.csv"
    long_kwh.write_text("ts,home_id,device_id,power_w,energy_wh\n"
                        "2024-05-01T12:00:00Z,h1,mains,0.5,1000.25\n2024-05-01T12:00:30Z,h1,mains,0.51,1000.254\n")
    url = f"sqlite:///{tmp_path / 'long.db'}"
    assert shems("import", str(long_kwh), "--power-unit", "kW", "--energy-unit", "kWh", "--no-insights",
                 "--store-url", url).returncode == 0
    assert [(round(r.power_w, 6), round(r.energy_wh, 6)) for r in sorted(stored(url)[0], key=lambda r: r.ts)] \
        == [(500.0, 1_000_250.0), (510.0, 1_000_254.0)]
