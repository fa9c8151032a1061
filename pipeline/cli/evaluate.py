"""``shems evaluate``: forecasts and anomaly detectors scored on a dataset."""

from __future__ import annotations

from pipeline.cli.args import add_table_args, horizon_list, positive_float, positive_int, table_spec
from pipeline.cli.common import fail


def anomaly_rows(rows) -> list[dict]:
    """The anomaly evaluation's rows as the JSON line's ``anomaly`` list."""
    return [{"kind": r.kind, "precision": r.precision, "recall": r.recall, "injected": r.injected,
             "found": r.found, "detected": r.detected, "false_positives": r.false_positives}
            for r in rows]


def cmd_evaluate(args) -> int:
    import time

    import polars as pl
    from rich.console import Console
    from rich.progress import Progress

    from pipeline.evaluation.forecast import evaluate_forecasts
    from pipeline.evaluation.report import evaluation_json, print_evaluation
    from pipeline.evaluation.stuck_runs import StuckRule
    from pipeline.ingest.tabular import readings_frame
    from pipeline.insights.forecast import ForecastSettings

    console = Console(stderr=args.json)  # keep stdout's last line for the JSON
    try:
        spec = table_spec(args)
        settings = ForecastSettings(timezone=args.home_tz or args.tz)
        frame = readings_frame(args.file, spec)
    except ValueError as exc:
        return fail(str(exc))
    if args.homes:
        wanted = [h.strip() for h in args.homes.split(",") if h.strip()]
        missing = sorted(set(wanted) - set(frame["home_id"].unique().to_list()))
        if missing:
            return fail(f"no readings for home(s) {', '.join(missing)} in {args.file}")
        frame = frame.filter(pl.col("home_id").is_in(wanted))
    if frame.is_empty():
        return fail(f"no readings in {args.file}")
    started = time.monotonic()
    with Progress(console=console) as bar:
        task = bar.add_task(f"replaying {args.file.name}", total=frame.height)
        result = evaluate_forecasts(
            frame, settings, horizons_h=args.horizons,
            stuck=StuckRule(min_minutes=args.stuck_minutes, min_samples=args.stuck_samples),
            jobs=args.jobs, on_rows=lambda n: bar.update(task, advance=n))
    print_evaluation(result, console, time.monotonic() - started)
    anomaly = []
    if not args.no_anomalies:
        from pipeline.evaluation.anomaly import run_evaluation
        from pipeline.evaluation.report import print_anomaly_evaluation

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("injecting faults and detecting", total=None)
            try:
                faults = run_evaluation(
                    frame, seed=args.seed, tz=args.home_tz or args.tz, workers=args.jobs,
                    progress=lambda text: bar.update(task, description=f"anomalies: {text}"))
            except ValueError as exc:
                return fail(str(exc))
        print_anomaly_evaluation(faults, console)
        anomaly = anomaly_rows(faults.rows)
    if args.json:
        print(evaluation_json(result, anomaly))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score the online forecasts on a dataset replayed through the flow's operators")
    add_table_args(p)
    p.add("--home-tz", default=None,
          help="the homes' own time zone for calendar features, when --tz only says how the file's "
               "time stamps are written (default: --tz)")
    p.add("--horizons", type=horizon_list, default=(1.0, 6.0, 12.0, 24.0),
          help="hours from issue to the end of the target slot to report")
    p.add("--homes", default=None, help="only these homes (comma-separated ids)")
    p.add("--stuck-minutes", type=positive_float, default=60.0,
          help="a run of one exact value this long (and --stuck-samples readings) is a stuck "
               "logger: slots it touches are not scored")
    p.add("--stuck-samples", type=positive_int, default=24, help="see --stuck-minutes")
    p.add("--jobs", type=positive_int, default=1, help="homes evaluated at once (processes)")
    p.add("--seed", type=int, default=0, help="seed of the injected faults (anomaly evaluation)")
    p.add("--no-anomalies", action="store_true", help="score the forecasts only")
    p.add("--json", action="store_true", help="end with one JSON line")
    p.set_defaults(handler=cmd_evaluate)
