"""Open a flow run's page in the Prefect dashboard with headless Chromium and check what it shows.

    python -m flows.dashboard_check RUN_ID [--ui http://127.0.0.1:4200] [--out reports/dashboard]

Loads the run page, reads its Task Runs and Artifacts tabs as a user would see them, saves one
screenshot per tab (PNG) and exits non-zero naming whatever expected task run or artifact key
the page does not show. Chromium is Debian's (`make browser` installs it); Playwright drives it
through `executable_path`, so no browser is ever downloaded. The server must have been started
with PREFECT_UI_API_URL pointing at its own API (`make dashboard` does), or the page cannot
reach it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# the closed network refuses Chromium's background connections; these keep it quiet and fast
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TASKS = ["dvc generate", "dvc validate", "dvc train@*", "dvc report", "promote"]
# artifacts the flow publishes itself, shown on the run's Artifacts tab
ARTIFACTS = [
    "validation-summary",
    "metrics-comparison",
    "model-comparison-figures",
    "data-docs",
    "recommendations",
    "promotion",
    "drift",
]
# artifacts a task publishes, shown on that task run's own page
TASK_ARTIFACTS = {"dvc train@*": ["training-progress"]}


@dataclass
class PageCheck:
    state: str = ""
    tabs: dict[str, str] = field(default_factory=dict)  # tab -> text shown
    screenshots: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def chromium_path() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        raise FileNotFoundError(
            "no Chromium found (looked for `chromium` on PATH and /usr/bin/chromium): "
            "`make browser` installs Debian's package"
        )
    return found


def check_flow_run(
    ui: str,
    run_id: str,
    out: Path,
    tasks: list[str] = TASKS,
    artifacts: list[str] = ARTIFACTS,
    task_artifacts: dict[str, list[str]] = TASK_ARTIFACTS,
    timeout_s: float = 60,
) -> PageCheck:
    """Visit the run page as a user would: its Task Runs tab must list `tasks`, its Artifacts tab
    `artifacts`, and the page of each task run in `task_artifacts` (reached by clicking it)
    must show that task's artifacts. One full-page screenshot per view."""
    from playwright.sync_api import Page, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    result = PageCheck()
    run_page = f"{ui.rstrip('/')}/runs/flow-run/{run_id}"

    def look(page: Page, view: str, tab: str, names: list[str]) -> None:
        page.get_by_text(tab, exact=True).first.click()
        for name in names:  # a tab's list loads after the click: wait for each name
            try:
                page.get_by_text(name, exact=True).first.wait_for(timeout=timeout_s * 500)
            except Exception:  # noqa: BLE001 - playwright's TimeoutError: reported below
                result.missing.append(f"{view} / {tab}: {name}")
        result.tabs[f"{view} / {tab}"] = page.inner_text("body")
        slug = re.sub(r"[^a-z0-9]+", "-", f"{view}-{tab}".lower()).strip("-")
        png = out / f"{slug}.png"
        page.screenshot(path=str(png), full_page=True)
        result.screenshots.append(str(png))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(run_page, wait_until="networkidle")
            page.get_by_text("Task Runs", exact=True).first.wait_for()
            for state in ("Completed", "Failed", "Crashed", "Cancelled", "Running"):
                if page.get_by_text(state, exact=True).count():
                    result.state = state
                    break
            look(page, "flow run", "Task Runs", tasks)
            look(page, "flow run", "Artifacts", artifacts)
            for task_name, names in task_artifacts.items():
                page.goto(run_page, wait_until="networkidle")
                page.get_by_text("Task Runs", exact=True).first.click()
                page.get_by_text(task_name, exact=True).first.click()
                page.wait_for_url("**/runs/task-run/**")
                page.get_by_text("Task inputs", exact=True).first.wait_for()  # its tabs are up
                look(page, f"task run {task_name}", "Artifacts", names)
        finally:
            browser.close()
    return result


def artifact_images(ui: str, artifact_id: str, png: Path, timeout_s: float = 60) -> list[int]:
    """The natural widths of the images an artifact's page shows (0: one that did not load),
    and a full-page screenshot of it at `png`."""
    from playwright.sync_api import sync_playwright

    png.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(
                f"{ui.rstrip('/')}/artifacts/artifact/{artifact_id}", wait_until="networkidle"
            )
            page.locator("img").first.wait_for()
            page.wait_for_function("[...document.images].every(i => i.complete)")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return [int(w) for w in widths]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_id")
    ap.add_argument("--ui", default="http://127.0.0.1:4200", help="the dashboard's address")
    ap.add_argument("--out", default="reports/dashboard", help="folder for the screenshots")
    args = ap.parse_args(argv)
    result = check_flow_run(args.ui, args.run_id, Path(args.out))
    print(json.dumps({"state": result.state, "screenshots": result.screenshots}))
    if result.missing:
        sys.exit("the dashboard does not show: " + ", ".join(result.missing))


if __name__ == "__main__":
    main()
