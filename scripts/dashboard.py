"""The chart's Grafana dashboard, built with Grafana's own typed builders (grafana-foundation-sdk).

    python scripts/dashboard.py            # print the dashboard's JSON
    python scripts/dashboard.py --write    # write chart/dashboards/jupyterhub-canary.json (make dashboard)
    python scripts/dashboard.py --check    # fail if the committed file is not this script's output

The chart ships the written file (templates/dashboard.yaml), replacing `__SELECTOR__` with
prometheusRule.pushgatewaySelector, so that the dashboard selects the pushed series as the alerts do.
grafana-foundation-sdk is a development dependency (the test extras): the image does not carry it.
Every query names only metrics app/metrics.py pushes (tests/test_dashboard.py checks it with promtool).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos, VariableRefresh

OUTPUT = Path(__file__).resolve().parent.parent / "chart" / "dashboards" / "jupyterhub-canary.json"
SELECTOR = "__SELECTOR__"  # replaced by the chart
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query: the pushed series of the chosen hubs and probes.
SERIES = f'{SELECTOR}, hub=~"$hub", probe=~"$probe"'


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("A").datasource(DATASOURCE)


def place(panel, number: int, x: int, y: int, w: int, h: int):
    return panel.id(number).datasource(DATASOURCE).grid_pos(GridPos(h=h, w=w, x=x, y=y))


def variable(name: str, label: str, selector: str) -> dashboard.QueryVariable:
    expr = f"label_values(jupyterhub_canary_success{{{selector}}}, {name})"
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": expr, "refId": name})
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def build() -> dashboard.Dashboard:
    return (
        dashboard.Dashboard("JupyterHub canary")
        .uid("jupyterhub-canary")
        .description(
            "Per probe: success, time since the last success, where spawns spend their time, exit codes and "
            "why spawns failed. From the metrics jupyterhub-canary pushes to a Pushgateway."
        )
        .tags(["jupyterhub", "canary"])
        .editable()
        .version(1)
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(variable("hub", "Hub", SELECTOR))
        .with_variable(variable("probe", "Probe", f'{SELECTOR}, hub=~"$hub"'))
        .with_panel(
            place(timeseries.Panel(), 1, 0, 0, 12, 8)
            .title("Success per probe")
            .description("1 when the probe's last run spawned, verified and stopped a server, else 0.")
            .with_target(query(f"max by (probe) (jupyterhub_canary_success{{{SERIES}}})", "{{probe}}"))
            .min(0)
            .max(1)
            .draw_style(common.GraphDrawStyle.LINE)
            .line_interpolation(common.LineInterpolation.STEP_AFTER)
        )
        .with_panel(
            place(stat.Panel(), 2, 12, 0, 12, 8)
            .title("Time since the last success")
            .description(
                "Seconds since each probe's last successful run ended; the stale alert fires after two schedule "
                "periods plus the Job's deadline."
            )
            .with_target(
                query(
                    f"time() - max by (probe) (jupyterhub_canary_last_success_timestamp_seconds{{{SERIES}}})",
                    "{{probe}}",
                )
            )
            .unit("s")
        )
        .with_panel(
            place(timeseries.Panel(), 3, 0, 8, 12, 9)
            .title("Spawn duration per phase")
            .description(
                "Where a spawn's time went, from its progress events: spawn (request to ready); with KubeSpawner "
                "also scheduling, image_pull, container_start, server_start."
            )
            .with_target(
                query(f"max by (probe, phase) (jupyterhub_canary_phase_duration_seconds{{{SERIES}}})", "{{probe}} {{phase}}")
            )
            .unit("s")
        )
        .with_panel(
            place(timeseries.Panel(), 4, 12, 8, 12, 9)
            .title("Run duration per phase")
            .description("The last attempt's cycle phases: spawn_request, ready_wait, verify, kernel, stop.")
            .with_target(
                query(
                    f'max by (probe, phase) (jupyterhub_canary_duration_seconds{{{SERIES}, phase!="total"}})',
                    "{{probe}} {{phase}}",
                )
            )
            .unit("s")
        )
        .with_panel(
            place(timeseries.Panel(), 5, 0, 17, 12, 8)
            .title("Exit codes over time")
            .description(
                "The last run's exit code per probe (0 healthy); the legend names the result's reason. See the "
                "exit-code table in the README."
            )
            .with_target(query(f"max by (probe, reason) (jupyterhub_canary_exit_code{{{SERIES}}})", "{{probe}} {{reason}}"))
            .min(0)
            .draw_style(common.GraphDrawStyle.POINTS)
        )
        .with_panel(
            place(timeseries.Panel(), 6, 12, 17, 12, 8)
            .title("Attempts per run")
            .description("Attempts the last run needed: more than one means transient failures were retried.")
            .with_target(query(f"max by (probe) (jupyterhub_canary_attempts{{{SERIES}}})", "{{probe}}"))
        )
        .with_panel(
            place(timeseries.Panel(), 7, 0, 25, 24, 8)
            .title("Why spawns failed")
            .description(
                "The cause of each failed spawn (exit code 10) or spawn timeout (11), from the events the hub "
                "relayed: unschedulable (capacity), image_pull (a bad image), volume (a mount or claim), crash "
                "(the server exits), quota, timeout (nothing telling), unknown. The value is the exit code."
            )
            .with_target(
                query(
                    f'max by (probe, cause) (jupyterhub_canary_exit_code{{{SERIES}, cause!="none"}})',
                    "{{probe}} {{cause}}",
                )
            )
            .min(0)
            .draw_style(common.GraphDrawStyle.POINTS)
        )
    )


def render() -> str:
    return JSONEncoder(sort_keys=False, indent=2).encode(build().build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {OUTPUT.relative_to(OUTPUT.parents[2])}")
    action.add_argument("--check", action="store_true", help="fail if the committed dashboard is not current")
    args = parser.parse_args(argv)
    text = render()
    json.loads(text)  # well-formed, whatever the encoder did
    if args.write:
        OUTPUT.write_text(text, encoding="utf-8")
    elif args.check:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is not the output of scripts/dashboard.py: run `make dashboard`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
