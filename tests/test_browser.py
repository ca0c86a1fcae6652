"""The dashboard and the report as a person sees them: headless Chromium against `regtune serve`.

Debian's Chromium (installed by ``make test``) driven by Playwright; screenshots are kept in
``test-artifacts/browser/`` (or ``$REGTUNE_TEST_ARTIFACTS``) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import Server, regtune, serving, tiny_study, wait_status

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("REGTUNE_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)
# As the machine's probe starts it: no sandbox as root, and no calls home on a closed network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not shutil.which(CHROMIUM):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is required in CI (make test installs Debian's chromium)")
    pytest.skip(f"no {CHROMIUM}: run `make test`, which installs it", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow


@dataclass
class Site:
    server: Server
    alice: str
    study: dict  # alice's, completed
    optuna_id: int  # its id in the dashboard
    other_optuna_id: int  # bob's study, in the dashboard's numbering
    other_id: str  # bob's study id (the dashboard names it regtune-<id>)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 'browser.db'}"
    with serving(url, tmp / "serve.log", workers=1) as server:
        alice = regtune("token", "create", "alice", database_url=url).stdout.strip()
        bob = regtune("token", "create", "bob", database_url=url).stdout.strip()
        with server.client(alice) as a, server.client(bob) as b:
            study = a.post("/v1/studies", json=tiny_study(name="alice-study")).json()
            theirs = b.post("/v1/studies", json=tiny_study(name="bob-study", n_trials=1)).json()
            study = wait_status(a, study["id"], ("completed",))
            wait_status(b, theirs["id"], ("completed",))
            (mine,) = [s["study_id"] for s in a.get("/api/studies").json()["study_summaries"]]
            (other,) = [s["study_id"] for s in b.get("/api/studies").json()["study_summaries"]]
        yield Site(server, alice, study, mine, other, theirs["id"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A fresh browser profile logged in the browser-friendly way: once, with ?token=."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{site.server.url}/dashboard?token={site.alice}")
    yield page
    context.close()


def screenshot(page: Page, name: str) -> None:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"{name}.png", full_page=True)


def test_without_a_token_the_dashboard_shows_only_the_login_page(
    browser: Browser, site: Site
) -> None:
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"{site.server.url}/dashboard")
    assert response is not None and response.status == 401
    assert "token" in page.inner_text("body")
    screenshot(page, "login-refused")
    context.close()


def test_the_dashboard_lists_only_the_callers_studies(page: Page, site: Site) -> None:
    assert "?token=" not in page.url  # the login redirect drops the token from the address
    expect(page.get_by_text(f"alice-study-{site.study['id']}")).to_be_visible(timeout=20_000)
    assert site.other_id not in page.content()
    screenshot(page, "study-list")


def test_a_study_shows_its_trials_intermediate_values(page: Page, site: Site) -> None:
    page.goto(f"{site.server.url}/dashboard/studies/{site.optuna_id}")
    expect(page.get_by_text("Intermediate values")).to_be_visible(timeout=20_000)
    for number in range(site.study["trials"]["complete"]):
        expect(page.get_by_text(f"trial #{number}").first).to_be_visible()
    expect(page.get_by_text("Best Trial")).to_be_visible()
    # The objective under its metric's name, not "Objective 0".
    expect(page.get_by_text("accuracy").first).to_be_visible()
    assert "Objective 0" not in page.content()
    screenshot(page, "study")


def test_the_dashboard_refuses_writes_and_hides_other_tenants(page: Page, site: Site) -> None:
    api = f"{site.server.url}/api/studies"
    # The browser's own session (its cookie), as the dashboard's buttons would send them.
    assert page.request.delete(f"{api}/{site.optuna_id}").status == 403
    rename = page.request.post(f"{api}/{site.optuna_id}/rename", data={"study_name": "x"})
    assert rename.status == 403
    note = page.request.put(f"{api}/{site.optuna_id}/note", data={"version": 0, "body": "x"})
    assert note.status == 403
    assert page.request.get(f"{api}/{site.other_optuna_id}").status == 404
    page.goto(f"{site.server.url}/dashboard/studies/{site.other_optuna_id}")
    page.wait_for_timeout(2_000)
    assert site.other_id not in page.content()
    screenshot(page, "other-tenant-study")
    # Nothing changed: the study is still there, under its name.
    page.goto(f"{site.server.url}/dashboard")
    expect(page.get_by_text(f"alice-study-{site.study['id']}")).to_be_visible(timeout=20_000)


def test_the_report_opens_in_the_browser_and_fetches_nothing_else(page: Page, site: Site) -> None:
    # A tab of its own in the logged-in profile: the dashboard's tab still loads its data.
    page = page.context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    report = f"{site.server.url}/v1/studies/{site.study['id']}/report"
    response = page.goto(report)  # authenticated by the dashboard's cookie
    assert response is not None and response.status == 200
    for heading in (
        "Best configuration",
        "Cross-validation and test score",
        "Learning curves of the best trial",
        "Diagnosis: over- or under-fitting?",
        "Score against each hyperparameter",
        "How the budget was spent",
    ):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    assert page.locator("svg").count() >= 2  # the plots are drawn, inline
    assert requested == [report], requested  # no script, font or image from anywhere
    screenshot(page, "report")
    theirs = page.goto(f"{site.server.url}/v1/studies/{site.other_id}/report")
    assert theirs is not None and theirs.status == 404
