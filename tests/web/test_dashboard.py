"""The web dashboard in a real browser against a real hub, with a real federation behind it.

One walk through the product as its users would take it: Alice registers, logs in, makes
mistakes in the task form and sees each explained, creates a task, finds it by search and
by filter, starts the aggregator on the hub from the task page and watches the rounds of
two participant processes (``fedpact participate``) arrive without reloading, opens the
model page with its confusion matrix and downloads the model. Bob, a participant, tries to
delete Alice's task and is refused. Screenshots of every page, at laptop and phone width,
go to ``test-artifacts/web/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedpact.client.hub import HubClient
from fedpact.data.builtin import digits_federation
from fedpact.data.loaders import save_csv
from fedpact.hub import EmbeddedHub
from hub_fixtures import fast_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "correct-horse-9"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: What Chromium logs for a refused fetch; the refusals below are the point of the test.
EXPECTED_REFUSALS = [f"status of {s} " for s in (401, 403, 409, 422)]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    with EmbeddedHub(config=fast_config(tmp_path / "hub")) as h:
        yield h


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


#: A task definition the hub accepts, for tests about the pages rather than the training.
SMALL_TASK = {"model": {"name": "softmax_regression"}, "data": {"features": 4, "classes": [0, 1]}}


def registered(hub: EmbeddedHub, *names: str) -> dict[str, HubClient]:
    """A logged-in client for each new user."""
    clients = {}
    for n in names:
        c = HubClient(hub.url, retry_for_s=10)
        c.register(n, PASSWORD, f"{n} org")
        c.login(n, PASSWORD)
        clients[n] = c
    return clients


def login(browser: Any, page_errors: Any, url: str, name: str) -> tuple[Any, Any]:
    ctx = browser.new_context(viewport=LAPTOP)
    page = page_errors.watch(ctx.new_page())
    page.set_default_timeout(15_000)
    page.goto(url + "/#/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    return ctx, page


def test_join_requests_pending_approved_and_declined(hub: EmbeddedHub, browser: Any, artifacts: Path,
                                                     page_errors: Any) -> None:
    """Bob asks to join from the task page and sees his request pending; Alice approves Dave and declines Bob."""
    from playwright.sync_api import expect

    page_errors.allowed = EXPECTED_REFUSALS
    clients = registered(hub, "alice", "bob", "dave")
    clients["alice"].create_task("gated", SMALL_TASK, "approval needed")
    assert clients["dave"].join("gated")["status"] == "PENDING"
    bob_ctx, bob = login(browser, page_errors, hub.url, "bob")
    alice_ctx, alice = login(browser, page_errors, hub.url, "alice")
    try:
        bob.goto(hub.url + "/#/task/gated")
        expect(bob.get_by_role("heading", name="gated")).to_be_visible()
        expect(bob.locator("#participants")).to_contain_text("visible to the creator")
        bob.get_by_role("button", name="Join this task").click()
        expect(bob.locator("#join-state")).to_contain_text("pending")
        expect(bob.locator("#btn-join")).to_have_count(0)
        shot(bob, artifacts, "20-request-pending")

        alice.goto(hub.url + "/#/task/gated")
        expect(alice.locator("#join-requests li")).to_have_count(2)
        shot(alice, artifacts, "21-join-requests")
        alice.locator("#btn-approve-dave").click()
        expect(alice.locator("#participants li")).to_have_text(["dave Remove"])
        alice.locator("#btn-decline-bob").click()
        expect(alice.locator("#requests")).to_be_hidden()
        expect(bob.locator("#join-state")).to_contain_text("declined", timeout=30_000)  # bob's page follows
        standing = {m["user"]: m["status"] for m in clients["alice"].members("gated")}
        assert standing == {"dave": "ADMITTED", "bob": "DECLINED"}
    finally:
        bob_ctx.close()
        alice_ctx.close()
        for c in clients.values():
            c.close()


def test_a_task_list_overtaken_by_a_newer_filter_is_not_shown(hub: EmbeddedHub, browser: Any,
                                                                page_errors: Any) -> None:
    """The list first asked for answers after the list a filter asked for next: the page keeps
    the newer one. (On a loaded machine the first answer can come last; the page once showed it.)"""
    from playwright.sync_api import expect

    clients = registered(hub, "alice", "bob")
    clients["alice"].create_task("joined-one", SMALL_TASK, "bob joins this one")
    clients["alice"].create_task("other-one", SMALL_TASK, "bob does not")
    if clients["bob"].join("joined-one")["status"] == "PENDING":
        clients["alice"].approve("joined-one", "bob")
    ctx, page = login(browser, page_errors, hub.url, "bob")
    try:
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
        held: list[Any] = []

        def hold_the_unfiltered_list(route: Any) -> None:
            if "joined=true" not in route.request.url and not held:
                held.append(route)  # answered below, after the filtered list
            else:
                route.continue_()

        page.route(re.compile(r".*/api/v1/tasks\?.*"), hold_the_unfiltered_list)
        page.goto(hub.url + "/#/tasks?reload=1")
        expect(page.get_by_label("Joined by me")).to_be_visible()
        for _ in range(100):  # Playwright runs the route handler while the test waits on the page
            if held:
                break
            page.wait_for_timeout(100)
        assert len(held) == 1, "the page asked for the unfiltered list"
        rows = page.locator("table.tasks tbody tr")
        page.get_by_label("Joined by me").check()
        expect(rows).to_have_count(1)
        with page.expect_response(lambda r: r.url == held[0].request.url):
            held[0].continue_()
        page.evaluate("() => new Promise((done) => setTimeout(done, 200))")  # the late answer is handled by now
        assert rows.count() == 1 and rows.first.get_attribute("data-task") == "joined-one"
        assert page_errors.unexpected() == [], page_errors.unexpected()
    finally:
        ctx.close()


def test_analytics_report_shows_a_table_per_column(hub: EmbeddedHub, browser: Any, artifacts: Path,
                                                   page_errors: Any) -> None:
    """An analytics task run through the runtime: its task page shows the stored report, one table per column."""
    import threading

    import numpy as np
    from playwright.sync_api import expect

    from fedpact.data import Dataset
    from fedpact.runtime import Progress, run_aggregator, run_participant
    from fedpact.runtime.kind_participant import TaskParticipant

    clients = registered(hub, "alice", "site-a", "site-b")
    columns = ["height", "weight"]
    definition = {"quorum": 2, "round_timeout_s": 30, "admission": "open",
                  "data": {"task": "analytics", "features": columns}, "analytics": {"bins": 4}}
    # under secure aggregation: every column's edges declared, min and max bound the outer bins
    secure = {**definition, "min_participants": 2, "privacy": {"mode": "secure"},
              "analytics": {"edges": {"height": [0, 170, 400], "weight": [0, 100, 250, 400]}}}
    clients["alice"].create_task("site-stats", definition, "column summaries")
    clients["alice"].create_task("secure-stats", secure, "column sums under secure aggregation")
    rng = np.random.default_rng(0)
    errors: list[BaseException] = []

    def participate(name: str, task: str) -> None:
        try:
            data = Dataset.unlabelled(rng.normal(170, 10, size=(40, 2)), columns)
            run_participant(clients[name], task, TaskParticipant(data), progress=Progress(quiet=True),
                            poll_wait=0.5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for task in ("site-stats", "secure-stats"):
        threads = [threading.Thread(target=participate, args=(n, task)) for n in ("site-a", "site-b")]
        for t in threads:
            t.start()
        run_aggregator(clients["alice"], task, progress=Progress(quiet=True), poll_wait=0.5)
        for t in threads:
            t.join(60)
    assert not errors, errors
    ctx, page = login(browser, page_errors, hub.url, "alice")
    try:
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
        page.goto(hub.url + "/#/task/site-stats")
        expect(page.locator("#analytics-report h3")).to_have_text(columns, timeout=30_000)
        expect(page.locator("#analytics-0 table.analytics")).to_contain_text("count80")
        expect(page.locator("#analytics-0 table.analytics")).not_to_contain_text("bin bound")
        expect(page.locator("#analytics-1 table.analytics-histogram tbody tr")).to_have_count(6)
        shot(page, artifacts, "22-analytics-report")
        page.goto(hub.url + "/#/task/secure-stats")
        expect(page.locator("#analytics-report h3")).to_have_text(columns, timeout=30_000)
        table = page.locator("#analytics-1 table.analytics")
        expect(table).to_contain_text("count80")
        expect(table).to_contain_text("min (bin bound)100")  # weights near 170: all in the bin [100, 250)
        expect(table).to_contain_text("max (bin bound)250")
        expect(page.locator("#analytics-0 table.analytics-histogram tbody tr")).to_have_count(4)
    finally:
        ctx.close()
        for c in clients.values():
            c.close()


def test_dashboard_end_to_end(hub: EmbeddedHub, browser: Any, artifacts: Path, page_errors: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page_errors.allowed = EXPECTED_REFUSALS
    procs: list[subprocess.Popen[bytes]] = []
    ctx = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    page = page_errors.watch(ctx.new_page())
    page.set_default_timeout(15_000)
    try:
        # -- registration: a typo in the confirmation, then success ---------------------------
        page.goto(hub.url + "/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        shot(page, artifacts, "01-login")
        page.get_by_role("link", name="Register").first.click()
        # The login form has a "User name" field too: type only once the register form is there.
        expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Organisation").fill("Acme Robotics")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD + "x")
        page.get_by_role("button", name="Register").click()
        expect(page.locator("#reg-confirm-error")).to_contain_text("passwords differ")
        shot(page, artifacts, "02-register-mismatch")
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_label("Repeat the password").press("Enter")  # keyboard submits the form
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

        # A taken name and a wrong password are each explained.
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.get_by_role("link", name="Register").first.click()
        # The login form has a "User name" field too: type only once the register form is there.
        expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Organisation").fill("Elsewhere")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_role("button", name="Register").click()
        expect(page.locator("#reg-name-error")).to_contain_text("taken")
        page.goto(hub.url + "/#/login")
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
        shot(page, artifacts, "03-login-wrong-password")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

        # -- the task form: mistakes explained field by field, then a valid task --------------
        page.get_by_role("link", name="New task").first.click()
        expect(page.get_by_role("heading", name="New task")).to_be_visible()
        page.get_by_label("Name", exact=True).fill("x")
        page.get_by_label("Model", exact=True).select_option("softmax_regression")
        page.get_by_label("Quorum").fill("2")
        page.get_by_label("Minimum participants per round").fill("3")
        page.get_by_label("Learning rate").fill("0")
        page.get_by_role("button", name="Create task").click()
        expect(page.locator("#t-name-error")).to_contain_text("3-100 characters")
        expect(page.locator("#t-lr-error")).to_contain_text("greater than 0")
        shot(page, artifacts, "04-new-task-errors")
        page.get_by_label("Learning rate").fill("0.1")
        page.get_by_label("Name", exact=True).fill("digits-web")
        page.get_by_role("button", name="Create task").click()
        expect(page.locator("#t-min-error")).to_contain_text("cannot exceed quorum")
        expect(page.locator("#t-name-error")).to_be_hidden()
        # the strategies and their parameters come from the hub's GET /api/v1/algorithms
        page.get_by_label("Algorithm").select_option("fedadam")
        expect(page.get_by_label("FedAdam server_learning_rate")).to_have_value("0.1")
        expect(page.get_by_label("FedProx mu")).to_be_hidden()
        expect(page.locator("#t-algorithm-summary")).to_contain_text("Privacy modes: open, secure, dp, secure+dp")
        page.get_by_label("FedAdam beta1").fill("1.5")
        page.get_by_role("button", name="Create task").click()
        expect(page.locator("#t-algorithm-error")).to_contain_text("'beta1' must be in [0, 1), got 1.5")
        page.get_by_label("Algorithm").select_option("fedavg")
        page.get_by_label("Description").fill("Handwritten digits, 8x8 pixels: a CSV with pixel_0..pixel_63 and label.")
        page.get_by_label("Minimum participants per round").fill("2")
        page.get_by_label("Rounds", exact=True).fill("4")
        page.get_by_label("Batch size").fill("16")
        page.get_by_label("Learning rate").fill("0.1")
        page.get_by_label("Local epochs").fill("2")
        page.get_by_label("Round timeout (seconds)").fill("60")
        page.get_by_label("Standardise features across participants").check()
        page.get_by_role("button", name="Create task").click()
        expect(page.get_by_role("heading", name="digits-web")).to_be_visible()
        assert "/#/task/digits-web" in page.url

        # -- list: search and filters ---------------------------------------------------------
        alice = HubClient(hub.url, retry_for_s=10)
        alice.login("alice", PASSWORD)
        alice.create_task("heart-prox", {
            "model": {"name": "mlp", "params": {"hidden": [8]}}, "algorithm": {"name": "fedprox", "params": {"mu": 0.1}},
            "data": {"features": 13, "classes": [0, 1]},
        }, "Heart disease across hospitals")  # fmt: skip
        page.get_by_role("link", name="Tasks", exact=True).click()
        rows = page.locator("table.tasks tbody tr")
        expect(rows).to_have_count(2)
        page.get_by_label("Search").fill("digits")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-task", "digits-web")
        page.get_by_label("Search").fill("")
        page.get_by_label("Algorithm").select_option("fedprox")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-task", "heart-prox")
        page.get_by_label("Algorithm").select_option("")
        page.get_by_label("Status").select_option("COMPLETE")
        expect(page.locator(".empty")).to_be_visible()
        page.get_by_label("Status").select_option("")
        page.get_by_label("Created by me").check()
        expect(rows).to_have_count(2)
        shot(page, artifacts, "05-task-list")

        # -- a federation: two participant processes, the aggregator hosted by the hub --------
        shards, test = digits_federation(2, test_fraction=0.25, seed=3)
        files = {n: save_csv(tmp_path / f"{n}.csv", s) for n, s in zip(("bob", "carol"), shards)}
        test_csv = save_csv(tmp_path / "test.csv", test)
        tokens = {}
        for n in ("bob", "carol"):
            c = HubClient(hub.url, retry_for_s=10)
            c.register(n, PASSWORD, f"{n} clinic")
            tokens[n] = c.login(n, PASSWORD)
            c.close()
        for n in ("bob", "carol"):
            env = {**os.environ, "FEDPACT_HUB": hub.url, "FEDPACT_TOKEN": tokens[n], "OMP_NUM_THREADS": "1",
                   "FEDPACT_HOME": str(tmp_path / "home" / n), "PYTHONUNBUFFERED": "1"}
            log = open(tmp_path / f"{n}.log", "wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fedpact", "participate", "digits-web", "--data", str(files[n]),
                 "--model-dir", str(tmp_path / "models" / n), "--threads", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

        page.locator("table.tasks a", has_text="digits-web").click()
        expect(page.get_by_role("heading", name="digits-web")).to_be_visible()
        # The task asks for approval: both participants' requests appear, and alice admits them.
        expect(page.locator("#join-requests li")).to_have_count(2, timeout=30_000)  # no reload needed
        shot(page, artifacts, "06a-join-requests")
        page.locator("#btn-approve-bob").click()
        page.locator("#btn-approve-carol").click()
        expect(page.locator("#participants li")).to_have_count(2, timeout=30_000)
        expect(page.locator("#requests")).to_be_hidden()
        expect(page.locator("#cmd-participate")).to_have_text("fedpact participate digits-web --data your-data.csv")
        expect(page.locator("#participate-reads")).to_contain_text('label column "label"; header row; missing values refused')
        page.evaluate("window.__sameDocument = true")
        page.locator("#eval-file").set_input_files(str(test_csv))
        page.get_by_role("button", name="Run the aggregator on the hub").click()
        # The hosted notice shows only while the hub runs the aggregator; these four rounds can end
        # between two of the page's polls, so only its absence on the COMPLETE task is checked below.
        expect(page.locator("#hosted-log")).to_contain_text("starting: aggregator of task 'digits-web'", timeout=15_000)
        expect(page.locator("tr[data-round='1']")).to_be_visible(timeout=60_000)
        shot(page, artifacts, "06-task-running")
        expect(page.locator("#task-status")).to_contain_text("COMPLETE", timeout=90_000)
        expect(page.locator("tr[data-round]")).to_have_count(4)
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        expect(page.locator("#hosted-state")).to_contain_text("finished")
        expect(page.locator("#hosted-log")).to_contain_text("round 4/4 done")
        # The chart drew the metrics it was given.
        datasets = page.evaluate("Chart.getChart('metrics-chart').data.datasets.map(d => [d.label, d.data.length])")
        labels = dict(datasets)
        assert labels.get("training loss") == 4 and labels.get("evaluation accuracy") == 4, datasets
        # The accuracy axis is fitted to the curves (not 0-1, which squeezed them into the top).
        axis = page.evaluate("""(() => { const c = Chart.getChart('metrics-chart');
            const acc = c.data.datasets.filter(d => d.yAxisID === 'y1').flatMap(d => d.data).filter(v => v !== null);
            return {min: c.scales.y1.min, max: c.scales.y1.max, lo: Math.min(...acc), hi: Math.max(...acc)}; })()""")
        assert 0 < axis["min"] <= axis["lo"] and axis["hi"] <= axis["max"] <= 1, axis
        assert axis["max"] - axis["min"] <= (axis["hi"] - axis["lo"]) + 0.1, axis
        # A COMPLETE task offers no join or participate commands, no hosted notice, no missing button.
        expect(page.locator("#hosted-notice")).to_be_hidden()
        expect(page.locator("#cmd-join")).to_have_count(0)
        expect(page.locator("#cmd-participate")).to_have_count(0)
        expect(page.locator("#btn-join")).to_have_count(0)
        expect(page.locator("#task-closed")).to_contain_text("This task is COMPLETE")
        expect(page.locator("#cmd-download")).to_contain_text("fedpact model download digits-web")
        expect(page.locator("body")).not_to_contain_text("button above")
        shot(page, artifacts, "07-task-complete")
        page.set_viewport_size(PHONE)
        shot(page, artifacts, "08-task-complete-phone")
        page.locator("#task-commands").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "08b-task-commands-phone.png"))
        page.locator("#metrics-chart").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "08c-task-chart-phone.png"))
        page.set_viewport_size(LAPTOP)

        # -- the model page: metadata, confusion matrix, download ------------------------------
        page.locator("#task-models a").first.click()
        expect(page.get_by_role("heading", name=re.compile(r"Model \d+ of digits-web"))).to_be_visible()
        expect(page.locator("#contributors li")).to_have_count(2)
        # The model card, not raw JSON: description, schema, one row per round with its model hash.
        expect(page.locator("#card-description")).to_contain_text("Handwritten digits")
        expect(page.locator("#card-rounds tbody tr")).to_have_count(4)
        expect(page.locator("#card-rounds tbody tr").first.locator("code.hash")).to_be_visible()
        expect(page.locator("#model-schema")).to_contain_text("label")
        expect(page.locator("#model-summary")).to_contain_text("Licence")
        assert "{" not in page.locator("#model-summary").inner_text()
        cm = page.locator("#confusion-matrix")
        expect(cm.locator("tbody tr")).to_have_count(10)
        expect(cm.locator("caption")).to_contain_text("evaluation samples correct")
        shot(page, artifacts, "09-model")
        with page.expect_download() as dl_info:
            page.get_by_role("button", name="Download model (safetensors)").click()
        saved = tmp_path / "downloaded.safetensors"
        dl_info.value.save_as(saved)
        model = alice.list_models("digits-web")[0]
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == model["sha256"]
        page.set_viewport_size(PHONE)
        shot(page, artifacts, "10-model-phone")
        page.goto(hub.url + "/#/tasks")
        expect(page.locator("table.tasks tbody tr")).to_have_count(2)
        shot(page, artifacts, "11-task-list-phone")
        page.goto(hub.url + "/#/new")
        expect(page.get_by_role("heading", name="New task")).to_be_visible()
        shot(page, artifacts, "12-new-task-phone")

        # -- Bob may not delete Alice's task: the hub refuses, the page says so ----------------
        bob_ctx = browser.new_context(viewport=LAPTOP)
        bob = page_errors.watch(bob_ctx.new_page())
        bob.set_default_timeout(15_000)
        bob.goto(hub.url + "/#/login")
        bob.get_by_label("User name").fill("bob")
        bob.get_by_label("Password").fill(PASSWORD)
        bob.get_by_label("Password").press("Enter")
        expect(bob.get_by_role("heading", name="Tasks")).to_be_visible()
        bob.get_by_label("Joined by me").check()
        expect(bob.locator("table.tasks tbody tr")).to_have_count(1)
        bob.locator("table.tasks a", has_text="digits-web").click()
        expect(bob.get_by_role("heading", name="digits-web")).to_be_visible()
        expect(bob.locator("#btn-host")).to_have_count(0)  # only the creator may host its aggregator
        bob.once("dialog", lambda d: d.accept())
        bob.get_by_role("button", name="Delete task").click()
        expect(bob.locator("#task-error")).to_contain_text("only the creator of task 'digits-web' may delete it")
        shot(bob, artifacts, "13-refused-delete")
        assert alice.get_task("digits-web")["name"] == "digits-web"
        bob_ctx.close()

        for p in procs:
            p.wait(60)
            assert p.returncode == 0, (tmp_path / "bob.log").read_text()
        assert page_errors.unexpected() == [], page_errors.unexpected()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        ctx.close()
