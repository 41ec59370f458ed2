"""--notebook PATH: run a notebook's code cells in order on a new kernel, as a user's "Run All" does.

The kernel is the notebook's own (its `metadata.kernelspec.name`) unless --kernel-name is given. It
is started, reached and deleted by the kernel check's code (app/checks/kernel.py: POST api/kernels,
one execute_request per cell over the kernel's websocket, DELETE). The first cell that raises ends
the run (exit 16): the result's `notebook` names the cell (the 1-based number among the code cells),
the exception and the last lines of its traceback (ANSI colours stripped, secrets masked).
--notebook-timeout bounds the whole notebook (and the run's budget bounds it too): a cell still
running then is interrupted, reported with cause `timeout`, and the kernel deleted. The kernel is
deleted whatever happens, with signals held off.

The file is read with the stdlib's json (nbformat is not in the image: its dependencies would cost
megabytes for what is a JSON document with a published schema) into app/models.py's `Notebook`,
when the configuration is read: a file that is not an nbformat 4 notebook, or has a field of the
wrong shape, is a configuration error (78) naming it and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from app import logs
from app.checks import Check
from app.checks.kernel import KernelSession
from app.deadline import elapsed_ms
from app.errors import HubUnavailable, KernelFailed, NotebookFailed
from app.models import Notebook, WrongShape, loads

TRACEBACK_LINES = 20  # the traceback's last lines in the result
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

log = logs.get_logger()


def read_notebook(path: Path) -> Notebook:
    """The code cells of an nbformat 4 notebook; ValueError naming the file (and the field) when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} cannot be read: {exc}") from None
    try:
        data = loads(text)
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} is not a notebook: not JSON ({exc})") from None
    try:
        return Notebook.parse(data, path.name, repr(str(path)))
    except WrongShape as exc:
        raise ValueError(exc.message) from None


def traceback_tail(lines: Any) -> list[str]:
    """The last lines of a kernel's traceback (a list of ANSI-coloured strings), plain and masked."""
    text = "\n".join(str(line) for line in lines) if isinstance(lines, list) else str(lines or "")
    plain = [logs.mask(ANSI.sub("", line)).rstrip() for line in text.splitlines()]
    return [line for line in plain if line.strip()][-TRACEBACK_LINES:]


class NotebookRun(Check):
    name = "notebook"
    order = 20
    enabled_by = "notebook"

    def run(self) -> dict[str, Any]:
        notebook: Notebook = self.config.notebook
        self.report: dict[str, Any] = {
            "name": notebook.name, "cells": len(notebook.cells), "cells_run": 0, "cell_ms": [],
        }
        kernel = KernelSession(
            self.server.client,
            self.server.user,
            self.server.url,
            kernel_name=self.config.kernel_name or notebook.kernel_name,
            timeout=self.config.notebook_timeout,
            deadline=self.server.deadline,
        )
        try:
            kernel_id = str(kernel.start()["id"])
        except KernelFailed as exc:
            raise self._failed(f"{notebook.name}: {exc.message}", "kernel") from None
        try:
            for number, source in enumerate(notebook.cells, 1):
                self._run_cell(kernel, kernel_id, number, source)
        finally:
            with self.server.shield():
                kernel.delete(kernel_id)
        log.info("notebook_passed", notebook=notebook.name, cells=len(notebook.cells), cell_ms=self.report["cell_ms"])
        return self.report

    def _run_cell(self, kernel: KernelSession, kernel_id: str, number: int, source: str) -> None:
        name = self.report["name"]
        clock = kernel.deadline.clock
        started = clock()
        try:
            outcome = kernel.run_code(kernel_id, source)
        except KernelFailed as exc:
            self.report["cell_ms"].append(elapsed_ms(started, clock))
            if kernel.deadline.expired():
                self._interrupt(kernel, kernel_id)
                raise self._failed(
                    f"cell {number} of {name} did not finish within {kernel.deadline.seconds:g}s "
                    "(--notebook-timeout, or the run's --deadline); it was interrupted",
                    "timeout",
                    cell=number,
                ) from None
            raise self._failed(f"cell {number} of {name}: {exc.message}", "kernel", cell=number) from None
        self.report["cell_ms"].append(outcome["execute_ms"])
        self.report["cells_run"] = number
        log.info("notebook_cell_done", notebook=name, cell=number, duration_ms=outcome["execute_ms"], error=outcome["error"])
        if outcome["error"]:
            content = outcome["error_content"]
            ename, evalue = str(content.get("ename", "error")), logs.mask(str(content.get("evalue", "")))
            raise self._failed(
                f"cell {number} of {name} raised {ename}: {evalue}",
                "raised",
                cell=number, ename=ename, evalue=evalue, traceback=traceback_tail(content.get("traceback")),
            )

    def _failed(self, message: str, cause: str, **details: Any) -> NotebookFailed:
        return NotebookFailed(logs.mask(message), cause=cause, details={**self.report, **details})

    def _interrupt(self, kernel: KernelSession, kernel_id: str) -> None:
        """Interrupt the cell still running (the DELETE follows): a kernel's shutdown can wait for it otherwise."""
        url = kernel.server_url + f"api/kernels/{quote(kernel_id, safe='')}/interrupt"
        try:
            # Interrupting twice does no harm: safe to resend. Out of the share kept for the DELETE.
            response = self.server.client.request("POST", url, kernel.whole.within(kernel.whole.remaining() / 2), idempotent=True)
        except HubUnavailable as exc:
            log.warning("kernel_interrupt_failed", kernel_id=kernel_id, message=str(exc))
            return
        log.info("kernel_interrupted", kernel_id=kernel_id, status=response.status_code)
